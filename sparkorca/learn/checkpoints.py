"""Model files on any fsspec path: what save / load and the per-epoch checkpoints
under ``model_dir`` (``epoch=N.ckpt``, ``last.ckpt``) read and write."""

from __future__ import annotations

from ..errors import InvalidArgumentError


def write_bytes(path: str, blob: bytes) -> None:
    import fsspec
    with fsspec.open(path, "wb", auto_mkdir=True) as f:
        f.write(blob)


def read_bytes(path: str, name: str, what: str) -> bytes:
    """The file's bytes; a missing file is an error naming the argument ``name``."""
    import fsspec
    try:
        with fsspec.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InvalidArgumentError(name, path, what) from None


def epoch_checkpoints(model_dir: str, epoch: int, blob: bytes) -> None:
    """A finished epoch's state as ``epoch=N.ckpt`` and ``last.ckpt`` under model_dir."""
    for name in (f"epoch={epoch}.ckpt", "last.ckpt"):
        write_bytes(f"{model_dir.rstrip('/')}/{name}", blob)


def latest_checkpoint(checkpoint_dir: str) -> str:
    import fsspec
    path = f"{checkpoint_dir.rstrip('/')}/last.ckpt"
    fs, _, (found,) = fsspec.get_fs_token_paths(path)
    if not fs.exists(found):
        raise InvalidArgumentError("checkpoint_dir", checkpoint_dir,
                                   "a model_dir a fit() wrote checkpoints to")
    return path
