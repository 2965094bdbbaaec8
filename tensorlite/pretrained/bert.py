"""Hugging Face BERT folders <-> tensorlite's BertModel (models/bert.py).

HF's BertLayer is the post-LN transformer block that nn/transformer.py's Block already is
(prenorm=False), under other names, with one structural difference: HF keeps separate
query/key/value Linears where MultiHeadAttention has one packed c_attn. Loading
concatenates them (rows in q|k|v order), saving splits them back. docs/PRETRAINED.md
tables every tensor. A sentence-transformers folder's max_seq_length and pooling mode
(sentence_bert_config.json, modules.json, 1_Pooling/config.json) are read for
encode_sentences."""
import os
import re

import numpy as np

from ..backend.device import to_numpy
from . import activations
from . import folder as F

MODEL_TYPE = "bert"
ARCHITECTURE = "BertModel"
QKV = ("query", "key", "value")
# our module path -> HF's, outside the layers
TOP = {"transformer.wte": "embeddings.word_embeddings",
       "transformer.wpe": "embeddings.position_embeddings",
       "transformer.wtt": "embeddings.token_type_embeddings",
       "transformer.ln_e": "embeddings.LayerNorm",
       "pooler": "pooler.dense"}
# inside layer i: transformer.h.{i}.<ours> -> encoder.layer.{i}.<HF's>
LAYER = {"attn.c_proj": "attention.output.dense",
         "ln_1": "attention.output.LayerNorm",
         "mlp.c_fc": "intermediate.dense",
         "mlp.c_proj": "output.dense",
         "ln_2": "output.LayerNorm"}
BUFFER = re.compile(r"(^|\.)position_ids$")
# HF config switches that would make a different network than BertModel builds
FIXED = {"is_decoder": False, "add_cross_attention": False}
ST_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
              "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}
ST_UNSUPPORTED = ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken")


def hf_names(name):
    """The HF tensor names our tensor `name` is made of (three for a packed c_attn)."""
    mod, p = name.rsplit(".", 1)
    if mod in TOP:
        return [f"{TOP[mod]}.{p}"]
    m = re.fullmatch(r"transformer\.h\.(\d+)\.(.+)", mod)
    if m is None:
        raise KeyError(name)
    i, rest = m.groups()
    if rest == "attn.c_attn":
        return [f"encoder.layer.{i}.attention.self.{q}.{p}" for q in QKV]
    return [f"encoder.layer.{i}.{LAYER[rest]}.{p}"]


def to_hf(state):
    """{our name: array} -> {HF name: array}; c_attn split into equal row blocks q, k, v."""
    out = {}
    for k, v in state.items():
        names = hf_names(k)
        for n, part in zip(names, np.split(v, len(names), axis=0) if len(names) > 1 else [v]):
            out[n] = part
    return out


def from_hf(arrays, our_names):
    out = {}
    for k in our_names:
        parts = [arrays[n] for n in hf_names(k)]
        out[k] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
    return out


def config_from_hf(cls, hf, where):
    for key, value in FIXED.items():
        if hf.get(key, value) != value:
            raise F.PretrainedError(f"{where}: config.json sets {key}={hf[key]!r}; tensorlite's "
                                    f"BertModel implements only {key}={value!r}")
    kw = {k: hf[k] for k in cls.__dataclass_fields__ if k in hf}
    if kw.get("position_embedding_type", "absolute") != "absolute":
        raise F.PretrainedError(f"{where}: position_embedding_type "
                                f"{kw['position_embedding_type']!r} is not supported (only 'absolute')")
    activations.from_hf(kw.get("hidden_act", "gelu"), "hidden_act", where)
    return cls(**kw)


def config_to_hf(model):
    original = dict(getattr(model, "hf_config", None) or {})
    out = {k: v for k, v in original.items()
           if k not in ("_name_or_path", "transformers_version", "torch_dtype", "dtype")}
    out.update(model.config.to_dict())
    out.update(model_type=MODEL_TYPE, architectures=[ARCHITECTURE], dtype="float32", **FIXED)
    return out


def _canonical(infos, folder):
    """Stored names -> BertModel's: "bert." prefix (BertFor* checkpoints) dropped, old
    LayerNorm.gamma/beta renamed, position_ids and the pretraining heads (cls.*) skipped."""
    def rename(k):
        if BUFFER.search(k) or k.startswith("cls."):
            return None
        c = k.removeprefix("bert.")
        return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", c))
    return F.canonical_names(folder, infos, rename)


def _describe(c):
    return (f"num_hidden_layers={c.num_hidden_layers}, hidden_size={c.hidden_size}, "
            f"intermediate_size={c.intermediate_size}, vocab_size={c.vocab_size}, "
            f"max_position_embeddings={c.max_position_embeddings}, type_vocab_size={c.type_vocab_size}")


def sentence_transformers_config(folder):
    """{"max_seq_length", "pooling"} from a sentence-transformers folder; {} for plain HF."""
    out = {}
    sb = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(sb):
        msl = F.read_json(sb).get("max_seq_length")
        if msl:
            out["max_seq_length"] = int(msl)
    pooling_dir = "1_Pooling"
    modules = os.path.join(folder, "modules.json")
    if os.path.isfile(modules):
        for m in F.read_json(modules):
            if str(m.get("type", "")).endswith(".Pooling"):
                pooling_dir = m.get("path") or pooling_dir
    pc = os.path.join(folder, pooling_dir, "config.json")
    if os.path.isfile(pc):
        cfg = F.read_json(pc)
        for key in ST_UNSUPPORTED:
            if cfg.get(key):
                raise F.PretrainedError(f"{pc}: {key} is not supported by encode_sentences "
                                        f"(it has {', '.join(sorted(ST_POOLING))})")
        out["pooling"] = [mode for key, mode in ST_POOLING.items() if cfg.get(key)]
    return out


def load(cls, path):
    """cls (BertModel) from the local folder path, in eval mode."""
    folder, hf = F.open_model(path, MODEL_TYPE, "BertModel.from_pretrained loads BERT folders")
    config = config_from_hf(cls.config_class, hf, folder)
    files = F.weight_files(folder)
    found, stored = _canonical(F.tensor_infos(folder, files), folder)
    model = cls(config, init_weights=False)  # every weight is read below
    own = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
    expected = {k: tuple(v.shape) for k, v in to_hf(own).items()}
    F.check_tensors(folder, found, expected, _describe(config))
    arrays = F.load_arrays(folder, files, {k: stored[k] for k in expected})
    model.load_state_dict(from_hf(arrays, own))
    model.hf_config = hf
    model.sentence_config = sentence_transformers_config(folder)
    return model.eval()


def save(model, path):
    """config.json + model.safetensors in path, in the layout transformers' BertModel loads."""
    state = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
    F.write_folder(path, config_to_hf(model), to_hf(state))
