"""The MDS reader against shards written by the real mosaicml-streaming library (tests/data/mds),
plus small hand-made shards for the encodings the fixture does not use."""

import json
from pathlib import Path

import numpy as np
import pytest
import zstandard

from twinlm.data.sources import mds
from twinlm.data.sources.mds import MDSDataset, is_mds_folder
from twinlm.errors import UserError

FIXTURE = Path(__file__).parents[1] / "data" / "mds"
EXPECTED = json.loads((FIXTURE / "expected_texts.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["raw", "zstd"])
def test_fixture_reads_exactly_the_expected_texts(kind):
    ds = MDSDataset(FIXTURE / kind)
    assert len(ds) == 40
    assert ds.columns == {"input_ids": "ndarray:uint32", "text": "str"}
    samples = list(ds)
    assert [s["text"] for s in samples] == EXPECTED
    for s in samples:  # the writer stored each text's UTF-8 bytes as uint32: an independent check
        assert s["input_ids"].dtype == np.uint32
        assert s["input_ids"].tolist() == list(s["text"].encode("utf-8"))
    assert ds.describe() == f"MDS shards (10 shards, {kind})"
    assert ds.num_shards == 10


def test_random_access_and_bounds():
    ds = MDSDataset(FIXTURE / "zstd")
    assert ds[-1]["text"] == EXPECTED[-1]
    assert ds[np.int64(13)]["text"] == EXPECTED[13]
    assert ds[27]["text"] == EXPECTED[27]
    with pytest.raises(IndexError):
        ds[40]
    with pytest.raises(IndexError):
        ds[-41]


def test_zstd_shards_are_decompressed_lazily_and_once(monkeypatch):
    calls = []
    real = mds._decompress
    monkeypatch.setattr(mds, "_decompress", lambda data, c: calls.append(c) or real(data, c))
    ds = MDSDataset(FIXTURE / "zstd")
    assert len(ds) == 40 and calls == []  # len() reads only the index
    for i in range(4):  # shard 0 holds samples 0..3
        ds[i]
    assert calls == ["zstd"]
    list(ds)
    assert len(calls) == 10  # sequential iteration decompresses each shard once


def test_is_mds_folder(tmp_path):
    assert is_mds_folder(FIXTURE / "raw")
    assert not is_mds_folder(tmp_path)
    (tmp_path / "index.json").write_text('{"not": "mds"}')
    assert not is_mds_folder(tmp_path)
    (tmp_path / "index.json").write_text("{broken")
    assert not is_mds_folder(tmp_path)


# A minimal writer of the documented layout, for encodings the library fixture does not cover.
def _shard_bytes(rows: list[list[bytes]], sizes: list[int | None]) -> bytes:
    samples = []
    for payloads in rows:
        lengths = [len(p) for p, size in zip(payloads, sizes) if size is None]
        samples.append(np.array(lengths, np.uint32).tobytes() + b"".join(payloads))
    start = 4 + 4 * (len(rows) + 1)
    offsets = np.cumsum([start] + [len(s) for s in samples]).astype(np.uint32)
    return np.uint32(len(rows)).tobytes() + offsets.tobytes() + b"".join(samples)


def _write(root: Path, columns: dict[str, str], sizes: list[int | None], shards: list[list[list[bytes]]],
           compression: str | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for k, rows in enumerate(shards):
        raw = _shard_bytes(rows, sizes)
        name = f"shard.{k:05d}.mds"
        entry = {"column_encodings": list(columns.values()), "column_names": list(columns),
                 "column_sizes": sizes, "compression": compression, "format": "mds", "hashes": [],
                 "raw_data": {"basename": name, "bytes": len(raw), "hashes": {}}, "samples": len(rows),
                 "size_limit": 1 << 26, "version": 2, "zip_data": None}
        if compression:
            zipped = zstandard.ZstdCompressor(level=3).compress(raw)
            (root / f"{name}.zstd").write_bytes(zipped)
            entry["zip_data"] = {"basename": f"{name}.zstd", "bytes": len(zipped), "hashes": {}}
        else:
            (root / name).write_bytes(raw)
        entries.append(entry)
    (root / "index.json").write_text(json.dumps({"shards": entries, "version": 2}))
    return root


def test_all_supported_encodings(tmp_path):
    columns = {"id": "int32", "big": "uint64", "score": "float64", "half": "float16", "n": "int",
               "meta": "json", "blob": "bytes", "arr": "ndarray", "mat": "ndarray:int16:2,3",
               "digits": "str_int", "name": "str"}
    sizes = [4, 8, 8, 2, 8, None, None, None, 12, None, None]
    arr = np.arange(600, dtype=np.float32).reshape(2, 300)  # dynamic dtype and a uint16 shape
    mat = np.array([[1, -2, 3], [4, 5, -6]], np.int16)
    row = [np.int32(-7).tobytes(), np.uint64(2**63).tobytes(), np.float64(0.25).tobytes(),
           np.float16(1.5).tobytes(), np.int64(-(2**40)).tobytes(), b'{"a": [1, 2]}', b"\x00\xff",
           bytes([34, (2 << 2) | 1]) + np.array([2, 300], np.uint16).tobytes() + arr.tobytes(),
           mat.tobytes(), b"123456789012345678901234567890", "héllo".encode()]
    ds = MDSDataset(_write(tmp_path / "d", columns, sizes, [[row], [row, row]], compression="zstd:7"))
    assert len(ds) == 3
    s = ds[2]
    assert s["id"] == -7 and s["big"] == 2**63 and s["score"] == 0.25 and s["half"] == 1.5
    assert s["n"] == -(2**40) and type(s["n"]) is int
    assert s["meta"] == {"a": [1, 2]} and s["blob"] == b"\x00\xff" and s["name"] == "héllo"
    assert s["digits"] == 123456789012345678901234567890
    np.testing.assert_array_equal(s["arr"], arr)
    assert s["arr"].dtype == np.float32 and s["arr"].flags.writeable
    np.testing.assert_array_equal(s["mat"], mat)


def test_raw_copy_beside_a_compressed_shard_is_used(tmp_path, monkeypatch):
    root = _write(tmp_path / "d", {"text": "str"}, [None], [[[b"hi"]]], compression="zstd")
    (root / "shard.00000.mds").write_bytes(_shard_bytes([[b"hi"]], [None]))
    monkeypatch.setattr(mds, "_decompress", lambda data, c: pytest.fail("should read the raw copy") if c else data)
    assert MDSDataset(root)[0] == {"text": "hi"}


def test_unknown_encoding_is_named(tmp_path):
    root = _write(tmp_path / "d", {"text": "str", "x": "quaternion"}, [None, None], [[[b"a", b"b"]]])
    with pytest.raises(UserError, match="unknown MDS column encoding 'quaternion'"):
        MDSDataset(root)


def test_pickle_is_refused(tmp_path):
    root = _write(tmp_path / "d", {"obj": "pkl"}, [None], [[[b"x"]]])
    with pytest.raises(UserError, match="pickle"):
        MDSDataset(root)


def test_bad_folders(tmp_path):
    with pytest.raises(UserError, match="index.json does not exist"):
        MDSDataset(tmp_path)
    (tmp_path / "index.json").write_text("{broken")
    with pytest.raises(UserError, match="not valid JSON"):
        MDSDataset(tmp_path)
    (tmp_path / "index.json").write_text('{"shards": [{"column_names": ["a"]}]}')
    with pytest.raises(UserError, match="malformed shard entry"):
        MDSDataset(tmp_path)
    root = _write(tmp_path / "d", {"text": "str"}, [None], [[[b"a"]]])
    (root / "shard.00000.mds").unlink()
    with pytest.raises(UserError, match="does not exist"):
        MDSDataset(root)


def test_sample_count_mismatch_is_reported(tmp_path):
    root = _write(tmp_path / "d", {"text": "str"}, [None], [[[b"a"], [b"b"]]])
    index = json.loads((root / "index.json").read_text())
    index["shards"][0]["samples"] = 3
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="holds 2 samples, the index says 3"):
        MDSDataset(root)[0]


def test_shards_whose_columns_truly_differ_are_refused(tmp_path):
    root = _write(tmp_path / "a", {"id": "str", "input_ids": "ndarray:uint16:2"}, [None, None],
                  [[[b"x", np.array([1, 2], np.uint16).tobytes()]]] * 2)
    index = json.loads((root / "index.json").read_text())
    index["shards"][1]["column_encodings"] = ["str", "str"]  # ids as text in the second shard
    (root / "index.json").write_text(json.dumps(index))
    with pytest.raises(UserError, match="differ from the first shard's"):
        MDSDataset(root)
    index["shards"][1]["column_encodings"] = ["str", "ndarray:uint32:2"]  # only the int width differs: fine
    index["shards"][1]["raw_data"]["basename"] = "shard.00001.mds"
    (root / "shard.00001.mds").write_bytes(_shard_bytes([[b"y", np.array([3, 70000], np.uint32).tobytes()]], [None, None]))
    index["shards"][1]["raw_data"]["bytes"] = (root / "shard.00001.mds").stat().st_size
    (root / "index.json").write_text(json.dumps(index))
    ds = MDSDataset(root)
    assert ds[0]["input_ids"].tolist() == [1, 2] and ds[1]["input_ids"].tolist() == [3, 70000]
