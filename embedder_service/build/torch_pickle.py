"""Read ``torch.save``'d state dicts into numpy arrays, in both of torch's file formats.

facenet-pytorch ships its MTCNN weights in the legacy (pre-1.6, non-zip) format; its FaceNet
checkpoints, and anything saved by a torch since 1.6, may be in the zip format. torch is
deliberately not a dependency of the services or the model build (it is large and facenet-pytorch
pins an old one; only the `test` extra installs it, for a reference check), so this is a small
hand-written reader. A legacy file is a sequence of pickles:

1. a magic number, 2. the format version (1001), 3. system info (endianness, type sizes),
4. the object itself, whose tensors point at storages through persistent ids,
5. the list of storage keys, in the order their raw bytes follow,
6. per storage: an int64 element count, then the elements, little-endian.

A zip file (``torch.save``'s default since 1.6) holds one folder with ``data.pkl``, the same
object pickle, and ``data/<key>``, each storage's raw little-endian bytes without a count.

Only what a state dict needs may be unpickled: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor_v2`` and the ``torch.*Storage`` types, each replaced by a
stand-in here. Any other global raises, so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
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
    """The file needs a global outside the state-dict allow-list, or is not a torch state dict."""


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


def _storage_array(ref: _StorageRef, raw: bytes) -> np.ndarray:
    if len(raw) != ref.numel * ref.dtype.itemsize:
        raise UnsupportedPickleError(
            f"storage {ref.key} holds {len(raw)} bytes, the pickle said {ref.numel} x {ref.dtype}"
        )
    return np.frombuffer(raw, dtype=ref.dtype)


def _read_storage(stream: BinaryIO, ref: _StorageRef) -> np.ndarray:
    (numel,) = struct.unpack("<q", stream.read(8))
    if numel != ref.numel:
        raise UnsupportedPickleError(f"storage {ref.key}: {numel} elements, the pickle said {ref.numel}")
    return _storage_array(ref, stream.read(numel * ref.dtype.itemsize))


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


def _tensor_refs(state: Any) -> dict[str, _TensorRef]:
    if not isinstance(state, dict) or not all(isinstance(v, _TensorRef) for v in state.values()):
        raise UnsupportedPickleError("the file does not hold a state dict of tensors")
    return {str(name): ref for name, ref in state.items()}


def _load_legacy(stream: BinaryIO) -> dict[str, np.ndarray]:
    if _unpickle(stream) != LEGACY_MAGIC:
        raise UnsupportedPickleError(
            "not a torch.save file (neither a zip archive nor the legacy magic number)"
        )
    if _unpickle(stream) != LEGACY_PROTOCOL_VERSION:
        raise UnsupportedPickleError("unsupported legacy torch.save protocol version")
    sys_info = _unpickle(stream)
    if not (isinstance(sys_info, dict) and sys_info.get("little_endian")):
        raise UnsupportedPickleError("only little-endian torch files are supported")
    state = _tensor_refs(_unpickle(stream))
    refs: dict[str, _StorageRef] = {t.storage.key: t.storage for t in state.values()}
    storages = {str(key): _read_storage(stream, refs[str(key)]) for key in _unpickle(stream)}
    return {name: _materialise(ref, storages) for name, ref in state.items()}


def _load_zip(archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
    pickles = [name for name in archive.namelist() if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise UnsupportedPickleError("not a torch.save zip archive (no single <folder>/data.pkl)")
    folder = pickles[0].removesuffix("data.pkl")
    if f"{folder}byteorder" in archive.namelist() and archive.read(f"{folder}byteorder") != b"little":
        raise UnsupportedPickleError("only little-endian torch files are supported")
    state = _tensor_refs(_unpickle(io.BytesIO(archive.read(pickles[0]))))
    refs: dict[str, _StorageRef] = {t.storage.key: t.storage for t in state.values()}
    try:
        storages = {
            key: _storage_array(ref, archive.read(f"{folder}data/{key}")) for key, ref in refs.items()
        }
    except KeyError as missing:
        raise UnsupportedPickleError(f"the archive lacks a storage the pickle names: {missing}") from None
    return {name: _materialise(ref, storages) for name, ref in state.items()}


def load_state_dict(source: Path | bytes) -> dict[str, np.ndarray]:
    """Parameters of a ``torch.save(module.state_dict())`` file, legacy or zip, by name."""
    raw = source if isinstance(source, bytes) else source.read_bytes()
    if zipfile.is_zipfile(io.BytesIO(raw)):
        try:
            with zipfile.ZipFile(io.BytesIO(raw)) as archive:
                return _load_zip(archive)
        except (zipfile.BadZipFile, EOFError) as error:
            raise UnsupportedPickleError(f"damaged torch.save zip archive: {error}") from None
    return _load_legacy(io.BytesIO(raw))
