"""BertModel: the BERT encoder (post-LN, bidirectional) on nn/transformer.py's Block, with
Hugging Face's config field names, so that an HF BERT folder (e.g. sentence-transformers'
all-MiniLM-L6-v2) loads into it (tensorlite/pretrained/bert.py) and gives HF's outputs.

encode_sentences turns a loaded BertModel plus a tokenizer into sentence embeddings the way
sentence-transformers computes them (token embeddings pooled over the attention mask, then
L2-normalised). docs/PRETRAINED.md tables what each HF tensor becomes."""
import inspect
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .. import factories
from ..autograd.grad_mode import no_grad
from ..backend.device import to_numpy
from ..nn import functional as nnf
from ..nn import init
from ..nn.containers import ModuleDict, ModuleList
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module
from ..nn.transformer import Block
from ..pretrained import activations
from ..tensor import Tensor
from ._config import DictConfig


@dataclass
class BertConfig(DictConfig):
    """HF BertConfig's fields and defaults (bert-base). hidden_act "gelu" is the exact GELU;
    "gelu_new" / "gelu_pytorch_tanh" the tanh approximation; "relu" a ReLU."""
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"


@dataclass
class BertOutput:
    """What BertModel returns, like HF's BaseModelOutputWithPooling: attribute, key
    (out["pooler_output"]) or tuple-style (out[0]) access; hidden_states has the embedding
    output then every layer's (num_hidden_layers + 1 tensors), attentions every layer's
    probabilities (B, heads, T, T). Fields not asked for are None and left out of out[i]."""
    last_hidden_state: Tensor
    pooler_output: Tensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None

    def to_tuple(self):
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, i: Any):
        if isinstance(i, str):
            return getattr(self, i)
        return self.to_tuple()[i]

    def __len__(self):
        return len(self.to_tuple())


class BertModel(Module):
    config_class = BertConfig  # what tensorlite.pretrained builds from a folder's config.json

    def __init__(self, config, init_weights=True):
        """init_weights=False skips HF's BERT init (the layers keep their default one): for
        weights about to be overwritten by a checkpoint."""
        super().__init__()
        c = self.config = config
        if c.position_embedding_type != "absolute":
            raise ValueError(f"BertConfig: position_embedding_type {c.position_embedding_type!r} "
                             "is not supported (only 'absolute')")
        act = activations.from_hf(c.hidden_act, "hidden_act", "BertConfig")
        self.transformer = ModuleDict(dict(
            wte=Embedding(c.vocab_size, c.hidden_size),
            wpe=Embedding(c.max_position_embeddings, c.hidden_size),
            wtt=Embedding(c.type_vocab_size, c.hidden_size),
            ln_e=LayerNorm(c.hidden_size, eps=c.layer_norm_eps),
            drop=Dropout(c.hidden_dropout_prob),
            h=ModuleList([Block(c.hidden_size, c.num_attention_heads, dropout=c.hidden_dropout_prob,
                                causal=False, prenorm=False, activation=act,
                                layer_norm_eps=c.layer_norm_eps, hidden=c.intermediate_size)
                          for _ in range(c.num_hidden_layers)]),
        ))
        for block in self.transformer.h:
            block.attn.dropout = c.attention_probs_dropout_prob  # (on the probabilities)
        self.pooler = Linear(c.hidden_size, c.hidden_size)
        if init_weights:
            self._init_weights()

    def _init_weights(self):
        # HF's BERT init: N(0, initializer_range) weights, zero biases, LayerNorms (1, 0),
        # and the padding token's embedding row zero
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (Linear, Embedding)):
                init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    init.zeros_(m.bias)
            elif isinstance(m, LayerNorm):
                init.ones_(m.weight)
                init.zeros_(m.bias)
        pad = self.config.pad_token_id
        if pad is not None and 0 <= pad < self.config.vocab_size:
            with no_grad():
                self.transformer.wte.weight._data[pad] = 0

    # ---- Hugging Face folders -------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path):
        """A BertModel from a local Hugging Face BERT folder, in eval mode; a
        sentence-transformers folder's max_seq_length and pooling are kept for
        encode_sentences. tensorlite never downloads: see docs/PRETRAINED.md."""
        from ..pretrained import bert
        return bert.load(cls, path)

    def save_pretrained(self, path):
        """Write config.json + model.safetensors in the layout transformers' BertModel loads."""
        from ..pretrained import bert
        bert.save(self, path)

    # ---- forward ----------------------------------------------------------------------
    def _ids(self, a, dtype="int64"):
        if isinstance(a, Tensor):
            return a
        return factories.tensor(np.asarray(a), dtype=dtype, device=self.pooler.weight.device)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None,
                output_hidden_states=False, output_attentions=False):
        """input_ids (B, T); attention_mask (B, T), 1 for tokens and 0 for padding (padding
        keys get no attention; padded positions still get an output, as in HF);
        token_type_ids (B, T), zeros when None. Arrays or tensors. Returns a BertOutput."""
        c, tr = self.config, self.transformer
        idx = self._ids(input_ids)
        B, T = idx.shape
        if T > c.max_position_embeddings:
            raise ValueError(f"BertModel: sequence length {T} exceeds max_position_embeddings "
                             f"{c.max_position_embeddings}")
        tt = factories.zeros(B, T, dtype="int64", device=idx.device) if token_type_ids is None \
            else self._ids(token_type_ids)
        pos = factories.arange(T, device=idx.device)
        x = tr.drop(tr.ln_e(tr.wte(idx) + tr.wtt(tt) + tr.wpe(pos)))
        mask = None
        if attention_mask is not None:
            m = to_numpy(attention_mask._data) if isinstance(attention_mask, Tensor) \
                else np.asarray(attention_mask)
            if m.shape != (B, T):
                raise ValueError(f"BertModel: attention_mask must have shape {(B, T)}, got {m.shape}")
            if not m.all():  # an all-ones mask is no mask: keep the fused unmasked path
                mask = factories.tensor(m != 0, dtype="bool", device=idx.device)
        hidden = [x] if output_hidden_states else None
        attentions = [] if output_attentions else None
        for block in tr.h:
            if output_attentions:
                block.attn.record_attention = True
                try:
                    x = block(x, mask)
                finally:
                    block.attn.record_attention = False
                attentions.append(block.attn.last_attention)
                block.attn.last_attention = None
            else:
                x = block(x, mask)
            if output_hidden_states:
                hidden.append(x)
        pooled = self.pooler(x[:, 0]).tanh()
        return BertOutput(x, pooled, tuple(hidden) if hidden is not None else None,
                          tuple(attentions) if attentions is not None else None)


# ---- sentence embeddings -------------------------------------------------------------------
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len")  # sentence-transformers' concat order


def sentence_config(model):
    """max_seq_length and pooling for encode_sentences: the folder's sentence-transformers
    settings when the model came from one, else mean pooling at the full context length."""
    sc = getattr(model, "sentence_config", None) or {}
    return {"max_seq_length": int(sc.get("max_seq_length") or model.config.max_position_embeddings),
            "pooling": list(sc.get("pooling") or ["mean"])}


def _tokenizer_kwargs(tokenizer, max_len):
    """The padding/truncation keywords this tokenizer's call accepts."""
    want = dict(padding=True, truncation=True, max_length=max_len, return_tensors="np")
    try:
        params = inspect.signature(tokenizer).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None:
        named = {k: v for k, v in want.items() if k in params}
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        want = named or (want if var_kw else {})
    return want


def _call_tokenizer(tokenizer, texts, max_len, kwargs=None):
    return tokenizer(list(texts), **(kwargs if kwargs is not None else
                                     _tokenizer_kwargs(tokenizer, max_len)))


def _rectangular(rows, width, fill):
    """A (N, width) int64 array from ragged rows (lists) or an array."""
    if isinstance(rows, np.ndarray) and rows.ndim == 2:
        return rows.astype(np.int64)
    rows = [np.asarray(to_numpy(r._data) if isinstance(r, Tensor) else r).reshape(-1) for r in rows]
    out = np.full((len(rows), width), fill, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def tokenize(tokenizer, texts, max_len, pad_id=0, kwargs=None):
    """(input_ids, attention_mask, token_type_ids), int64 (N, T <= max_len). Whatever the
    tokenizer did about padding and truncation, rows come out padded and truncated as HF's
    tokenizer does with truncation=True: a long row keeps its first max_len - 1 tokens and
    its last real one (BERT's [SEP]). kwargs: _tokenizer_kwargs's result, when known."""
    enc = _call_tokenizer(tokenizer, texts, max_len, kwargs)
    get = enc.get if hasattr(enc, "get") else (lambda k, d=None: getattr(enc, k, d))
    ids = get("input_ids")
    mask, tt = get("attention_mask"), get("token_type_ids")
    lens = [len(r) for r in ids] if not isinstance(ids, np.ndarray) else [ids.shape[1]] * len(ids)
    width = max(lens) if lens else 0
    ids = _rectangular(ids, width, pad_id)
    if mask is None:
        mask = np.zeros_like(ids)
        for i, n in enumerate(lens):
            mask[i, :n] = 1
    mask = _rectangular(mask, width, 0)
    tt = np.zeros_like(ids) if tt is None else _rectangular(tt, width, 0)
    n_real = mask.sum(1)
    if ids.shape[1] > max_len:
        for i in np.nonzero(n_real > max_len)[0]:
            last = ids[i, n_real[i] - 1]
            ids[i, max_len - 1] = last
        ids, mask, tt = ids[:, :max_len], mask[:, :max_len], tt[:, :max_len]
    return ids, mask, tt


def pool(h, mask, modes):
    """sentence-transformers' Pooling on token embeddings h (N, T, H), NumPy float32."""
    m = mask[..., None].astype(h.dtype)
    out = []
    for mode in POOLING_MODES:
        if mode not in modes:
            continue
        if mode == "cls":
            out.append(h[:, 0])
        elif mode == "max":
            out.append(np.where(m > 0, h, np.float32(-1e9)).max(1))
        else:
            s, n = (h * m).sum(1), np.maximum(m.sum(1), np.float32(1e-9))
            out.append(s / n if mode == "mean" else s / np.sqrt(n))
    return np.concatenate(out, -1)


def encode_sentences(model, tokenizer, sentences, batch_size=32, normalize=True):
    """(N, H) float32 NumPy sentence embeddings, as sentence-transformers computes them:
    tokenised with padding and truncation at max_seq_length, pooled over the attention mask
    (the folder's 1_Pooling mode; mean by default), then L2-normalised when normalize.
    tokenizer: a callable mapping a list of strings to a dict with input_ids and
    attention_mask (transformers' tokenizers, tensorlite.tokenizers' WordPiece)."""
    if isinstance(sentences, str):
        sentences = [sentences]
    sentences = list(sentences)
    sc = sentence_config(model)
    # longest first, as sentence-transformers batches: less padding per batch
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    out = [None] * len(sentences)
    was_training = model.training
    kwargs = _tokenizer_kwargs(tokenizer, sc["max_seq_length"])  # once, not per batch
    model.eval()
    try:
        with no_grad():
            for s in range(0, len(order), batch_size):
                chunk = order[s:s + batch_size]
                ids, mask, tt = tokenize(tokenizer, [sentences[i] for i in chunk],
                                         sc["max_seq_length"], model.config.pad_token_id or 0,
                                         kwargs)
                h = to_numpy(model(ids, mask, tt).last_hidden_state._data).astype(np.float32)
                for i, v in zip(chunk, pool(h, mask, sc["pooling"])):
                    out[i] = v
    finally:
        model.train(was_training)
    dim = model.config.hidden_size * len([m for m in POOLING_MODES if m in sc["pooling"]])
    emb = np.stack(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)
    if normalize:
        emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), np.float32(1e-12))
    return emb.astype(np.float32)


# ---- sequence classification ---------------------------------------------------------------
PROBLEM_TYPES = (None, "single_label_classification", "regression")


@dataclass
class BertClassificationConfig(BertConfig):
    """BertConfig plus the fields HF's BertForSequenceClassification reads. As in HF,
    id2label decides num_labels when both are given (a clash is an error); without
    id2label the labels are "LABEL_0", ... and label2id is id2label's inverse unless given.
    id2label keys may be strings ("0", as config.json stores them): they become ints.
    classifier_dropout None means hidden_dropout_prob. problem_type None picks the loss
    as HF does: mean-squared error for num_labels == 1, cross-entropy otherwise."""
    num_labels: int | None = None
    id2label: dict | None = None
    label2id: dict | None = None
    classifier_dropout: float | None = None
    problem_type: str | None = None

    def __post_init__(self):
        if self.id2label is not None:
            id2label = {int(k): str(v) for k, v in dict(self.id2label).items()}
            if sorted(id2label) != list(range(len(id2label))):
                raise ValueError(f"BertClassificationConfig: id2label keys must be 0 .. "
                                 f"{len(id2label) - 1}, got {sorted(id2label)}")
            if self.num_labels is not None and self.num_labels != len(id2label):
                raise ValueError(f"BertClassificationConfig: num_labels={self.num_labels} but "
                                 f"id2label has {len(id2label)} labels")
            self.id2label, self.num_labels = id2label, len(id2label)
        else:
            self.num_labels = 2 if self.num_labels is None else int(self.num_labels)
            self.id2label = {i: f"LABEL_{i}" for i in range(self.num_labels)}
        if self.num_labels < 1:
            raise ValueError(f"BertClassificationConfig: num_labels must be >= 1, got {self.num_labels}")
        if self.label2id is None or len(self.label2id) != self.num_labels:
            self.label2id = {v: k for k, v in self.id2label.items()}
        else:
            self.label2id = {str(k): int(v) for k, v in dict(self.label2id).items()}
        if self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"BertClassificationConfig: problem_type {self.problem_type!r} is not "
                             f"supported (tensorlite has {PROBLEM_TYPES[1:]})")


@dataclass
class SequenceClassifierOutput:
    """What BertForSequenceClassification returns: .logits (B, num_labels) and .loss (a
    scalar, or None without labels). Unlike HF's, out[0] is always the logits and out[1]
    the loss (None included), the (logits, loss) order of tensorlite's GPT, so that
    `logits, loss = model(...)` works with or without labels."""
    logits: Tensor
    loss: Tensor | None = None

    def to_tuple(self):
        return (self.logits, self.loss)

    def __getitem__(self, i: Any):
        if isinstance(i, str):
            return getattr(self, i)
        return self.to_tuple()[i]

    def __iter__(self):
        return iter(self.to_tuple())

    def __len__(self):
        return 2


def classification_config(path, num_labels=None, id2label=None, label2id=None):
    """The BertClassificationConfig of the local BERT folder path: its config.json, with the
    label fields given here replacing the folder's (a new label set drops the folder's
    id2label/label2id, as HF's from_pretrained(num_labels=...) does)."""
    from ..pretrained import bert as pb
    from ..pretrained import folder as F
    folder = F.resolve_folder(path)
    hf = F.read_config(folder)
    mt = F.model_type_of(folder, hf)
    if mt != pb.MODEL_TYPE:
        raise F.PretrainedError(f"{folder}: model_type {mt!r} is not {pb.MODEL_TYPE!r} "
                                "(BertForSequenceClassification loads BERT folders)")
    fields_ = dict(hf)
    if id2label is None and label2id is not None:
        id2label = {int(v): k for k, v in dict(label2id).items()}
    stored_n = len(hf["id2label"]) if isinstance(hf.get("id2label"), dict) else hf.get("num_labels")
    if id2label is not None or (num_labels is not None and num_labels != stored_n):
        # a new label set: the folder's names would describe other classes
        for k in ("id2label", "label2id", "num_labels"):
            fields_.pop(k, None)
        fields_.update({k: v for k, v in (("id2label", id2label), ("label2id", label2id),
                                          ("num_labels", num_labels)) if v is not None})
    try:
        return pb.config_from_hf(BertClassificationConfig, fields_, folder)
    except (TypeError, ValueError) as e:
        if isinstance(e, F.PretrainedError):
            raise
        raise F.PretrainedError(f"{folder}: {e}") from None


class BertForSequenceClassification(Module):
    """HF's BertForSequenceClassification: BertModel -> pooler_output -> dropout
    (classifier_dropout, else hidden_dropout_prob) -> Linear(hidden_size, num_labels).
    The encoder is self.bert (a BertModel), the head self.classifier."""
    config_class = BertClassificationConfig

    def __init__(self, config, init_weights=True):
        super().__init__()
        if not isinstance(config, BertClassificationConfig):  # a plain BertConfig: 2 labels
            config = BertClassificationConfig(**config.to_dict())
        self.config = config
        self.bert = BertModel(config, init_weights=init_weights)
        p = config.classifier_dropout if config.classifier_dropout is not None \
            else config.hidden_dropout_prob
        self.dropout = Dropout(p)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        if init_weights:
            self.init_classifier()

    def init_classifier(self):
        """HF's init of a fresh head: N(0, initializer_range) weight, zero bias."""
        init.normal_(self.classifier.weight, 0.0, self.config.initializer_range)
        init.zeros_(self.classifier.bias)

    # ---- Hugging Face folders -------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path, num_labels=None, id2label=None, label2id=None,
                        ignore_mismatched_sizes=False):
        """The encoder from a local BERT folder (BertModel's layout, or a BertFor* one with
        the "bert." prefix), in eval mode. A folder with classifier.weight/bias (one saved
        by save_pretrained) gives its head too; otherwise the head is fresh (HF's init)
        and model.head_loaded is False. A stored head of another num_labels is refused,
        unless ignore_mismatched_sizes (then it is replaced by a fresh one, as in HF)."""
        from ..pretrained import bert as pb
        from ..pretrained import folder as F
        config = classification_config(path, num_labels, id2label, label2id)
        folder = F.resolve_folder(path)
        files = F.weight_files(folder)
        found, stored = pb._canonical(F.tensor_infos(folder, files), folder)
        model = cls(config, init_weights=False)  # the encoder is read below
        own = {k: to_numpy(v._data) for k, v in model.bert.state_dict().items()}
        expected = {k: tuple(v.shape) for k, v in pb.to_hf(own).items()}
        head = {"classifier.weight": (config.num_labels, config.hidden_size),
                "classifier.bias": (config.num_labels,)}
        stored_head = [k for k in head if k in found]
        if stored_head and ignore_mismatched_sizes and any(found[k][1] != head[k] for k in stored_head):
            for k in stored_head:
                del found[k]
            stored_head = []
        if stored_head:
            expected.update(head)  # both must be there, with these shapes
        F.check_tensors(folder, found, expected, pb._describe(config) +
                        f", num_labels={config.num_labels}")
        arrays = F.load_arrays(folder, files, {k: stored[k] for k in expected})
        model.bert.load_state_dict(pb.from_hf(arrays, own))
        if stored_head:
            with no_grad():
                model.classifier.weight._data[...] = arrays["classifier.weight"]
                model.classifier.bias._data[...] = arrays["classifier.bias"]
        else:
            model.init_classifier()
        model.head_loaded = bool(stored_head)
        model.bert.hf_config = model.hf_config = F.read_config(folder)
        model.bert.sentence_config = pb.sentence_transformers_config(folder)
        return model.eval()

    def save_pretrained(self, path):
        """config.json + model.safetensors in the layout transformers'
        BertForSequenceClassification loads: the encoder under "bert.", then classifier.*."""
        from ..pretrained import bert as pb
        from ..pretrained import folder as F
        c = self.config
        state = {k: to_numpy(v._data) for k, v in self.bert.state_dict().items()}
        tensors = {f"bert.{k}": v for k, v in pb.to_hf(state).items()}
        tensors["classifier.weight"] = to_numpy(self.classifier.weight._data)
        tensors["classifier.bias"] = to_numpy(self.classifier.bias._data)
        cfg = pb.config_to_hf(self.bert)
        cfg.update(architectures=["BertForSequenceClassification"], num_labels=c.num_labels,
                   id2label={str(i): c.id2label[i] for i in sorted(c.id2label)},
                   label2id=dict(c.label2id))
        F.write_folder(path, cfg, tensors)

    # ---- forward ----------------------------------------------------------------------
    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        """input_ids, attention_mask, token_type_ids as BertModel takes them; labels (B,)
        class ids (float targets for num_labels == 1). Returns a SequenceClassifierOutput:
        logits (B, num_labels), and the loss when labels are given."""
        pooled = self.bert(input_ids, attention_mask, token_type_ids).pooler_output
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else self.loss(logits, labels)
        return SequenceClassifierOutput(logits, loss)

    def loss(self, logits, labels):
        """HF's choice of loss: mean-squared error for regression (problem_type, or
        num_labels == 1), else cross-entropy over class ids."""
        c = self.config
        floating = labels.dtype.is_floating_point if isinstance(labels, Tensor) \
            else np.issubdtype(np.asarray(labels).dtype, np.floating)
        if c.problem_type == "regression" or (c.problem_type is None and c.num_labels == 1):
            y = self.bert._ids(labels, dtype="float32").float()
            return nnf.mse_loss(logits.reshape(-1), y.reshape(-1))
        if floating:  # HF would read float targets as multi-label (BCE), which we lack
            raise TypeError("BertForSequenceClassification: labels must be class ids (int64) "
                            f"for num_labels={c.num_labels}; float targets (multi-label) are "
                            "not supported")
        y = self.bert._ids(labels).long().reshape(-1)
        return nnf.cross_entropy(logits.reshape(-1, c.num_labels), y)
