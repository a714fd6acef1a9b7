"""A SavedModel's signature read from ``saved_model.pb`` without TensorFlow: the
driver checks a TFModel's mappings and knows its output schema before any job."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from ..errors import InvalidArgumentError

log = logging.getLogger(__name__)
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class Signature:
    export_dir: str
    tags: Tuple[str, ...]
    signature_def_key: str
    fingerprint: str
    inputs: Dict[str, Tuple[int, Optional[Tuple[int, ...]]]]   # name: (dtype enum, dims)
    outputs: Dict[str, Tuple[int, Optional[Tuple[int, ...]]]]


def _absolute(path: str) -> str:
    """A local path made absolute against the driver's working dir: the executors
    load it from their own working dirs."""
    return path if "://" in path else os.path.abspath(path)


def read_signature(export_dir: Optional[str], tag_set: Optional[str],
                   signature_def_key: Optional[str]) -> Signature:
    """The signature ``signature_def_key`` (None: 'serving_default') of the
    metagraph tagged ``tag_set`` (comma-delimited; None: the only one), read from
    ``saved_model.pb`` without TensorFlow: the driver needs none."""
    if not export_dir:
        raise InvalidArgumentError("export_dir", export_dir,
                                   "the directory of an exported SavedModel (setExportDir)")
    export_dir = _absolute(export_dir)
    raw = _read(_join(export_dir, "saved_model.pb"))
    if raw is None:
        what = _listing(export_dir)
        raise InvalidArgumentError(
            "export_dir", export_dir, "a directory holding a SavedModel (saved_model.pb)",
            hint="the directory does not exist" if what is None else f"it holds {what}")
    digest = hashlib.sha256(raw)
    index = _read(_join(export_dir, "variables", "variables.index"))
    digest.update(index or b"")  # a checksum of every variable: new weights, new key
    graphs: Dict[Tuple[str, ...], dict] = {}
    try:
        for num, meta in _fields(raw):
            if num == 2:  # SavedModel.meta_graphs
                graph = _meta_graph(meta)
                graphs[graph[0]] = graph[1]
    except (IndexError, ValueError, UnicodeDecodeError) as e:  # cut short or not a SavedModel
        raise InvalidArgumentError(
            "export_dir", export_dir, "a directory holding a SavedModel",
            hint=f"its saved_model.pb could not be read ({type(e).__name__}: {e})") from None
    available = [",".join(t) for t in graphs]
    if tag_set is None:
        if len(graphs) != 1:
            raise InvalidArgumentError("tag_set", tag_set,
                                       f"one of the SavedModel's tag sets {available}")
        tags = next(iter(graphs))
    else:
        tags = tuple(sorted(t.strip() for t in tag_set.split(",") if t.strip()))
        if tags not in graphs:
            raise InvalidArgumentError("tag_set", tag_set,
                                       f"one of the SavedModel's tag sets {available}")
    key = signature_def_key or DEFAULT_SIGNATURE
    sigs = graphs[tags]
    if key not in sigs:
        raise InvalidArgumentError("signature_def_key", signature_def_key,
                                   f"a signature of {export_dir}: {sorted(sigs)}")
    return Signature(export_dir, tags, key, digest.hexdigest()[:16], *sigs[key])


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def _read(path: str) -> Optional[bytes]:
    """A file's bytes (local or any filesystem fsspec reaches); None if missing."""
    try:
        if "://" not in path:
            with open(path, "rb") as f:
                return f.read()
        import fsspec
        with fsspec.open(path, "rb") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _listing(path: str) -> Optional[List[str]]:
    try:
        if "://" not in path:
            return sorted(os.listdir(path))[:10]
        import fsspec
        fs, root = fsspec.core.url_to_fs(path)
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))[:10]
    except (FileNotFoundError, NotADirectoryError):
        return None


# Reading saved_model.pb: the protobuf wire format, only the fields a signature needs
# (tensorflow/core/protobuf/{saved_model,meta_graph}.proto)
def _varint(buf, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def _fields(buf) -> Iterator[Tuple[int, Any]]:
    """(field number, value) of a message: ints for varints, memoryviews for the rest."""
    buf = memoryview(buf)
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise InvalidArgumentError("export_dir", "saved_model.pb", "a valid SavedModel",
                                       hint=f"unexpected protobuf wire type {wire}")
        yield key >> 3, value


def _map_entries(buf) -> Tuple[str, Any]:
    key, value = "", b""
    for num, v in _fields(buf):
        if num == 1:
            key = bytes(v).decode()
        elif num == 2:
            value = v
    return key, value


def _meta_graph(buf) -> Tuple[Tuple[str, ...], dict]:
    """(sorted tags, {signature key: (inputs, outputs)}) of a MetaGraphDef."""
    tags: List[str] = []
    signatures = {}
    for num, value in _fields(buf):
        if num == 1:  # meta_info_def
            tags += [bytes(v).decode() for n, v in _fields(value) if n == 4]
        elif num == 5:  # signature_def map
            key, sig = _map_entries(value)
            inputs: Dict[str, Any] = {}
            outputs: Dict[str, Any] = {}
            for n, v in _fields(sig):
                if n in (1, 2):
                    name, info = _map_entries(v)
                    (inputs if n == 1 else outputs)[name] = _tensor_info(info)
            signatures[key] = (inputs, outputs)
    return tuple(sorted(tags)), signatures


def _tensor_info(buf) -> Tuple[int, Optional[Tuple[int, ...]]]:
    """(DataType enum, dims with -1 for unknown; None: unknown rank) of a TensorInfo."""
    dtype, dims, unknown = 0, [], False
    for num, value in _fields(buf):
        if num == 2:
            dtype = value
        elif num == 3:  # TensorShapeProto
            for n, v in _fields(value):
                if n == 2:
                    size = next((s for k, s in _fields(v) if k == 1), 0)
                    dims.append(size - (1 << 64) if size >= 1 << 63 else size)
                elif n == 3:
                    unknown = bool(v)
    return dtype, None if unknown else tuple(dims)


# TensorFlow's DataType enum (tensorflow/core/framework/types.proto) -> Spark type
_ELEMENT = {1: "float", 19: "float", 14: "float", 2: "double", 10: "boolean", 7: "binary",
            **{n: "long" for n in (3, 4, 5, 6, 9, 17, 22, 23)}}
_DTYPE_NAMES = {0: "invalid (a sparse or composite tensor)", 8: "complex64",
                18: "complex128", 20: "resource", 21: "variant"}


def _output_kind(name: str, dtype: int, dims: Optional[Tuple[int, ...]]) -> Tuple[str, int]:
    """(Spark element type, array depth) of a signature output, one value per row."""
    if dims is None or len(dims) == 0:
        raise InvalidArgumentError(
            "output_mapping", name, "signature outputs with a batch dimension",
            hint=f"output {name!r} has shape {'unknown' if dims is None else '[]'}")
    if dtype not in _ELEMENT:
        raise InvalidArgumentError(
            "output_mapping", name, "outputs of float, integer, bool or string type",
            hint=f"output {name!r} is {_DTYPE_NAMES.get(dtype, f'DataType {dtype}')}")
    return _ELEMENT[dtype], len(dims) - 1
