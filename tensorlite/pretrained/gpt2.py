"""Hugging Face GPT-2 folders <-> tensorlite's GPT (models/gpt.py).

The two share GPT-2's tensor names (nanoGPT kept them), so loading is mostly a renaming
with two real differences: HF's Conv1D layers store their weight as (in, out), the
transpose of a Linear's (out, in), and lm_head is tied to wte unless the config says not.
The mapping, tensor by tensor, is tabled in docs/PRETRAINED.md."""
import re
import warnings

import numpy as np

from ..backend.device import to_numpy
from . import activations
from . import folder as F

MODEL_TYPE = "gpt2"
ARCHITECTURE = "GPT2LMHeadModel"
PREFIX = "transformer."
HEAD = "lm_head.weight"
# Transposed by name, never by shape: a square c_proj (C, C) looks the same either way round.
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# causal-mask buffers of older transformers versions (rebuilt by our attention kernel) and
# position ids (always 0..T-1 here): state, not weights
BUFFER = re.compile(r"(^|\.)(h\.\d+\.attn\.(bias|masked_bias)|position_ids)$")
# GPT2Config switches whose non-default value would change the maths
FIXED = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
         "add_cross_attention": False}
# HF GPT2Config's defaults, for fields a config.json leaves out
HF_DEFAULTS = {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
               "n_head": 12, "n_inner": None, "activation_function": "gelu_new",
               "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
               "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1}


def config_from_hf(hf, where):
    """GPTConfig keyword arguments for an HF GPT-2 config.json dict."""
    for key, value in FIXED.items():
        if hf.get(key, value) != value:
            raise F.PretrainedError(f"{where}: config.json sets {key}={hf[key]!r}; tensorlite's GPT "
                                    f"implements only {key}={value!r}")
    g = {k: hf.get(k, d) for k, d in HF_DEFAULTS.items()}
    # n_ctx is the older name of the context length; n_positions sizes wpe when both are there
    block = hf["n_positions"] if "n_positions" in hf else hf.get("n_ctx", g["n_positions"])
    return dict(vocab_size=int(g["vocab_size"]), block_size=int(block), n_layer=int(g["n_layer"]),
                n_head=int(g["n_head"]), n_embd=int(g["n_embd"]), dropout=float(g["resid_pdrop"]),
                bias=True,
                activation=activations.from_hf(g["activation_function"], "activation_function", where),
                layer_norm_eps=float(g["layer_norm_epsilon"]),
                tie_word_embeddings=bool(g["tie_word_embeddings"]),
                n_inner=None if g["n_inner"] is None else int(g["n_inner"]))


def set_dropouts(model, hf):
    """GPT2Config has three dropout rates and GPTConfig one: put each on its modules."""
    tr = model.transformer
    tr.drop.p = float(hf.get("embd_pdrop", HF_DEFAULTS["embd_pdrop"]))
    resid = float(hf.get("resid_pdrop", HF_DEFAULTS["resid_pdrop"]))
    for block in tr.h:
        block.attn.dropout = float(hf.get("attn_pdrop", HF_DEFAULTS["attn_pdrop"]))
        block.attn.resid_dropout.p = resid
        block.mlp.dropout.p = resid


def config_to_hf(model):
    """config.json for model: the folder's own config (if it came from one) with every field
    tensorlite models overwritten from the model itself."""
    c = model.config
    original = dict(getattr(model, "hf_config", None) or {})
    out = {k: v for k, v in original.items()
           if k not in ("_name_or_path", "transformers_version", "torch_dtype", "dtype")}
    block0 = model.transformer.h[0] if len(model.transformer.h) else None
    out.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE], vocab_size=c.vocab_size,
               n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
               n_inner=c.n_inner,
               activation_function=activations.to_hf(c.activation, original.get("activation_function")),
               layer_norm_epsilon=c.layer_norm_eps, tie_word_embeddings=c.tie_word_embeddings,
               embd_pdrop=model.transformer.drop.p,
               resid_pdrop=block0.mlp.dropout.p if block0 else c.dropout,
               attn_pdrop=block0.attn.dropout if block0 else c.dropout,
               dtype="float32", **FIXED)
    if "n_ctx" in original:
        out["n_ctx"] = c.block_size  # (crop_block_size may have shrunk it)
    return out


def to_hf(state, config):
    """{our name: array} -> {HF name: array} in GPT2LMHeadModel's layout (views, no copies)."""
    out = {}
    for k, v in state.items():
        if k == HEAD and config.tie_word_embeddings:
            continue  # transformers rebuilds a tied head from wte, and does not store it either
        out[k] = v.T if k.endswith(CONV1D) else v
    return out


def _canonical(infos, folder):
    """Stored names -> GPT2LMHeadModel's ("transformer." prefixed; GPT2Model folders have
    none), buffers dropped. Returns ({canonical: info}, {canonical: stored name})."""
    def rename(k):
        if BUFFER.search(k):
            return None
        return k if k.startswith(PREFIX) or k == HEAD else PREFIX + k
    return F.canonical_names(folder, infos, rename)


def _describe(c):
    return (f"n_layer={c.n_layer}, n_head={c.n_head}, n_embd={c.n_embd}, n_inner={c.n_inner}, "
            f"vocab_size={c.vocab_size}, n_positions={c.block_size}, "
            f"tie_word_embeddings={c.tie_word_embeddings}")


def load(cls, path):
    """cls (GPT) from the local folder path, in eval mode (as transformers returns it)."""
    folder, hf = F.open_model(path, MODEL_TYPE, "GPT.from_pretrained loads GPT-2 folders")
    config = cls.config_class(**config_from_hf(hf, folder))
    files = F.weight_files(folder)
    found, stored = _canonical(F.tensor_infos(folder, files), folder)
    model = cls(config, init_weights=False)  # every weight is read below
    own = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in to_hf(own, config).items()}
    spare_head = found.pop(HEAD, None) if config.tie_word_embeddings else None
    F.check_tensors(folder, found, expected, _describe(config))
    wanted = {k: stored[k] for k in expected}
    if spare_head is not None and spare_head[1] == expected[PREFIX + "wte.weight"] \
            and F.is_float(spare_head[0]):
        wanted[HEAD] = stored[HEAD]
    arrays = F.load_arrays(folder, files, wanted)
    head = arrays.pop(HEAD, None) if config.tie_word_embeddings else None
    if head is not None and not np.array_equal(head, arrays[PREFIX + "wte.weight"]):
        warnings.warn(f"{folder}: lm_head.weight differs from wte.weight but config.json has "
                      "tie_word_embeddings=true: the head is tied to wte (as transformers does)",
                      stacklevel=3)
    state = {k: (np.ascontiguousarray(v.T) if k.endswith(CONV1D) else v) for k, v in arrays.items()}
    if config.tie_word_embeddings:
        state[HEAD] = state[PREFIX + "wte.weight"]  # the same tensor, reachable by both names
    model.load_state_dict(state)
    set_dropouts(model, hf)
    model.hf_config = hf
    return model.eval()


def save(model, path):
    """config.json + model.safetensors in path, in the layout GPT2LMHeadModel loads."""
    c = model.config
    if not c.bias:
        raise F.PretrainedError("save_pretrained: the GPT-2 layout has a bias in every Linear and "
                                "LayerNorm; this model was built with bias=False")
    state = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
    F.write_folder(path, config_to_hf(model), to_hf(state, c))
