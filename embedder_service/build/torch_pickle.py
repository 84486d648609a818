"""Read PyTorch's legacy (pre-1.6, non-zip) ``torch.save`` files into numpy arrays.

facenet-pytorch ships its MTCNN weights in this format. torch is deliberately not a
dependency of facesearch (it is large and facenet-pytorch pins an old one), so this is a
small hand-written reader. The file is a sequence of pickles:

1. a magic number, 2. the format version (1001), 3. system info (endianness, type sizes),
4. the object itself, whose tensors point at storages through persistent ids,
5. the list of storage keys, in the order their raw bytes follow,
6. per storage: an int64 element count, then the elements, little-endian.

Only what a state dict needs may be unpickled: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` types, each replaced by a
stand-in here. Any other global raises, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class UnsupportedPickleError(pickle.UnpicklingError):
    """The file needs a global outside the state-dict allow-list, or is not a legacy torch file."""


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype[Any]


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype[Any]
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """A tensor whose storage bytes come after the pickle that names it."""

    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: _StorageRef, offset: int, shape: tuple[int, ...], stride: tuple[int, ...], *_: object
) -> _TensorRef:
    # Trailing arguments (requires_grad, backward hooks, metadata) mean nothing for inference.
    return _TensorRef(storage, offset, tuple(shape), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise UnsupportedPickleError(f"global {module}.{name} is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsupportedPickleError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsupportedPickleError(f"unexpected storage type {storage_type!r}")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _unpickle(stream: BinaryIO) -> Any:
    return _StateDictUnpickler(stream).load()


def _read_storage(stream: BinaryIO, ref: _StorageRef) -> np.ndarray:
    (numel,) = struct.unpack("<q", stream.read(8))
    if numel != ref.numel:
        raise UnsupportedPickleError(f"storage {ref.key}: {numel} elements, the pickle said {ref.numel}")
    raw = stream.read(numel * ref.dtype.itemsize)
    if len(raw) != numel * ref.dtype.itemsize:
        raise UnsupportedPickleError(f"storage {ref.key} is truncated")
    return np.frombuffer(raw, dtype=ref.dtype)


def _materialise(ref: _TensorRef, storages: dict[str, np.ndarray]) -> np.ndarray:
    storage = storages[ref.storage.key]
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride, strict=True) if n > 0)
    if ref.offset < 0 or last >= len(storage) or min(ref.stride, default=0) < 0:
        raise UnsupportedPickleError(f"tensor view {ref} lies outside its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[ref.offset :],
        shape=ref.shape,
        strides=tuple(s * storage.itemsize for s in ref.stride),
        writeable=False,
    )
    return np.array(view, dtype=storage.dtype.newbyteorder("="))


def load_state_dict(source: Path | bytes) -> dict[str, np.ndarray]:
    """Parameters of a legacy ``torch.save(module.state_dict())`` file, by name."""
    stream: BinaryIO = io.BytesIO(source if isinstance(source, bytes) else source.read_bytes())
    if _unpickle(stream) != LEGACY_MAGIC:
        raise UnsupportedPickleError("not a legacy torch.save file (bad magic number)")
    if _unpickle(stream) != LEGACY_PROTOCOL_VERSION:
        raise UnsupportedPickleError("unsupported legacy torch.save protocol version")
    sys_info = _unpickle(stream)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
        raise UnsupportedPickleError("only little-endian torch files are supported")
    state = _unpickle(stream)
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise UnsupportedPickleError("the file does not hold a state dict of tensors")
    refs: dict[str, _StorageRef] = {t.storage.key: t.storage for t in state.values()}
    storages = {str(key): _read_storage(stream, refs[str(key)]) for key in _unpickle(stream)}
    return {str(name): _materialise(ref, storages) for name, ref in state.items()}
