"""Read a legacy (pre-zip) ``torch.save`` file of tensors without PyTorch, accepting nothing but the tensors.

The legacy format is five things in a row: three small pickles (magic number, protocol version, system info), the
main pickle (here an ``OrderedDict`` of tensors whose storages are *persistent ids*), a pickle of the storage keys,
and then each storage's raw bytes (an int64 element count followed by the data, little-endian).

A pickle can run arbitrary code through the globals it names, so :class:`_TensorUnpickler` resolves only
``collections.OrderedDict``, ``torch._utils._rebuild_tensor(_v2)`` and the ``torch.*Storage`` classes, each to a
local stand-in; anything else is refused with one sentence.

Usage::

    tensors = read_legacy_state_dict("efficientnet-lite0-57934424.pth")   # {name: float32 numpy array}
"""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from device.errors import ConfigError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
# torch storage class -> numpy dtype (the types a state dict of a float network can hold)
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class TorchFileError(ConfigError):
    """The file is not a legacy torch.save file of tensors, or it names something other than tensors."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _LazyTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialise(self) -> np.ndarray:
        flat = self.storage.data
        if flat is None:
            raise TorchFileError(f"Storage {self.storage.key} has no data in the file; it is truncated.")
        if not self.size:
            return flat[self.offset].copy()
        itemsize = flat.dtype.itemsize
        need = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride)) + 1
        if any(n <= 0 for n in self.size):
            return np.zeros(self.size, flat.dtype)
        if need > flat.size or self.offset < 0 or any(s < 0 for s in self.stride):
            raise TorchFileError("A tensor reaches past its storage; the file is corrupt.")
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.size,
                                               strides=tuple(s * itemsize for s in self.stride))
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise TorchFileError("A tensor in the file is not backed by a storage; the file is not a plain state dict.")
    return _LazyTensor(storage, int(storage_offset), tuple(int(n) for n in size), tuple(int(s) for s in stride))


class _TensorUnpickler(pickle.Unpickler):
    """Resolves only the globals a state dict of tensors needs; storages become :class:`_Storage` records."""

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise TorchFileError(f"The file names {module}.{name}, which is not a tensor; only state dicts of tensors "
                             "are read (refusing to run arbitrary pickled code).")

    def persistent_load(self, saved_id):
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5 and saved_id[0] in ("storage", b"storage")):
            raise TorchFileError("The file holds a persistent object that is not a tensor storage.")
        storage_type, key, _location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType):
            raise TorchFileError("A storage in the file has an unknown type.")
        key = str(key)
        if key not in self.storages:
            self.storages[key] = _Storage(key, storage_type.dtype, int(numel))
        return self.storages[key]


def read_legacy_state_dict(path: str | Path) -> OrderedDict[str, np.ndarray]:
    """The tensors of a legacy ``torch.save`` state dict, as numpy arrays in file order.

    Args:
        path: the ``.pth`` file (PyTorch < 1.6 format, not the zip format).

    Returns:
        ``OrderedDict`` name -> numpy array (dtype of the storage, e.g. float32; BN counters int64).

    Raises:
        TorchFileError: missing, truncated or zip-format file, or a pickle naming anything but tensors.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise TorchFileError(f"Cannot read the weights file {path} ({err.strerror}); check the path.") from None
    if raw[:4] == b"PK\x03\x04":
        raise TorchFileError(f"{path} is a zip-format torch file; only the legacy (pre-1.6) format is read.")
    f = io.BytesIO(raw)
    storages: dict[str, _Storage] = {}
    try:
        header = [_TensorUnpickler(f, storages).load() for _ in range(3)]
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
            raise TorchFileError(f"{path} is not a legacy torch.save file (wrong magic number or protocol).")
        if isinstance(header[2], dict) and not header[2].get("little_endian", True):
            raise TorchFileError(f"{path} was written big-endian; only little-endian files are read.")
        result = _TensorUnpickler(f, storages).load()
        keys = _TensorUnpickler(f, storages).load()
    except TorchFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise TorchFileError(f"{path} is not a readable torch.save file ({err}); download it again.") from None
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchFileError(f"{path} lists storage {key} that no tensor uses; the file is corrupt.")
        head = f.read(8)
        if len(head) != 8:
            raise TorchFileError(f"{path} is truncated (storage {key} is missing); download it again.")
        (numel,) = struct.unpack("<q", head)
        nbytes = numel * storage.dtype.itemsize
        data = f.read(nbytes)
        if numel != storage.numel or len(data) != nbytes:
            raise TorchFileError(f"{path} is truncated or corrupt at storage {key}; download it again.")
        storage.data = np.frombuffer(data, dtype=storage.dtype)
    if not isinstance(result, dict):
        raise TorchFileError(f"{path} holds a {type(result).__name__}, not a state dict of tensors.")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, value in result.items():
        if not isinstance(value, _LazyTensor):
            raise TorchFileError(f"Entry {name!r} of {path} is not a tensor; only state dicts of tensors are read.")
        out[str(name)] = value.materialise()
    return out
