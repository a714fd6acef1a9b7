"""The ``runner`` Orca's PyTorch callbacks get: one per worker, with the names of
Orca's TorchRunner (models, optimizer, criterion, epochs, global_step, batch,
output, loss, epoch_stats, stop, save_checkpoint, ...)."""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple


class Runner:
    def __init__(self, *, model, ddp, optimizer, scheduler, criterion, config: dict,
                 callbacks: list, first_epoch: int, num_epochs: int, rank: int, size: int,
                 num_features: int, state_of: Callable[[bool], bytes]) -> None:
        self.models = [model]
        self.training_models = [ddp]
        self.optimizers = [optimizer]
        self.schedulers = [scheduler] if scheduler is not None else []
        self.criterion = criterion
        self.config = config
        self.callbacks = callbacks
        self.epochs = first_epoch - 1  # epochs completed
        self.num_epochs = num_epochs
        self.global_step = 0
        self.rank = rank
        self.size = size
        self.stop = False
        self.mode = "train"
        self.batch: Optional[tuple] = None
        self.batch_idx = 0
        self.output: Any = None
        self.target: Any = None
        self.loss: Any = None
        self.metrics_stats: Optional[dict] = None
        self.epoch_stats: Optional[dict] = None
        self._num_features = num_features
        self._state_of = state_of  # save_weights_only -> the state's bytes
        self._store: dict = {}

    @property
    def model(self):
        """The DDP-wrapped model while training, the plain one otherwise (Orca's)."""
        return self.training_models[0] if self.mode == "train" else self.models[0]

    @property
    def optimizer(self):
        return self.optimizers[0]

    @property
    def scheduler(self):
        return self.schedulers[0] if self.schedulers else None

    def split_batch(self) -> Tuple[List[Any], List[Any]]:
        assert self.batch is not None
        return list(self.batch[:self._num_features]), list(self.batch[self._num_features:])

    def call(self, hook: str) -> None:
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is not None:
                method(self)

    # -- files (rank 0 writes: the workers' weights are the same) -----------------
    def save_checkpoint(self, filepath: str, save_weights_only: bool = False) -> None:
        if self.rank == 0:
            from ..checkpoints import write_bytes
            write_bytes(filepath, self._state_of(save_weights_only))

    def remove_checkpoint(self, filepath: str) -> None:
        if self.rank == 0:
            import fsspec
            fs, _, (path,) = fsspec.get_fs_token_paths(filepath)
            if fs.exists(path):
                fs.rm(path)

    # -- a callback's own values, kept on the runner (Orca's put/get/...) ----------
    def put(self, key: str, value: Any) -> None:
        if key in self._store:
            raise KeyError(f"{key!r} is on the runner already: update() changes it")
        self._store[key] = value

    def get(self, key: str) -> Any:
        return self._store[key]

    def update(self, key: str, value: Any) -> None:
        if key not in self._store:
            raise KeyError(f"{key!r} is not on the runner: put() it first")
        self._store[key] = value

    def remove(self, key: str) -> None:
        del self._store[key]
