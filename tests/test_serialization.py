"""Our safetensors writer/reader: round trips, interoperates with the reference library
when it is installed, and refuses damaged files with an error naming the file."""
import os

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.serialization import CheckpointError, load_file, save_file

ARRAYS = {
    "a.weight": np.arange(12, dtype=np.float32).reshape(3, 4),
    "b": np.array([1.5, -2.0], dtype=np.float64),
    "c": np.array(7, dtype=np.int64),
    "empty": np.zeros((0, 3), dtype=np.float32),
    "mask": np.array([True, False]),
    "h": np.array([0.5], dtype=np.float16),
}


def test_round_trip_keeps_names_dtypes_shapes_values(tmp_path):
    p = str(tmp_path / "x.safetensors")
    save_file(ARRAYS, p, metadata={"step": 3})
    got, meta = load_file(p)
    assert meta == {"step": "3"}
    assert set(got) == set(ARRAYS)
    for k, v in ARRAYS.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape
        np.testing.assert_array_equal(got[k], v)


def test_tensor_level_save_load(tmp_path):
    p = str(tmp_path / "t.safetensors")
    t = {"w": tl.randn(2, 3), "i": tl.arange(4)}
    tl.save(t, p)
    back = tl.load(p)
    assert back["w"].dtype is tl.float32 and back["i"].dtype is tl.int64
    np.testing.assert_array_equal(back["w"].numpy(), t["w"].numpy())


def test_no_temporary_file_left_and_old_file_kept_on_failure(tmp_path):
    p = str(tmp_path / "x.safetensors")
    save_file({"a": np.ones(3, np.float32)}, p)
    before = open(p, "rb").read()
    with pytest.raises(TypeError):
        save_file({"bad": np.array(["s"])}, p)
    assert open(p, "rb").read() == before
    assert os.listdir(tmp_path) == ["x.safetensors"]


def test_interoperates_with_the_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is optional")
    ours, theirs = str(tmp_path / "ours.safetensors"), str(tmp_path / "theirs.safetensors")
    save_file(ARRAYS, ours)
    loaded = st.load_file(ours)
    for k, v in ARRAYS.items():
        np.testing.assert_array_equal(loaded[k], v)
    st.save_file(ARRAYS, theirs)
    got, _ = load_file(theirs)
    for k, v in ARRAYS.items():
        np.testing.assert_array_equal(got[k], v)


@pytest.mark.parametrize("damage", ["empty", "short_header", "bad_json", "truncated_data"])
def test_damaged_files_raise_naming_the_file(tmp_path, damage):
    p = str(tmp_path / "m.safetensors")
    save_file(ARRAYS, p)
    data = open(p, "rb").read()
    bad = {"empty": b"", "short_header": data[:20], "bad_json": data[:8] + b"{" * (len(data) - 8),
           "truncated_data": data[:-5]}[damage]
    open(p, "wb").write(bad)
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_file(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_file(str(tmp_path / "nope.safetensors"))


def test_flat_dicts_keep_the_plain_layout_and_interoperate(tmp_path):
    # tl.save of {str: tensor} writes exactly what save_file writes (no structure
    # metadata), so the safetensors package reads it, and tl.load reads its files
    ours, plain = str(tmp_path / "ours.safetensors"), str(tmp_path / "plain.safetensors")
    tl.save({k: tl.tensor(v) for k, v in ARRAYS.items() if k != "h"} | {"h": ARRAYS["h"]}, ours)
    save_file(ARRAYS, plain)
    assert open(ours, "rb").read() == open(plain, "rb").read()
    back = tl.load(plain)
    assert list(back) == sorted(ARRAYS) and all(isinstance(t, tl.Tensor) for t in back.values())
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is optional")
    for k, v in st.load_file(ours).items():
        np.testing.assert_array_equal(v, ARRAYS[k])
    theirs = str(tmp_path / "theirs.safetensors")
    st.save_file(ARRAYS, theirs, metadata={"format": "np"})
    for k, t in tl.load(theirs).items():
        np.testing.assert_array_equal(t.numpy(), ARRAYS[k])


def test_nested_files_are_valid_safetensors_for_the_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is optional")
    p = str(tmp_path / "ckpt.pt")
    tl.save({"model": {"w": tl.ones(2)}, "iter_num": 5}, p)
    assert list(st.load_file(p)) == ["model/w"]
