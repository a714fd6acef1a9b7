"""Orca's PyTorch callbacks (``bigdl.orca.learn.pytorch.callbacks``, 2.3+): hooks
that every worker calls with its ``runner`` (``learn.pytorch.runner.Runner``).

    class LogLR(Callback):
        def after_train_epoch(self, runner):
            print(runner.epochs, runner.optimizer.param_groups[0]["lr"])

    est.fit(df, epochs=3, ..., callbacks=[LogLR(), ModelCheckpoint("/ckpt")])

The training step itself is ``MainCallback``'s (forward, backward, the
optimizer's step, the scheduler's step per epoch): pass one subclass of it to
change the step; the default is used otherwise. Setting ``runner.stop`` ends the
worker's epoch there, and fit ends after that epoch on every worker (they agree).
"""

from __future__ import annotations

from typing import List

from ...errors import InvalidArgumentError


class Callback:
    """Every hook takes the worker's runner and does nothing by default; the train,
    val and pred variants fall through to ``before/after_epoch`` and
    ``before/after_iter``."""

    def before_run(self, runner) -> None:
        pass

    def after_run(self, runner) -> None:
        pass

    def before_epoch(self, runner) -> None:
        pass

    def after_epoch(self, runner) -> None:
        pass

    def before_iter(self, runner) -> None:
        pass

    def after_iter(self, runner) -> None:
        pass

    def before_train_epoch(self, runner) -> None:
        self.before_epoch(runner)

    def after_train_epoch(self, runner) -> None:
        self.after_epoch(runner)

    def before_val_epoch(self, runner) -> None:
        self.before_epoch(runner)

    def after_val_epoch(self, runner) -> None:
        self.after_epoch(runner)

    def before_train_iter(self, runner) -> None:
        self.before_iter(runner)

    def after_train_iter(self, runner) -> None:
        self.after_iter(runner)

    def before_val_iter(self, runner) -> None:
        self.before_iter(runner)

    def after_val_iter(self, runner) -> None:
        self.after_iter(runner)

    def every_n_iter(self, runner, n: int) -> bool:
        return (runner.global_step + 1) % n == 0 if n > 0 else False

    def every_n_epoch(self, runner, n: int) -> bool:
        return runner.epochs % n == 0 if n > 0 else False


class MainCallback(Callback):
    """The training and validation step. ``runner.batch`` is ``(*features, *targets)``;
    a step sets ``runner.output``, ``runner.target`` and ``runner.loss``."""

    def on_train_forward(self, runner) -> None:
        self.on_iter_forward(runner)

    def on_val_forward(self, runner) -> None:
        self.on_iter_forward(runner)

    def on_iter_forward(self, runner) -> None:
        features, targets = runner.split_batch()
        runner.output = runner.model(*features)
        runner.target = targets[0] if len(targets) == 1 else targets
        outputs = list(runner.output) if isinstance(runner.output, (list, tuple)) \
            else [runner.output]
        runner.loss = runner.criterion(*outputs, *targets) \
            if runner.criterion is not None else None

    def on_iter_backward(self, runner) -> None:
        runner.optimizer.zero_grad()
        runner.loss.backward()
        runner.optimizer.step()

    def on_lr_adjust(self, runner) -> None:
        if runner.scheduler is not None:
            runner.scheduler.step()


class ModelCheckpoint(Callback):
    """Orca's: the state every ``interval`` epochs (``by_epoch=False``: steps),
    written by rank 0 to any fsspec path, and ``last.ckpt`` beside them at the end
    of fit; ``save_weights_only``: the models' weights alone.

    ``filepath`` as Orca's: ``"dir/mnist-{epoch}"`` writes ``dir/mnist-epoch=1.ckpt``,
    ... (``{iter}``: ``iter=N``); a path with no ``{...}`` (or ending in "/") is the
    directory of ``epoch=N.ckpt`` files."""

    def __init__(self, filepath: str = "", save_weights_only: bool = False,
                 by_epoch: bool = True, interval: int = -1) -> None:
        if not isinstance(filepath, str) or not filepath:
            raise InvalidArgumentError("filepath", filepath, "a path or URL, e.g. "
                                       "'ckpt/model-{epoch}' or a directory")
        head, _, name = filepath.rstrip("/").rpartition("/") if "{" in filepath \
            else (filepath.rstrip("/"), "/", "")
        self.dirpath = head or "."
        self.name = name  # "" or a pattern with {epoch} / {iter}
        self.save_weights_only = bool(save_weights_only)
        self.by_epoch = bool(by_epoch)
        # Orca's: interval -1 means every epoch; by steps it means never
        self.interval = int(interval) if interval and interval > 0 else \
            (1 if self.by_epoch else 0)

    def _path(self, key: str, n: int) -> str:
        label = f"{key}={n}"
        name = self.name.format(epoch=label, iter=label) if self.name else label
        return f"{self.dirpath}/{name}.ckpt"

    def after_train_epoch(self, runner) -> None:
        if self.by_epoch and self.every_n_epoch(runner, self.interval):
            runner.save_checkpoint(self._path("epoch", runner.epochs), self.save_weights_only)

    def after_train_iter(self, runner) -> None:
        if not self.by_epoch and self.every_n_iter(runner, self.interval):
            runner.save_checkpoint(self._path("iter", runner.global_step),
                                   self.save_weights_only)

    def after_run(self, runner) -> None:
        runner.save_checkpoint(f"{self.dirpath}/last.ckpt", self.save_weights_only)


def checked(callbacks) -> List[Callback]:
    """fit's callbacks, with exactly one MainCallback, first (the default one unless
    the program passed its own subclass)."""
    if not callbacks:
        return [MainCallback()]
    items = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
    for cb in items:
        if not isinstance(cb, Callback):
            raise InvalidArgumentError("callbacks", cb, "a list of sparkorca.learn.pytorch."
                                       "callbacks.Callback instances")
    mains = [cb for cb in items if isinstance(cb, MainCallback)]
    if len(mains) > 1:
        raise InvalidArgumentError("callbacks", mains, "at most one MainCallback")
    return (mains or [MainCallback()]) + [cb for cb in items if not isinstance(cb, MainCallback)]


def may_stop_early(callbacks) -> bool:
    """Whether one of ``callbacks`` may end a worker's epoch early (``runner.stop``):
    any but the default step and ModelCheckpoint (which never do)."""
    return any(type(cb) not in (MainCallback, ModelCheckpoint) for cb in callbacks)


__all__ = ["Callback", "MainCallback", "ModelCheckpoint"]
