"""tensorlite.save / tensorlite.load with torch.save's habits: nested checkpoints (nanoGPT's
shape), shared tensors, map_location, file objects, and the errors -- all without pickle."""
import io
import math
import os
import pickle
import zipfile

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.nn as nn
from tensorlite.serialization import STRUCTURE_KEY, CheckpointError, load_file, save_file


class TiedLM(nn.Module):
    """The parts of nanoGPT that matter to a checkpoint: a tied embedding/head, a norm, a
    buffer-free MLP, trained with AdamW in two param groups."""

    def __init__(self, vocab=11, dim=8):
        super().__init__()
        self.wte = nn.Embedding(vocab, dim)
        self.ln = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.wte.weight = self.head.weight

    def forward(self, idx, targets):
        x = self.fc(self.ln(self.wte(idx))).relu()
        logits = self.head(x)
        return tl.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def _optimizer(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return tl.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                           {"params": other, "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.95))


def _batches(n):
    rng = np.random.default_rng(0)
    return [(tl.tensor(rng.integers(0, 11, (4, 6))), tl.tensor(rng.integers(0, 11, (4, 6))))
            for _ in range(n)]


def _train(model, opt, batches):
    losses = []
    for x, y in batches:
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_nested_values_round_trip_with_their_types(tmp_path):
    obj = {"ints": {0: "zero", 7: [1, 2, (3, 4.5)]}, "mixed": {"0": "str key", 0: "int key"},
           "floats": [0.1, -0.0, float("nan"), math.inf, -math.inf, 1e300, 2.0],
           "flags": (True, False, None), "text": "ünïcode \"quoted\"", "big": 2 ** 70,
           "np_scalars": [np.float32(0.5), np.int64(3), np.bool_(True)],
           "tensors": {"f64": tl.tensor([1.5], dtype=tl.float64), "i": tl.arange(3),
                       "mask": tl.tensor([True, False]), "scalar": tl.tensor(1.23),
                       "grad": tl.randn(2, requires_grad=True)},
           "array": np.arange(6, dtype=np.int32).reshape(2, 3), "empty": [], "nothing": {}}
    p = tmp_path / "ckpt.pt"
    tl.save(obj, p)
    got = tl.load(p)
    assert got["ints"] == {0: "zero", 7: [1, 2, (3, 4.5)]}
    assert got["mixed"] == {"0": "str key", 0: "int key"}
    f = got["floats"]
    assert f[0] == 0.1 and math.copysign(1, f[1]) == -1 and math.isnan(f[2])
    assert f[3:] == [math.inf, -math.inf, 1e300, 2.0] and isinstance(f[6], float)
    assert got["flags"] == (True, False, None) and isinstance(got["flags"], tuple)
    assert got["text"] == obj["text"] and got["big"] == 2 ** 70
    assert got["np_scalars"] == [0.5, 3, True] and type(got["np_scalars"][2]) is bool
    assert got["empty"] == [] and got["nothing"] == {}
    for k, t in obj["tensors"].items():
        back = got["tensors"][k]
        assert isinstance(back, tl.Tensor) and back.dtype is t.dtype and back.shape == t.shape
        assert not back.requires_grad
        _same(back.detach(), t.detach())
    # arrays come back as Tensors, as torch.load gives tensors
    assert isinstance(got["array"], tl.Tensor) and got["array"].dtype is tl.int32
    _same(got["array"], obj["array"])
    assert list(got) == list(obj)  # insertion order kept


def test_tensor_names_are_paths_and_the_structure_is_json_in_metadata(tmp_path):
    p = str(tmp_path / "c.pt")
    tl.save({"model": {"wte.weight": tl.ones(2)}, "optimizer": {"state": {0: {"exp_avg": tl.zeros(2)}}},
             "iter_num": 5}, p)
    arrays, meta = load_file(p)
    assert sorted(arrays) == ["model/wte.weight", "optimizer/state/0/exp_avg"]
    assert set(meta) == {STRUCTURE_KEY}
    assert b"pickle" not in open(p, "rb").read()


def test_shared_tensors_are_stored_once_and_come_back_as_one_object(tmp_path):
    model = TiedLM()
    sd = model.state_dict()
    assert sd["wte.weight"] is not sd["head.weight"]  # state_dict detaches each name
    p = str(tmp_path / "tied.pt")
    tl.save({"model": sd, "again": [sd["fc.weight"]]}, p)
    arrays, _ = load_file(p)
    assert [k for k in arrays if k.endswith("wte.weight") or k.endswith("head.weight")] == ["model/wte.weight"]
    assert "again/0" not in arrays
    got = tl.load(p)
    assert got["model"]["wte.weight"] is got["model"]["head.weight"]
    assert got["again"][0] is got["model"]["fc.weight"]
    fresh = TiedLM()
    fresh.load_state_dict(got["model"])
    _same(fresh.head.weight.detach(), model.head.weight.detach())


def test_a_flat_dict_with_a_tied_weight_keeps_one_copy_like_save_model(tmp_path):
    p = str(tmp_path / "sd.safetensors")
    tl.save(TiedLM().state_dict(), p)
    arrays, meta = load_file(p)
    assert "head.weight" not in arrays and STRUCTURE_KEY in meta
    got = tl.load(p)
    assert got["head.weight"] is got["wte.weight"]


def test_nanogpt_checkpoint_round_trips_and_training_continues_identically(tmp_path):
    tl.manual_seed(0)
    model = TiedLM()
    opt = _optimizer(model)
    batches = _batches(6)
    _train(model, opt, batches[:3])
    checkpoint = {"model": model.state_dict(), "optimizer": opt.state_dict(),
                  "model_args": dict(n_layer=1, n_head=1, n_embd=8, block_size=6, bias=False,
                                     vocab_size=11, dropout=0.0),
                  "iter_num": 5, "best_val_loss": tl.tensor(1.23),
                  "config": {"dataset": "shakespeare_char", "compile": False, "wandb_run_name": None,
                             "learning_rate": 1e-3, "max_iters": 5000, "beta2": 0.99}}
    path = os.path.join(tmp_path, "ckpt.pt")
    tl.save(checkpoint, path)
    want = _train(model, opt, batches[3:])

    loaded = tl.load(path, map_location="cpu")
    assert loaded["iter_num"] == 5 and loaded["model_args"] == checkpoint["model_args"]
    assert loaded["config"] == checkpoint["config"]
    assert isinstance(loaded["best_val_loss"], tl.Tensor) and loaded["best_val_loss"].shape == ()
    assert abs(loaded["best_val_loss"].item() - 1.23) < 1e-6
    sd_opt = loaded["optimizer"]
    assert set(sd_opt["state"]) == set(checkpoint["optimizer"]["state"])
    assert all(isinstance(k, int) for k in sd_opt["state"])
    assert sd_opt["param_groups"] == checkpoint["optimizer"]["param_groups"]
    assert isinstance(sd_opt["param_groups"][0]["betas"], tuple)

    fresh = TiedLM()
    fresh.load_state_dict(loaded["model"])
    fresh_opt = _optimizer(fresh)
    fresh_opt.load_state_dict(sd_opt)
    got = _train(fresh, fresh_opt, batches[3:])
    assert got == want
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        _same(a, b)


def test_file_objects_in_and_out(tmp_path):
    obj = {"w": [tl.ones(3)], "n": 1}
    buf = io.BytesIO()
    buf.write(b"prefix")  # torch.load reads from the current position, and so do we
    tl.save(obj, buf)
    buf.seek(6)
    got = tl.load(buf)
    assert got["n"] == 1 and got["w"][0].tolist() == [1.0, 1.0, 1.0]
    p = tmp_path / "f.pt"
    with open(p, "wb") as f:
        tl.save(obj, f)
    with open(p, "rb") as f:
        assert tl.load(f)["n"] == 1

    class Stream:  # read() only, no seek: a pipe or a socket
        def __init__(self, data):
            self.data = data

        def read(self, n=-1):
            out, self.data = self.data, b""
            return out
    assert tl.load(Stream(p.read_bytes()))["n"] == 1
    with open(p, "r") as f, pytest.raises(TypeError, match="binary"):
        tl.load(f)
    with open(tmp_path / "t.txt", "w") as f, pytest.raises(TypeError, match="binary"):
        tl.save(obj, f)


def test_map_location_forms(tmp_path, monkeypatch):
    p = str(tmp_path / "m.pt")
    tl.save({"a": [tl.ones(2)]}, p)
    for ml in (None, "cpu", tl.device("cpu"), {"cuda:0": "cpu"}, lambda t, loc: None,
               lambda t, loc: t):
        t = tl.load(p, map_location=ml)["a"][0]
        assert t.device == tl.device("cpu") and t.tolist() == [1.0, 1.0]
    seen = []
    tl.load(p, map_location=lambda t, loc: seen.append(loc) or t)
    assert seen == ["cpu"]
    with pytest.raises(TypeError, match="map_location"):
        tl.load(p, map_location=3)
    with pytest.raises(TypeError, match="map_location returned"):
        tl.load(p, map_location=lambda t, loc: "cpu")


def test_tensors_saved_on_cuda_remember_it_and_map_location_moves_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORLITE_EMULATE_CUDA", "1")  # the cuda code path on NumPy
    p = str(tmp_path / "gpu.pt")
    tl.save({"w": [tl.ones(2, device="cuda")]}, p)
    assert tl.load(p)["w"][0].device.type == "cuda"
    monkeypatch.delenv("TENSORLITE_EMULATE_CUDA")
    for ml in ("cpu", {"cuda": "cpu"}, {"cuda:0": tl.device("cpu")}):
        assert tl.load(p, map_location=ml)["w"][0].device.type == "cpu"
    if not tl.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            tl.load(p)
        with pytest.raises(RuntimeError, match="cuda"):
            tl.load(p, map_location="cuda")


def _fn():
    pass


@pytest.mark.parametrize("obj, match", [
    ({"config": {"fn": _fn}}, r"obj\['config'\]\['fn'\] is a function; tensorlite.save stores tensors"),
    ({"config": {"fn": len}}, r"obj\['config'\]\['fn'\] is a function"),
    ({"s": {1, 2}}, r"obj\['s'\] is a set"),
    ({"opt": {"state": {0: [b"raw"]}}}, r"obj\['opt'\]\['state'\]\[0\]\[0\] is a bytes"),
    ({"m": TiedLM}, r"obj\['m'\] is a class"),
    ({"m": nn.Linear(2, 2)}, r"obj\['m'\] is a Linear"),
    ({"k": {1.5: 0}}, r"obj\['k'\] has a key 1.5 of type float; dict keys must be str or int"),
    ({"k": {(1, 2): 0}}, r"obj\['k'\] has a key \(1, 2\) of type tuple"),
    ({"k": {True: 0}}, r"key True of type bool"),
    ({"c": np.array([1 + 2j])}, r"obj\['c'\] has dtype complex128"),
    ({"u": np.array(["a"])}, r"obj\['u'\] has dtype <U1"),
])
def test_what_cannot_be_saved_is_named_by_its_path(tmp_path, obj, match):
    p = tmp_path / "bad.pt"
    with pytest.raises((TypeError, ValueError), match=match):
        tl.save(obj, p)
    assert not p.exists() and os.listdir(tmp_path) == []


def test_a_cycle_is_an_error_not_a_hang(tmp_path):
    a = {"x": 1}
    a["self"] = [a]
    with pytest.raises(ValueError, match=r"obj\['self'\]\[0\] contains itself"):
        tl.save(a, tmp_path / "c.pt")


def test_weights_only_false_is_refused(tmp_path):
    p = tmp_path / "w.pt"
    tl.save({"a": 1}, p)
    assert tl.load(p, weights_only=True) == {"a": 1}
    with pytest.raises(ValueError, match="never unpickles"):
        tl.load(p, weights_only=False)


def test_a_pickle_or_zip_file_is_refused_clearly(tmp_path):
    z = tmp_path / "zip.pt"
    with zipfile.ZipFile(z, "w") as f:
        f.writestr("archive/data.pkl", pickle.dumps({"a": 1}))
    pk = tmp_path / "legacy.pt"
    pk.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    for p in (z, pk):
        with pytest.raises(CheckpointError, match="not a tensorlite/safetensors file.*never unpickles"):
            tl.load(p)


def test_a_torch_save_file_is_refused_clearly(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is an optional oracle")
    p = tmp_path / "torch.pt"
    torch.save({"model": {"w": torch.ones(2)}, "iter_num": 5}, p)
    with pytest.raises(CheckpointError, match="torch.pt: not a tensorlite/safetensors file"):
        tl.load(p)


@pytest.mark.parametrize("structure, match", [
    ("{", "not JSON"), ('{"format":"other","root":null}', "format"),
    ('{"format":"tensorlite.save/1","root":{"tensor":"nope","device":"cpu"}}', "does not hold"),
    ('{"format":"tensorlite.save/1","root":{"set":[1]}}', "unknown node"),
    ('{"format":"tensorlite.save/1","root":{"dict":[["a",1],["a",2]]}}', "repeated"),
    ('{"format":"tensorlite.save/1","root":{"float":"1.0"}}', "unknown node"),
    ('{"format":"tensorlite.save/1","root":[1]}', "unexpected"),
    ('{"format":"tensorlite.save/1","root":1}', "'x' is in the file but not in the structure"),
])
def test_a_corrupted_structure_is_refused_naming_the_file(tmp_path, structure, match):
    p = str(tmp_path / "s.pt")
    save_file({"x": np.ones(1, np.float32)}, p, metadata={STRUCTURE_KEY: structure})
    with pytest.raises(CheckpointError, match=f"s.pt.*{match}"):
        tl.load(p)


def test_metadata_is_kept_and_the_structure_key_is_reserved(tmp_path):
    p = str(tmp_path / "meta.pt")
    tl.save({"a": [tl.ones(1)]}, p, metadata={"step": "3"})
    assert load_file(p)[1]["step"] == "3"
    with pytest.raises(ValueError, match="reserved|tensorlite's own"):
        tl.save({"a": 1}, p, metadata={STRUCTURE_KEY: "x"})


def test_a_bare_tensor_or_list_or_number_is_an_object_too(tmp_path):
    p = tmp_path / "t.pt"
    for obj in (tl.arange(3), [tl.ones(1), tl.ones(1)], 3.5, None, {"a/b": tl.ones(1), "a": {"b": tl.zeros(1)}}):
        tl.save(obj, p)
        got = tl.load(p)
        if isinstance(obj, dict):  # two paths spelling "a/b" get two names
            assert got["a/b"].item() == 1.0 and got["a"]["b"].item() == 0.0
        elif isinstance(obj, list):
            assert [t.item() for t in got] == [1.0, 1.0] and got[0] is not got[1]
        elif isinstance(obj, tl.Tensor):
            assert got.tolist() == [0, 1, 2]
        else:
            assert got == obj
