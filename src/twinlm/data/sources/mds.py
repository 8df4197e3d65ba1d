"""A small read-only reader for MosaicML streaming (MDS) shards, the format Ettin's data ships in.

The `mosaicml-streaming` library cannot share an environment with transformers 5, so this reads
the documented layout directly (local folders only, no downloading):

* `index.json`: `{"version": 2, "shards": [...]}`; each shard lists `column_names`,
  `column_encodings`, `column_sizes` (bytes for fixed-size columns, null for variable ones),
  `compression` (null, "zstd", "zstd:<level>", "gz", "bz2"), `raw_data` and `zip_data`
  (`{"basename", "bytes", ...}`) and `samples`. A basename may hold a subfolder (merged streams).
* a raw shard: uint32 sample count n, n+1 uint32 absolute byte offsets, then the samples; a
  sample is one uint32 length per variable-size column, then every column's payload in order.
* `ndarray[:dtype[:d0,d1,...]]`: values, preceded by a dtype byte when the dtype is not in the
  encoding and by `(ndim << 2 | shape-int-code)` plus the shape when the shape is not.

Verified against a fixture written by mosaicml-streaming 0.13.0 (tests/data/mds).
"""

from __future__ import annotations

import bz2
import gzip
import json
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from twinlm.errors import UserError

# Byte codes the format uses for an ndarray's value dtype and for the integer type of its shape.
_VALUE_DTYPES = {8: "uint8", 9: "int8", 16: "uint16", 17: "int16", 18: "float16", 32: "uint32",
                 33: "int32", 34: "float32", 64: "uint64", 65: "int64", 66: "float64"}
_SHAPE_DTYPES = {0: "uint8", 1: "uint16", 2: "uint32", 3: "uint64"}
_SCALARS = {"int": "int64", **{name: name for name in set(_VALUE_DTYPES.values())}}

_SIMPLE: dict[str, Callable[[bytes], Any]] = {
    "bytes": bytes,
    "str": lambda b: b.decode("utf-8"),
    "str_int": lambda b: int(b.decode("utf-8")),
    "str_float": lambda b: float(b.decode("utf-8")),
    "str_decimal": lambda b: Decimal(b.decode("utf-8")),
    "json": lambda b: json.loads(b.decode("utf-8")),
}
# Known to the format but deliberately not read here: pickle can run code when loaded, and
# images are not text-corpus material (and would drag in PIL).
_REFUSED = {"pkl": "pickle is not loaded because it can run arbitrary code",
            "pil": "image encodings are not supported", "jpeg": "image encodings are not supported",
            "png": "image encodings are not supported"}
_MAX_CACHED_SHARDS = 2  # decompressed shards kept in memory; sequential reads need only one


def _ndarray_decoder(spec: str, where: str) -> Callable[[bytes], np.ndarray]:
    """Decoder for `ndarray`, `ndarray:<dtype>` or `ndarray:<dtype>:<d0,d1,...>`."""
    parts = spec.split(":")[1:]
    dtype = parts[0] if parts else None
    if dtype is not None and dtype not in _SCALARS.values():
        raise UserError(f"{where}: unsupported ndarray dtype in encoding '{spec}'")
    try:
        shape = tuple(int(d) for d in parts[1].split(",")) if len(parts) > 1 else None
    except ValueError:
        raise UserError(f"{where}: bad ndarray shape in encoding '{spec}'") from None

    def decode(data: bytes) -> np.ndarray:
        pos, kind = 0, dtype
        if kind is None:  # dynamic dtype: one code byte
            kind, pos = _VALUE_DTYPES[data[0]], 1
        dims = shape
        if dims is None:  # dynamic shape: ndim and the shape's int width packed in one byte
            ndim, code = data[pos] >> 2, data[pos] & 3
            width = np.dtype(_SHAPE_DTYPES[code]).itemsize
            dims = tuple(int(d) for d in np.frombuffer(data, _SHAPE_DTYPES[code], ndim, pos + 1))
            pos += 1 + ndim * width
        # Copy: a view would keep the whole cached shard alive and be read-only.
        return np.frombuffer(data, kind, offset=pos).reshape(dims).copy()

    return decode


def _decoder(encoding: str, where: str) -> Callable[[bytes], Any]:
    """The function turning one column payload into a Python value; UserError if unknown."""
    name = encoding.split(":", 1)[0]
    if encoding in _SIMPLE:
        return _SIMPLE[encoding]
    if encoding in _SCALARS:
        dtype = np.dtype(_SCALARS[encoding])
        return lambda b: np.frombuffer(b, dtype, 1)[0].item()  # plain Python int/float
    if name == "ndarray":
        return _ndarray_decoder(encoding, where)
    if name in _REFUSED:
        raise UserError(f"{where}: column encoding '{encoding}': {_REFUSED[name]}")
    known = ", ".join(sorted([*_SIMPLE, *_SCALARS, "ndarray"]))
    raise UserError(f"{where}: unknown MDS column encoding '{encoding}' (supported: {known})")


@dataclass
class _Shard:
    path: Path  # the file to read: the raw shard if present, else the compressed one
    compression: str | None  # None when `path` is the raw shard
    raw_bytes: int
    samples: int


def is_mds_folder(path: str | Path) -> bool:
    """True if `path` is a folder whose index.json looks like an MDS index (never raises)."""
    index = Path(path) / "index.json"
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("shards"), list)


class MDSDataset:
    """Random-access, read-only view of a local MDS folder (index.json plus its shards).

    Samples decode to dicts: `str` -> str, scalar encodings -> Python int/float, `ndarray...` ->
    numpy array, `bytes` -> bytes, `json` -> the parsed value. Shards are decompressed lazily,
    on first access, and the last few are cached so that iterating reads each shard once.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise UserError(f"not an MDS folder: {index_path} does not exist")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{index_path} is not valid JSON ({e})") from None
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list):
            raise UserError(f"{index_path} is not an MDS index: it has no 'shards' list")
        if index.get("version", 2) != 2:
            raise UserError(f"{index_path}: MDS index version {index.get('version')} (only 2 is read)")
        self.columns: dict[str, str] = {}  # the first shard's; later shards may differ in ndarray int width
        self._sizes: list[list[int | None]] = []
        self._encodings: list[list[str]] = []
        self._shards: list[_Shard] = []
        for k, entry in enumerate(index["shards"]):
            self._add_shard(entry, f"{index_path} shard {k}")
        if not self._shards:
            raise UserError(f"{index_path} lists no shards")
        names = list(self.columns)
        # Per shard: a merged index (streaming's merge_index) may join leaves whose ids are
        # ndarray:uint16 in one and ndarray:uint32 in another; decoders are shared per encoding.
        cache: dict[str, Callable[[bytes], Any]] = {}
        for enc in {enc for encodings in self._encodings for enc in encodings}:
            cache[enc] = _decoder(enc, str(index_path))
        self._decoders = [[cache[enc] for enc in encodings] for encodings in self._encodings]
        self._starts = np.cumsum([0] + [s.samples for s in self._shards]).tolist()
        self._names = names
        self._cache: OrderedDict[int, bytes] = OrderedDict()

    def _add_shard(self, entry: Any, where: str) -> None:
        """Validate one index entry (cheap: no shard is opened) and record it."""
        try:
            if entry.get("format", "mds") != "mds":
                raise UserError(f"{where}: format '{entry['format']}' is not MDS")
            columns = dict(zip(entry["column_names"], entry["column_encodings"], strict=True))
            sizes = list(entry["column_sizes"])
            raw, zipped = entry["raw_data"], entry.get("zip_data")
            compression = entry.get("compression")
            samples = int(entry["samples"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{where}: malformed shard entry ({type(e).__name__}: {e})") from None
        if self._shards and not _compatible(columns, self.columns):
            raise UserError(f"{where}: columns {columns} differ from the first shard's {self.columns}")
        if not self._shards:
            self.columns = columns
        self._sizes.append(sizes)
        self._encodings.append(list(columns.values()))
        raw_path = self.root / raw["basename"]
        # A local copy of the raw shard (left by an earlier decompression) spares the work.
        if compression is None or (raw_path.is_file() and raw_path.stat().st_size == raw.get("bytes")):
            path, compression = raw_path, None
        else:
            if not zipped:
                raise UserError(f"{where}: compression '{compression}' but no zip_data")
            path = self.root / zipped["basename"]
            if compression.split(":")[0] not in ("zstd", "gz", "bz2"):
                raise UserError(f"{where}: unsupported compression '{compression}' (zstd, gz, bz2 are read)")
        if not path.is_file():
            raise UserError(f"{where}: shard file {path} does not exist")
        self._shards.append(_Shard(path, compression, int(raw.get("bytes") or 0), samples))

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    def describe(self) -> str:
        """Short description, e.g. 'MDS shards (10 shards, zstd)'."""
        kinds = sorted({(s.compression or "raw").split(":")[0] for s in self._shards})
        plural = "s" if len(self._shards) != 1 else ""
        return f"MDS shards ({len(self._shards)} shard{plural}, {'+'.join(kinds)})"

    def _shard_bytes(self, k: int) -> bytes:
        """The raw (decompressed) bytes of shard k, from a small LRU cache."""
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        shard = self._shards[k]
        data = _decompress(shard.path.read_bytes(), shard.compression)
        count = int(np.frombuffer(data, np.uint32, 1)[0]) if len(data) >= 4 else -1
        if count != shard.samples:
            raise UserError(f"{shard.path}: holds {count} samples, the index says {shard.samples} (corrupt?)")
        self._cache[k] = data
        if len(self._cache) > _MAX_CACHED_SHARDS:
            self._cache.popitem(last=False)
        return data

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"sample {i} out of range for {n} samples")
        k = bisect_right(self._starts, i) - 1
        data = self._shard_bytes(k)
        j = i - self._starts[k]
        begin, end = np.frombuffer(data, np.uint32, 2, 4 + 4 * j).tolist()
        sample = memoryview(data)[begin:end]
        sizes = self._sizes[k]
        n_var = sum(size is None for size in sizes)
        var_sizes = iter(np.frombuffer(sample, np.uint32, n_var).tolist())
        pos, out = 4 * n_var, {}
        for name, size, decode in zip(self._names, sizes, self._decoders[k]):
            size = next(var_sizes) if size is None else size
            out[name] = decode(bytes(sample[pos:pos + size]))
            pos += size
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]


def _compatible(a: dict[str, str], b: dict[str, str]) -> bool:
    """Same column names, and per column the same encoding or two ndarray encodings (whose
    value dtype and shape each shard's own decoder reads)."""
    return list(a) == list(b) and all(x == y or (x.startswith("ndarray") and y.startswith("ndarray"))
                                      for x, y in zip(a.values(), b.values()))


def _decompress(data: bytes, compression: str | None) -> bytes:
    """Undo a shard's compression ('zstd' or 'zstd:<level>', 'gz', 'bz2'; None = raw)."""
    algo = (compression or "").split(":")[0]
    if algo == "zstd":
        import zstandard  # imported here: only compressed shards need it

        # A decompressobj also handles frames that do not record their content size.
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if algo == "gz":
        return gzip.decompress(data)
    if algo == "bz2":
        return bz2.decompress(data)
    return data
