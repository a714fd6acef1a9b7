"""Which files a read_* call means: a file, a directory, a glob or a list of them,
on any filesystem fsspec reaches (local, file://, hdfs://, s3://, ...)."""

from __future__ import annotations

from typing import List, Sequence, Union

from ..errors import InvalidArgumentError, MissingPathError

_GLOB = set("*?[")


def _is_data_file(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return not base.startswith(("_", "."))  # _SUCCESS, .crc, ._metadata ...


def expand_paths(path: Union[str, Sequence[str]], caller: str) -> List[str]:
    """Every data file ``path`` names, as URLs fsspec can open, in a stable order."""
    import fsspec
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise InvalidArgumentError("path", path, "a path, a directory, a glob, or a list of them")
    files: List[str] = []
    for p in paths:
        fs, root = fsspec.core.url_to_fs(p)
        if _GLOB & set(root):
            found = [f for f in sorted(fs.glob(root)) if fs.isfile(f)]
        elif fs.isdir(root):
            found = sorted(f for f in fs.find(root) if _is_data_file(f[len(root):]))
        elif fs.exists(root):
            found = [root]
        else:
            raise MissingPathError(f"{caller}: no such file or directory: {p}")
        if not found:
            raise MissingPathError(f"{caller}: {p} holds no data files")
        files += [fs.unstrip_protocol(f) for f in found]
    return files
