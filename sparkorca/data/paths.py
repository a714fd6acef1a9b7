"""Which files a read_* call means: a file, a directory, a glob or a list of them,
on any filesystem fsspec reaches (local, file://, hdfs://, s3://, ...)."""

from __future__ import annotations

import errno
from typing import List, Optional, Sequence, Union

from ..errors import InvalidArgumentError, MissingPathError

_GLOB = set("*?[")


def _is_data_file(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return not base.startswith(("_", "."))  # _SUCCESS, .crc, ._metadata ...


def missing_path(caller: str, path: str, what: str = "No such file or directory"):
    """The error for a path that is not there: a FileNotFoundError (errno ENOENT) whose
    text reads like the builtin's, naming the call."""
    err = MissingPathError(errno.ENOENT, f"{caller}: {what}", path)
    return err


def expand_paths(path: Union[str, Sequence[str]], caller: str,
                 storage_options: Optional[dict] = None) -> List[str]:
    """Every data file ``path`` names, as URLs fsspec can open, in a stable order.

    Directories are listed recursively without Spark's and Hadoop's marker files
    (``_SUCCESS``, ``.crc``, names starting with ``_`` or ``.``).
    """
    import fsspec
    paths = [path] if isinstance(path, str) else list(path) if isinstance(path, (list, tuple)) \
        else None
    if not paths or not all(isinstance(p, str) and p for p in paths):
        raise InvalidArgumentError("file_path", path,
                                   "a path, a directory, a glob, or a list of them")
    files: List[str] = []
    for p in paths:
        fs, root = fsspec.core.url_to_fs(p, **(storage_options or {}))
        if _GLOB & set(root):
            found = [f for f in sorted(fs.glob(root)) if fs.isfile(f)]
        elif fs.isdir(root):
            found = sorted(f for f in fs.find(root) if _is_data_file(f[len(root):]))
        elif fs.exists(root):
            found = [root]
        else:
            raise missing_path(caller, p)
        if not found:
            raise missing_path(caller, p, "No data files (the directory or glob matches none)")
        files += [fs.unstrip_protocol(f) for f in found]
    return files
