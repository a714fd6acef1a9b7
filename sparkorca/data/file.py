"""Orca's ``bigdl.orca.data.file``: small driver-side file helpers on any filesystem
fsspec reaches (local paths, ``file://``, ``hdfs://``, ``s3://``, ``gs://`` ...).

One behaviour on every filesystem, where Orca's differed by scheme: copies are
recursive, ``over_write`` is honoured, ``listdir`` gives names, the copy helpers
return 0 on success (Orca's code) and raise on failure.
"""

from __future__ import annotations

import functools
import io
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import Any, Callable, List, Tuple

from ..errors import InvalidArgumentError
from .paths import missing_path


def _fs(path: str) -> Tuple[Any, str]:
    import fsspec
    if not isinstance(path, str) or not path:
        raise InvalidArgumentError("path", path, "a path or URL")
    return fsspec.core.url_to_fs(path)


def is_local_path(path: str) -> bool:
    """Whether ``path`` is on this machine's filesystem (no scheme, or ``file://``)."""
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def open_text(path: str) -> List[str]:
    """The lines of a text file, each stripped of surrounding whitespace.

    Examples
    --------
    >>> write_text("/tmp/q.txt", "Q1,Q1,1\\nQ2,Q2,2\\n")
    16
    >>> open_text("/tmp/q.txt")
    ['Q1,Q1,1', 'Q2,Q2,2']
    """
    fs, root = _fs(path)
    if not fs.exists(root):
        raise missing_path("open_text", path)
    with fs.open(root, "rt", encoding="utf-8") as f:
        return [line.strip() for line in f]


def write_text(path: str, text: str) -> int:
    """Write ``text`` to ``path`` (replacing it); the number of characters written."""
    if not isinstance(text, str):
        raise InvalidArgumentError("text", type(text).__name__, "a str")
    fs, root = _fs(path)
    with fs.open(root, "wt", encoding="utf-8") as f:
        return f.write(text)


def open_image(path: str):
    """A PIL image, loaded (the file is closed when this returns).

    Examples
    --------
    >>> open_image("s3://bucket/cat.jpg").size
    (640, 480)
    """
    from PIL import Image
    fs, root = _fs(path)
    if not fs.exists(root):
        raise missing_path("open_image", path)
    with fs.open(root, "rb") as f:
        image = Image.open(io.BytesIO(f.read()))
        image.load()
    return image


def load_numpy(path: str, **kwargs):
    """``numpy.load`` of a ``.npy``/``.npz`` file anywhere; ``kwargs`` go to ``np.load``
    (``allow_pickle=True`` for pickled arrays). An ``.npz`` is read into memory, so it
    stays readable after this returns.

    Examples
    --------
    >>> load_numpy("hdfs:///data/random.npy").shape
    (2, 5)
    """
    import numpy as np
    fs, root = _fs(path)
    if not fs.exists(root):
        raise missing_path("load_numpy", path)
    with fs.open(root, "rb") as f:
        return np.load(io.BytesIO(f.read()), **kwargs)


def exists(path: str) -> bool:
    """Whether a file or directory exists at ``path``."""
    fs, root = _fs(path)
    return bool(fs.exists(root))


def is_file(path: str) -> bool:
    """Whether ``path`` is a file."""
    fs, root = _fs(path)
    return bool(fs.isfile(root))


def listdir(path: str) -> List[str]:
    """The names (not paths) of the entries of a directory, sorted."""
    fs, root = _fs(path)
    if not fs.isdir(root):
        raise missing_path("listdir", path, "No such directory")
    return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False))


def makedirs(path: str) -> None:
    """Create a directory and its parents (nothing if it exists)."""
    fs, root = _fs(path)
    fs.makedirs(root, exist_ok=True)


def rmdir(path: str) -> None:
    """Remove a directory and everything in it."""
    fs, root = _fs(path)
    if not fs.exists(root):
        raise missing_path("rmdir", path)
    fs.rm(root, recursive=True)


def _check_target(fs, root: str, path: str, over_write: bool, name: str) -> None:
    if not over_write and fs.exists(root):
        raise InvalidArgumentError("over_write", over_write, f"True to replace {path}",
                                   hint=f"{name} already exists")


def _copy_file(src_fs, src: str, dst_fs, dst: str) -> None:
    parent = posixpath.dirname(dst)
    if parent:
        dst_fs.makedirs(parent, exist_ok=True)
    with src_fs.open(src, "rb") as fin, dst_fs.open(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout, 8 << 20)


def _copy_tree(src_path: str, dst_path: str, over_write: bool) -> int:
    src_fs, src = _fs(src_path)
    dst_fs, dst = _fs(dst_path)
    if not src_fs.isdir(src):
        raise missing_path("copy", src_path, "No such directory")
    dst_fs.makedirs(dst, exist_ok=True)
    for f in src_fs.find(src):
        rel = posixpath.relpath(f, src)
        target = posixpath.join(dst, rel)
        _check_target(dst_fs, target, f"{dst_path}/{rel}", over_write, "remote file")
        _copy_file(src_fs, f, dst_fs, target)
    return 0


def put_local_file_to_remote(local_path: str, remote_path: str, filemode=None,
                             over_write: bool = False) -> int:
    """Copy a local file to ``remote_path``; 0 on success (Orca's code).

    Examples
    --------
    >>> put_local_file_to_remote("/tmp/model.h5", "hdfs:///models/model.h5", over_write=True)
    0
    """
    if not os.path.isfile(_local(local_path)):
        raise missing_path("put_local_file_to_remote", local_path)
    fs, root = _fs(remote_path)
    _check_target(fs, root, remote_path, over_write, "remote_path")
    _copy_file(*_fs(local_path), fs, root)
    if filemode is not None and is_local_path(remote_path):
        os.chmod(_local(remote_path), filemode)
    return 0


def put_local_dir_to_remote(local_dir: str, remote_dir: str, over_write: bool = True) -> int:
    """Copy a local directory, recursively, into ``remote_dir``; 0 on success."""
    return _copy_tree(local_dir, remote_dir, over_write)


def put_local_dir_tree_to_remote(local_dir: str, remote_dir: str,
                                 over_write: bool = False) -> int:
    """Copy a local directory tree to ``remote_dir``; 0 on success."""
    return _copy_tree(local_dir, remote_dir, over_write)


def put_local_files_with_prefix_to_remote(local_path_prefix: str, remote_dir: str,
                                          over_write: bool = False) -> int:
    """Copy the local files whose path starts with ``local_path_prefix`` into
    ``remote_dir``, under their own names; 0 on success."""
    import glob
    fs, root = _fs(remote_dir)
    fs.makedirs(root, exist_ok=True)
    for f in sorted(glob.glob(_local(local_path_prefix) + "*")):
        if os.path.isfile(f):
            target = posixpath.join(root, os.path.basename(f))
            _check_target(fs, target, target, over_write, "remote file")
            _copy_file(*_fs(f), fs, target)
    return 0


def get_remote_file_to_local(remote_path: str, local_path: str, over_write: bool = False) -> int:
    """Copy the file at ``remote_path`` to ``local_path``; 0 on success."""
    fs, root = _fs(remote_path)
    if not fs.isfile(root):
        raise missing_path("get_remote_file_to_local", remote_path)
    local_fs, local = _fs(local_path)
    _check_target(local_fs, local, local_path, over_write, "local_path")
    _copy_file(fs, root, local_fs, local)
    return 0


def get_remote_dir_to_local(remote_dir: str, local_dir: str, over_write: bool = False) -> int:
    """Copy the directory ``remote_dir``, recursively, into ``local_dir``; 0 on success."""
    return _copy_tree(remote_dir, local_dir, over_write)


def get_remote_files_with_prefix_to_local(remote_path_prefix: str, local_dir: str,
                                          over_write: bool = False) -> str:
    """Copy the remote files whose path starts with ``remote_path_prefix`` into
    ``local_dir``; the local path of the prefix (as Orca returned it)."""
    fs, prefix = _fs(remote_path_prefix)
    os.makedirs(_local(local_dir), exist_ok=True)
    for f in sorted(fs.glob(prefix + "*")):
        if fs.isfile(f):
            target = os.path.join(_local(local_dir), posixpath.basename(f))
            _check_target(*_fs(target), target, over_write, "local file")
            _copy_file(fs, f, *_fs(target))
    return os.path.join(_local(local_dir), posixpath.basename(remote_path_prefix))


def _download(path: str, tmp: str) -> str:
    fs, root = _fs(path)
    name = posixpath.basename(root.rstrip("/"))
    ext = os.path.splitext(name)[1]
    target = os.path.join(tmp, f"{uuid.uuid4().hex}{ext}")
    if fs.isdir(root):
        _copy_tree(path, target, True)
    elif fs.exists(root):
        _copy_file(fs, root, *_fs(target))
    else:
        raise missing_path("load", path)
    return target


def enable_multi_fs_load_static(load_func: Callable) -> Callable:
    """Decorate ``load_func(path, ...)`` so that a remote ``path`` (file or directory)
    is downloaded to a temporary local copy first."""
    @functools.wraps(load_func)
    def load(path, *args, **kwargs):
        if is_local_path(path):
            return load_func(_local(path), *args, **kwargs)
        with tempfile.TemporaryDirectory(prefix="sparkorca-load-") as tmp:
            return load_func(_download(path, tmp), *args, **kwargs)
    return load


def enable_multi_fs_load(load_func: Callable) -> Callable:
    """Decorate ``load_func(obj, path, ...)`` (a method) likewise."""
    @functools.wraps(load_func)
    def load(obj, path, *args, **kwargs):
        if is_local_path(path):
            return load_func(obj, _local(path), *args, **kwargs)
        with tempfile.TemporaryDirectory(prefix="sparkorca-load-") as tmp:
            return load_func(obj, _download(path, tmp), *args, **kwargs)
    return load


def enable_multi_fs_save(save_func: Callable) -> Callable:
    """Decorate ``save_func(obj, path, ...)`` so that a remote ``path`` is written
    locally first and then copied there (a directory recursively)."""
    @functools.wraps(save_func)
    def save(obj, path, *args, **kwargs):
        if is_local_path(path):
            return save_func(obj, _local(path), *args, **kwargs)
        with tempfile.TemporaryDirectory(prefix="sparkorca-save-") as tmp:
            local = os.path.join(tmp, posixpath.basename(path.rstrip("/")) or "out")
            result = save_func(obj, local, *args, **kwargs)
            if os.path.isdir(local):
                _copy_tree(local, path, True)
            else:
                put_local_file_to_remote(local, path, over_write=True)
            return result
    return save


__all__ = ["open_text", "write_text", "open_image", "load_numpy", "exists", "is_file",
           "listdir", "makedirs", "rmdir", "put_local_file_to_remote", "put_local_dir_to_remote",
           "put_local_dir_tree_to_remote", "put_local_files_with_prefix_to_remote",
           "get_remote_file_to_local", "get_remote_dir_to_local",
           "get_remote_files_with_prefix_to_local", "enable_multi_fs_load_static",
           "enable_multi_fs_load", "enable_multi_fs_save", "is_local_path"]
