"""GPT-2 from Hugging Face folders, with transformers as the oracle.

The committed folder tests/data/pretrained/tiny-gpt2 (a random GPT2LMHeadModel, every Conv1D
but c_attn square) and transformers' logits for it (tests/make_pretrained_refs.py) run
without torch. The live tests (transformers installed) check the other direction
(save_pretrained -> GPT2LMHeadModel) and config fields the tiny folder does not vary."""
import json
import os
import struct

import numpy as np
import pytest
from _nn_helpers import kernels, require_provider

import tensorlite as tl
from tensorlite.models import GPT, GPTConfig
from tensorlite.pretrained import PretrainedError
from tensorlite.serialization import load_file, save_file

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pretrained")
TINY = os.path.join(DATA, "tiny-gpt2")
TOL = 1e-5


@pytest.fixture(scope="module")
def refs():
    return load_file(os.path.join(DATA, "tiny-gpt2-refs.safetensors"))[0]


@pytest.fixture(scope="module")
def tiny():
    return tl.from_pretrained(TINY)


def logits_of(model, ids):
    with tl.no_grad():
        lg, _ = model(tl.tensor(ids))
    return lg.detach().numpy()


def hf_folder(path, config, tensors):
    """A folder in HF's layout, written with tensorlite's own writer."""
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def tiny_parts():
    tensors, _ = load_file(os.path.join(TINY, "model.safetensors"))
    with open(os.path.join(TINY, "config.json")) as f:
        return json.load(f), tensors


def refusal(path, *needles):
    """The one-line message from_pretrained refuses path with, checked for needles."""
    with pytest.raises(PretrainedError) as e:
        tl.from_pretrained(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n in msg, msg
    return msg


# ---- the tiny folder against transformers' stored logits ---------------------------------------
@pytest.mark.parametrize("provider", ["numpy", "cpp", "triton"])
def test_tiny_logits_match_transformers(provider, refs):
    require_provider(provider)
    with kernels(provider):
        model = GPT.from_pretrained(TINY)
        names = ["one", "batch"] if provider == "triton" else ["one", "batch", "full"]
        for n in names:  # (the interpreter is slow: no full-length sequence for triton)
            d = np.abs(logits_of(model, refs["ids_" + n]) - refs["logits_" + n]).max()
            assert d < TOL, (provider, n, d)


def test_loaded_model_is_what_the_config_says(tiny):
    c = tiny.config
    assert (c.vocab_size, c.block_size, c.n_layer, c.n_head, c.n_embd, c.n_inner) == (1000, 64, 2, 4, 64, 64)
    assert c.activation == "gelu_tanh" and c.layer_norm_eps == 1e-5 and c.tie_word_embeddings
    assert not tiny.training  # eval mode, as transformers returns it
    assert tiny.lm_head.weight is tiny.transformer.wte.weight
    stored, _ = load_file(os.path.join(TINY, "model.safetensors"))
    for name in ("attn.c_proj", "mlp.c_fc", "mlp.c_proj"):  # all square (64, 64): by name
        w = tiny.state_dict()[f"transformer.h.1.{name}.weight"].numpy()
        np.testing.assert_array_equal(w, stored[f"transformer.h.1.{name}.weight"].T)
    assert not any(k.endswith(("attn.bias", "masked_bias")) for k in tiny.state_dict()
                   if ".attn.c_" not in k)


def test_greedy_generation_cached_equals_uncached_and_transformers(tiny, refs):
    prompt = tl.tensor(refs["gen_prompt"])
    n = refs["gen_greedy"].shape[1] - prompt.shape[1]
    cached = tiny.generate(prompt, n, temperature=0, use_cache=True).numpy()
    uncached = tiny.generate(prompt, n, temperature=0, use_cache=False).numpy()
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached, refs["gen_greedy"])


# ---- the spellings of the same weights -------------------------------------------------------
def _unprefixed(config, tensors):  # GPT2Model's layout: no "transformer." prefix
    return config, {k[len("transformer."):]: v for k, v in tensors.items()}


def _head_stored(config, tensors):
    return config, dict(tensors, **{"lm_head.weight": tensors["transformer.wte.weight"]})


def _with_buffers(config, tensors):  # what older transformers versions saved
    extra = {f"transformer.h.{i}.attn.{b}": np.tril(np.ones((64, 64), np.float32))[None, None]
             for i in range(2) for b in ("bias", "masked_bias")}
    return config, dict(tensors, **extra)


def _n_ctx_only(config, tensors):  # the older config spelling of the context length
    c = {k: v for k, v in config.items() if k != "n_positions"}
    return dict(c, n_ctx=64), tensors


@pytest.mark.parametrize("variant", [_unprefixed, _head_stored, _with_buffers, _n_ctx_only])
def test_equivalent_folders_load_the_same(variant, tmp_path, refs):
    config, tensors = variant(*tiny_parts())
    model = tl.from_pretrained(hf_folder(tmp_path / "m", config, tensors))
    assert np.abs(logits_of(model, refs["ids_batch"]) - refs["logits_batch"]).max() < TOL


def test_sharded_folder(tmp_path, refs):
    config, tensors = tiny_parts()
    d = tmp_path / "sharded"
    d.mkdir()
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for fname, ks in shards.items():
        save_file({k: tensors[k] for k in ks}, str(d / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in ks})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (d / "config.json").write_text(json.dumps(config))
    model = tl.from_pretrained(d)
    assert np.abs(logits_of(model, refs["ids_batch"]) - refs["logits_batch"]).max() < TOL


def test_untied_head_is_used(tmp_path, refs):
    config, tensors = tiny_parts()
    head = np.random.default_rng(1).standard_normal((1000, 64)).astype(np.float32)
    model = tl.from_pretrained(hf_folder(tmp_path / "m", dict(config, tie_word_embeddings=False),
                                         dict(tensors, **{"lm_head.weight": head})))
    assert model.lm_head.weight is not model.transformer.wte.weight
    np.testing.assert_array_equal(model.lm_head.weight.detach().numpy(), head)
    refusal(hf_folder(tmp_path / "nohead", dict(config, tie_word_embeddings=False), tensors),
            "'lm_head.weight'", "missing")


def test_a_stored_head_that_differs_is_tied_with_a_warning(tmp_path, refs):
    config, tensors = tiny_parts()
    head = np.zeros((1000, 64), np.float32)
    with pytest.warns(UserWarning, match="tie_word_embeddings"):
        model = tl.from_pretrained(hf_folder(tmp_path / "m", config, dict(tensors, **{"lm_head.weight": head})))
    assert model.lm_head.weight is model.transformer.wte.weight
    assert np.abs(logits_of(model, refs["ids_one"]) - refs["logits_one"]).max() < TOL


# ---- a GPT-2-small-shaped folder (768 wide, vocab 50257, 1024 positions; 2 layers) --------------
SMALL = dict(model_type="gpt2", architectures=["GPT2LMHeadModel"], vocab_size=50257,
             n_positions=1024, n_embd=768, n_layer=2, n_head=12)
BIG = "model-00001-of-00002.safetensors"    # the embeddings, shared by every variant below
LAYERS = "model-00002-of-00002.safetensors"


def small_layer_tensors(rng, n_layer=2, C=768):
    t = {}
    for i in range(n_layer):
        p = f"h.{i}."
        for name, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
                            ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)),
                            ("attn.c_proj.bias", (C,)), ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                            ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                            ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
            t[p + name] = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
    t["ln_f.weight"] = np.ones(C, np.float32)
    t["ln_f.bias"] = np.zeros(C, np.float32)
    return t


def write_raw(path, entries):
    """A safetensors file from {name: (dtype string, shape, bytes)}: also dtypes that
    tensorlite's writer (rightly) cannot produce."""
    header, blobs, off = {}, [], 0
    for k, (dtype, shape, data) in entries.items():
        header[k] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """(folder, make_variant): make_variant(name, layers=..., config=...) shares the big
    embedding shard by a hard link and rewrites only the small parts."""
    root = tmp_path_factory.mktemp("gpt2small")
    rng = np.random.default_rng(0)
    emb = {"wte.weight": rng.standard_normal((50257, 768), dtype=np.float32) * 0.02,
           "wpe.weight": rng.standard_normal((1024, 768), dtype=np.float32) * 0.01}
    save_file(emb, str(root / BIG), metadata={"format": "pt"})
    layers = small_layer_tensors(rng)

    def make(name, layers=layers, config=SMALL, raw=None):
        d = root / name
        d.mkdir()
        try:
            os.link(root / BIG, d / BIG)
        except OSError:
            import shutil
            shutil.copy(root / BIG, d / BIG)
        if raw is not None:
            write_raw(str(d / LAYERS), raw)
            names = list(raw)
        else:
            save_file(layers, str(d / LAYERS), metadata={"format": "pt"})
            names = list(layers)
        wm = dict({k: BIG for k in emb}, **{k: LAYERS for k in names})
        (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": wm}))
        (d / "config.json").write_text(json.dumps(config))
        return d
    return make("ok"), make, emb, layers


def test_gpt2_small_shapes_load(small_folder):
    folder, _, emb, layers = small_folder
    model = tl.from_pretrained(folder)
    c = model.config
    assert (c.vocab_size, c.block_size, c.n_embd, c.n_layer, c.n_head, c.n_inner) == (50257, 1024, 768, 2, 12, None)
    assert c.activation == "gelu_tanh"  # gelu_new, HF's default when config.json says nothing
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["transformer.wte.weight"].numpy(), emb["wte.weight"])
    assert model.lm_head.weight is model.transformer.wte.weight
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        np.testing.assert_array_equal(sd[f"transformer.h.1.{name}.weight"].numpy(),
                                      layers[f"h.1.{name}.weight"].T)
    lg = logits_of(model, np.array([[464, 2068, 7586, 21831]]))
    assert lg.shape == (1, 4, 50257) and np.isfinite(lg).all()


def test_gpt2_small_refusals(small_folder):
    _, make, _, layers = small_folder
    missing = {k: v for k, v in layers.items() if k != "h.1.mlp.c_fc.bias"}
    refusal(make("missing", layers=missing), "'transformer.h.1.mlp.c_fc.bias'", "(3072,)", "missing")
    wrong = dict(layers, **{"h.0.mlp.c_fc.weight": np.zeros((768, 3000), np.float32)})
    refusal(make("wrong", layers=wrong), "'transformer.h.0.mlp.c_fc.weight'", "(768, 3000)", "(768, 3072)")
    extra = dict(layers, **{"h.2.ln_1.weight": np.ones(768, np.float32)})
    refusal(make("extra", layers=extra), "unexpected", "'transformer.h.2.ln_1.weight'", "n_layer=2")
    refusal(make("llama", config=dict(SMALL, model_type="llama")), "model_type 'llama'", "'gpt2'")
    raw = {k: ("F32", v.shape, v.tobytes()) for k, v in layers.items()}
    w = layers["h.1.attn.c_proj.weight"]
    raw["h.1.attn.c_proj.weight"] = ("BF16", w.shape, b"\0" * (2 * w.size))
    refusal(make("bf16", raw=raw), "'transformer.h.1.attn.c_proj.weight'", "BF16", "float32")
    refusal(make("gelu_quick", config=dict(SMALL, activation_function="quick_gelu")), "quick_gelu")
    refusal(make("inverse", config=dict(SMALL, scale_attn_by_inverse_layer_idx=True)),
            "scale_attn_by_inverse_layer_idx")


def test_paths_that_are_not_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    refusal("gpt2", "never downloads", "huggingface-cli download gpt2 --local-dir")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"\x80")
    refusal(tmp_path / "pickled", "safetensors only")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": {"n_layer": 2}}))
    refusal(tmp_path / "run", "tensorlite train")


# ---- config fields --------------------------------------------------------------------------
def test_old_configs_keep_todays_behaviour():
    old = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.0, bias=True)
    model = GPT(GPTConfig.from_dict(old))
    c = model.config
    assert (c.activation, c.layer_norm_eps, c.tie_word_embeddings, c.n_inner) == ("gelu_tanh", 1e-5, True, None)
    blk = model.transformer.h[0]
    assert blk.mlp.gelu.approximate == "tanh" and blk.ln_1.eps == 1e-5
    assert blk.mlp.c_fc.weight.shape == (32, 8)
    assert GPTConfig().vocab_size == 50304


def test_config_fields_build_the_network():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, activation="relu",
                          layer_norm_eps=1e-3, tie_word_embeddings=False, n_inner=12))
    blk = model.transformer.h[0]
    assert hasattr(blk.mlp, "relu") and blk.ln_2.eps == 1e-3 and model.transformer.ln_f.eps == 1e-3
    assert blk.mlp.c_fc.weight.shape == (12, 8)
    assert model.lm_head.weight is not model.transformer.wte.weight
    with pytest.raises(ValueError, match="activation"):
        GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, activation="swish"))


def test_save_pretrained_round_trip_without_torch(tmp_path, tiny, refs):
    tiny.save_pretrained(tmp_path / "out")
    stored, meta = load_file(str(tmp_path / "out" / "model.safetensors"))
    original, _ = load_file(os.path.join(TINY, "model.safetensors"))
    assert meta == {"format": "pt"} and set(stored) == set(original)  # no lm_head: tied
    for k in original:
        np.testing.assert_array_equal(stored[k], original[k])
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["model_type"] == "gpt2" and cfg["architectures"] == ["GPT2LMHeadModel"]
    assert cfg["n_inner"] == 64 and cfg["activation_function"] == "gelu_new"
    again = GPT.from_pretrained(tmp_path / "out")
    assert np.abs(logits_of(again, refs["ids_batch"]) - refs["logits_batch"]).max() < TOL
    with pytest.raises(PretrainedError, match="bias=False"):
        GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, bias=False)) \
            .save_pretrained(tmp_path / "nobias")


# ---- live: transformers itself --------------------------------------------------------------
@pytest.fixture
def transformers():
    pytest.importorskip("torch", reason="the live oracle needs torch")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return pytest.importorskip("transformers", reason="the live oracle needs transformers")


def hf_logits(model, ids):
    import torch
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


@pytest.mark.parametrize("extra", [
    dict(),
    dict(activation_function="gelu", layer_norm_epsilon=1e-3, n_inner=96),
    dict(activation_function="relu", tie_word_embeddings=False),
    dict(activation_function="gelu_pytorch_tanh", n_inner=None),
])
def test_transformers_folders_load(transformers, extra, tmp_path):
    import torch
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=48, n_layer=2, n_head=3,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **extra)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    ids = np.random.default_rng(0).integers(0, 97, (2, 20))
    ours = tl.from_pretrained(tmp_path / "hf")
    assert np.abs(logits_of(ours, ids) - hf_logits(hf, ids)).max() < TOL


@pytest.mark.parametrize("cfg", [
    dict(),
    dict(activation="gelu", layer_norm_eps=1e-4, n_inner=40, tie_word_embeddings=False),
])
def test_save_pretrained_loads_in_transformers(transformers, cfg, tmp_path, refs):
    if cfg:
        tl.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=101, block_size=24, n_layer=2, n_head=2, n_embd=32, **cfg)).eval()
        rng = np.random.default_rng(0)
        with tl.no_grad():
            for p in model.parameters():  # off the zero-bias / unit-LayerNorm init
                p._data += rng.standard_normal(p.shape).astype(np.float32) * 0.05
        ids = np.random.default_rng(1).integers(0, 101, (2, 24))
    else:
        model, ids = GPT.from_pretrained(TINY), refs["ids_full"]
    model.save_pretrained(tmp_path / "out")
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "out").eval()
    assert np.abs(hf_logits(hf, ids) - logits_of(model, ids)).max() < TOL
