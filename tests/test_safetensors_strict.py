"""The strict safetensors reader: every malformed header is refused with a CheckpointError
naming the file and the tensor or field; F16 and BF16 round-trip; files written by the
`safetensors` package read back (and ours read in it) where it is installed."""
import json
import os
import stat
import struct

import numpy as np
import pytest

from tensorlite.serialization import CheckpointError, load_file, save_file


def raw_file(path, header, body=b"", header_bytes=None):
    """A file with exactly this header (a dict, or raw bytes) and body."""
    h = header_bytes if header_bytes is not None else json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + body)
    return str(path)


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


F32x12 = np.arange(12, dtype=np.float32).tobytes()  # 48 bytes


# (case id, header, body, what the message must name)
MALFORMED = [
    ("relabelled-dtype-size", {"w": entry("F64", [3, 4], 0, 48)}, F32x12, ["'w'", "F64", "96 bytes"]),
    ("negative-shape", {"w": entry("F32", [-1, 4], 0, 48)}, F32x12, ["'w'", "negative"]),
    ("float-shape", {"w": entry("F32", [3.0, 4], 0, 48)}, F32x12, ["'w'", "shape"]),
    ("bool-shape", {"w": entry("F32", [True, 4], 0, 16)}, F32x12[:16], ["'w'", "shape"]),
    ("shape-not-a-list", {"w": entry("F32", "3,4", 0, 48)}, F32x12, ["'w'", "shape"]),
    ("overlap", {"a": entry("F32", [6], 0, 24), "b": entry("F32", [6], 16, 40)},
     F32x12[:40], ["overlaps"]),
    ("gap", {"a": entry("F32", [4], 0, 16), "b": entry("F32", [4], 32, 48)}, F32x12,
     ["belong to no tensor"]),
    ("trailing-bytes", {"a": entry("F32", [4], 0, 16)}, F32x12, ["trailing"]),
    ("past-the-end", {"a": entry("F32", [16], 0, 64)}, F32x12, ["'a'", "64"]),
    ("reversed-offsets", {"a": entry("F32", [0], 8, 0)}, F32x12[:8], ["'a'", "begin <= end"]),
    ("negative-offset", {"a": entry("F32", [2], -8, 0)}, F32x12[:8], ["'a'", "data_offsets"]),
    ("three-offsets", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}},
     F32x12[:8], ["'a'", "data_offsets"]),
    ("string-offsets", {"a": {"dtype": "F32", "shape": [2], "data_offsets": ["0", "8"]}},
     F32x12[:8], ["'a'", "data_offsets"]),
    ("unknown-dtype", {"a": entry("F8_E4M3X", [4], 0, 4)}, F32x12[:4], ["'a'", "F8_E4M3X", "known"]),
    ("dtype-not-a-string", {"a": entry(4, [1], 0, 4)}, F32x12[:4], ["'a'", "dtype"]),
    ("missing-dtype", {"a": {"shape": [1], "data_offsets": [0, 4]}}, F32x12[:4], ["'a'", "dtype"]),
    ("missing-shape", {"a": {"dtype": "F32", "data_offsets": [0, 4]}}, F32x12[:4], ["'a'", "shape"]),
    ("unknown-field", {"a": {**entry("F32", [1], 0, 4), "scale": 2}}, F32x12[:4], ["'a'", "scale"]),
    ("entry-not-an-object", {"a": [1, 2]}, b"", ["'a'", "object"]),
    ("header-a-list", [1, 2], b"", ["JSON object"]),
    ("metadata-not-strings", {"__metadata__": {"step": 3}}, b"", ["__metadata__"]),
    ("metadata-a-list", {"__metadata__": ["a"]}, b"", ["__metadata__"]),
    ("bool-bytes", {"m": entry("BOOL", [4], 0, 4)}, b"\x00\x01\x02\x00", ["'m'", "BOOL"]),
]


@pytest.mark.parametrize("case, header, body, needles", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_headers_are_refused_naming_the_tensor_or_field(tmp_path, case, header, body, needles):
    p = raw_file(tmp_path / "bad.safetensors", header, body)
    with pytest.raises(CheckpointError) as e:
        load_file(p)
    msg = str(e.value)
    assert "bad.safetensors" in msg and len(msg.splitlines()) == 1, msg
    for n in needles:
        assert n in msg, msg


def test_duplicate_keys_are_refused(tmp_path):
    h = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},' \
        b'"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    p = raw_file(tmp_path / "dup.safetensors", None, F32x12[:4], header_bytes=h)
    with pytest.raises(CheckpointError, match="names 'w' twice"):
        load_file(p)


def test_a_huge_header_length_is_refused_before_allocating(tmp_path):
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", 2 ** 62) + b"{}")
    with pytest.raises(CheckpointError, match="header length .* limit"):
        load_file(str(p))


def test_same_size_relabel_f32_as_i32_reads_as_int32_and_is_refused_by_a_model(tmp_path):
    # a header that calls float bytes I32 is self-consistent; the checkpoint loader's dtype
    # check (checkpoint.load_model_state) is what stops it being cast into float weights
    from tensorlite import nn
    from tensorlite.checkpoint import load_model_state
    p = raw_file(tmp_path / "i32.safetensors", {"weight": entry("I32", [2, 3], 0, 24),
                                                "bias": entry("F32", [2], 24, 32)}, F32x12[:32])
    arrays, _ = load_file(p)
    assert arrays["weight"].dtype == np.int32
    with pytest.raises(CheckpointError, match="'weight' has dtype int32"):
        load_model_state(nn.Linear(3, 2), arrays, p)


def test_empty_tensors_and_zero_dims_are_fine(tmp_path):
    p = str(tmp_path / "e.safetensors")
    save_file({"a": np.zeros((0, 3), np.float32), "b": np.ones(2, np.float32),
               "c": np.zeros((2, 0), np.int64), "s": np.array(3.5, np.float64)}, p)
    got, _ = load_file(p)
    assert got["a"].shape == (0, 3) and got["c"].shape == (2, 0) and got["s"].shape == ()
    assert got["s"] == 3.5


ALL_DTYPES = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]


def test_every_numpy_dtype_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {np.dtype(d).name: (rng.standard_normal((3, 5)) * 50).astype(d) for d in ALL_DTYPES}
    p = str(tmp_path / "all.safetensors")
    save_file(arrays, p)
    got, _ = load_file(p)
    for k, v in arrays.items():
        assert got[k].dtype == v.dtype and got[k].flags.writeable
        np.testing.assert_array_equal(got[k], v)


def test_f16_round_trip_is_exact(tmp_path):
    a = np.array([0.0, -0.0, 1e-4, 65504.0, np.inf, -np.inf], np.float16)
    p = str(tmp_path / "h.safetensors")
    save_file({"h": a}, p)
    got, _ = load_file(p)
    assert got["h"].tobytes() == a.tobytes()


def test_bf16_round_trip_or_a_clear_refusal(tmp_path, monkeypatch):
    ml = pytest.importorskip("ml_dtypes", reason="BF16 needs ml_dtypes")
    a = np.array([1.0, -2.5, 3.140625, 1e30], dtype=ml.bfloat16)
    p = str(tmp_path / "bf.safetensors")
    save_file({"b": a}, p)
    got, _ = load_file(p)
    assert got["b"].dtype == a.dtype and got["b"].tobytes() == a.tobytes()
    import tensorlite.serialization as ser
    monkeypatch.setattr(ser, "_bf16", lambda: None)  # as if ml_dtypes were not installed
    with pytest.raises(CheckpointError, match="'b' has dtype BF16, which needs the ml_dtypes "
                                              "package.*pip install ml_dtypes"):
        load_file(p)


def test_bf16_without_ml_dtypes_is_refused_by_name(tmp_path, monkeypatch):
    import tensorlite.serialization as ser
    monkeypatch.setattr(ser, "_bf16", lambda: None)
    p = raw_file(tmp_path / "bf.safetensors", {"x": entry("BF16", [2], 0, 4)}, b"\x80\x3f\x00\x40")
    with pytest.raises(CheckpointError, match="'x' has dtype BF16.*ml_dtypes"):
        load_file(p)


def test_written_files_follow_the_umask_and_keep_an_existing_mode(tmp_path):
    old = os.umask(0o027)
    try:
        p = str(tmp_path / "m.safetensors")
        save_file({"a": np.ones(2, np.float32)}, p)
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o640
        os.chmod(p, 0o604)
        save_file({"a": np.zeros(2, np.float32)}, p)
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o604
    finally:
        os.umask(old)
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    link = tmp_path / "m.safetensors"
    link.symlink_to(outside)
    save_file({"a": np.ones(2, np.float32)}, str(link))
    assert outside.read_text() == "keep me"
    assert not link.is_symlink() and load_file(str(link))[0]["a"].tolist() == [1.0, 1.0]


# ---- the reference implementation -----------------------------------------------------

def test_the_safetensors_package_reads_ours_and_we_read_its(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is optional")
    rng = np.random.default_rng(1)
    arrays = {np.dtype(d).name: (rng.standard_normal((2, 3)) * 9).astype(d) for d in ALL_DTYPES}
    arrays["empty"] = np.zeros((0, 2), np.float32)
    ours, theirs = str(tmp_path / "ours.safetensors"), str(tmp_path / "theirs.safetensors")
    save_file(arrays, ours, metadata={"k": "v"})
    for k, v in st.load_file(ours).items():
        np.testing.assert_array_equal(v, arrays[k])
    st.save_file(arrays, theirs, metadata={"k": "v"})
    got, meta = load_file(theirs)
    assert meta == {"k": "v"}
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)


def test_bf16_interop_with_the_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is optional")
    ml = pytest.importorskip("ml_dtypes", reason="BF16 needs ml_dtypes")
    a = np.array([[1.0, 2.0], [-0.5, 7.0]], dtype=ml.bfloat16)
    p = str(tmp_path / "bf.safetensors")
    save_file({"b": a}, p)
    with open(p, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        assert json.loads(f.read(n))["b"]["dtype"] == "BF16"
    try:
        back = st.load_file(p)["b"]
    except (TypeError, ValueError) as e:  # the package's numpy front end may lack bfloat16
        pytest.skip(f"safetensors.numpy cannot return bfloat16 here: {e}")
    assert back.tobytes() == a.tobytes()
