"""Sequence classification as a `tensorlite train` run (`--task classify --model DIR --data
labelled.tsv`): BertForSequenceClassification fine-tuned from a BERT folder (or trained from
random init with --from-scratch) by the same loop as a GPT, with its checkpoints, --resume,
progress, log and plots.

The loop asks the task object (ClassifyTask) for what differs from a GPT: the model and its
config.json "model" object ({"kind": "classify", "config": the classifier's config, ...}),
the learning rate of a step (linear warmup, then linear decay to 0: HF's recipe), one
training step, the evaluation (held-out accuracy and loss over the whole held-out split)
and the tokenizer's files. Batches are a pure function of (seed, step)
(data.classify.TextClassificationData.train_batch), drawn through a DataLoader whose batch
sampler (StepBatches) starts at the run's step, so a resume needs no data RNG; the
loop already saves the tl RNG that dropout draws from.

The run folder holds the tokenizer as WordPiece's own files (vocab.txt,
tokenizer_config.json, special_tokens_map.json): load_run rebuilds the classifier from
config.json and reads the tokenizer with tokenizers.from_pretrained(OUT).
"""
import dataclasses
import json
import math
import os

import numpy as np

from . import checkpoint as ckpt
from .autograd.grad_mode import no_grad
from .data.classify import TextClassificationData
from .errors import UsageError
from .factories import tensor
from .finetune_classifier import (
    build_classifier,
    classifier_step,
    evaluate_classifier,
    lr_factor,
)
from .models.bert import (
    BertClassificationConfig,
    BertForSequenceClassification,
    classification_config,
)
from .tokenizers import from_pretrained as tokenizer_from_pretrained
from .utils.data import DataLoader, Dataset, Sampler

KIND = "classify"
TASK = "classify"
# held-out split: a tenth of the distinct texts, drawn with its own fixed seed so that runs
# with different --seed values are scored on the same examples
HELDOUT, SPLIT_SEED = 0.1, 0
# fine-tuning defaults (HF Trainer's, with BERT-paper lr); applied where the field is unset
DEFAULTS = {"iters": 250, "batch_size": 32, "lr": 5e-5, "max_length": 64}
WARMUP_SHARE = 0.1
# TrainConfig's GPT defaults of these are values, not None: a classify run reads them as
# "not given" and puts HF's in their place (passing exactly the GPT value gets HF's too)
GPT_WARMUP, GPT_WEIGHT_DECAY, GPT_BETA2 = 100, 0.1, 0.99
WEIGHT_DECAY, BETA2 = 0.01, 0.999
_MODEL_FIELDS = ("n_layer", "n_head", "n_embd", "block_size")

# `tensorlite train` flags (cli.py adds them to its options): (flag, argparse kw, help)
OPTIONS = [
    ("--model", dict(metavar="DIR"), "--task classify: the BERT folder to fine-tune (its "
     "config.json, weights and WordPiece tokenizer)"),
    ("--from-scratch", dict(action="store_true"), "--task classify: train --model's "
     "architecture from random init instead of its weights"),
    ("--max-length", dict(type=int, metavar="N"), "--task classify: tokens per text "
     "([CLS] and [SEP] included; longer texts are truncated)"),
]
HELP_DEFAULTS = {"model": "none", "max_length": "64 (--task classify)"}


def extend_cli(options, defaults):
    """Add the classify flags to cli.py's train options, and its defaults to their help."""
    options.extend(OPTIONS)
    for k in ("iters", "batch_size", "lr"):
        defaults[k] = f"{defaults.get(k)}, {DEFAULTS[k]:g} for --task classify"
    defaults.update(HELP_DEFAULTS)


def check_flags(given):
    """The command line's --task/--data pairing: --data names the text of a GPT run, or the
    labelled TSV of --task classify."""
    if "data" in given and given.get("task", TASK) != TASK:
        raise UsageError(f"--data is not allowed with --task {given['task']} (--data goes with "
                         "--task classify, or alone trains a GPT on the text)")


def is_classify_config(config):
    return isinstance(config, dict) and isinstance(config.get("model"), dict) \
        and config["model"].get("kind") == KIND


def resolve(c):
    """The classify part of TrainConfig.resolved(): check the fields and fill the defaults
    (c is a copy with absolute paths; returned)."""
    if c.task != TASK:
        given = [f for f, v in (("--model", c.model), ("--from-scratch", c.from_scratch),
                                ("--max-length", c.max_length)) if v not in (None, False)]
        raise UsageError(f"{', '.join(given)}: only for --task classify")
    if c.data is None:
        raise UsageError("--task classify needs --data, a labelled TSV (label<TAB>text a line)")
    if c.model is None:
        raise UsageError("--task classify needs --model DIR, a BERT folder (with --from-scratch "
                         "only its config and tokenizer are used)")
    hf = _saved_classifier_config(c.out) if c.resume else None
    if hf is not None:
        pass  # a resume rebuilds the run's own classifier: the --model folder may be gone
    elif not os.path.isdir(c.model):
        raise UsageError(f"--model {c.model}: not a folder")
    else:
        try:
            hf = classification_config(c.model)
        except (ValueError, OSError) as e:
            raise UsageError(f"--model {c.model}: {str(e).splitlines()[0]}") from None
    for flag, bad in (("--grad-accum", c.grad_accum != 1), ("--mfu", c.mfu),
                      ("--init-from", c.init_from is not None),
                      ("--dropout", c.dropout != 0.0), ("--preset", c.preset is not None)):
        if bad:
            why = {"--dropout": "the dropout is --model's config's",
                   "--preset": "the model is --model's",
                   "--grad-accum": "a step is one batch", "--mfu": "it counts a GPT's FLOPs",
                   "--init-from": "--model is the starting point"}[flag]
            raise UsageError(f"{flag} is not available for --task classify ({why})")
    if c.max_length is None:  # a small model's folder may take fewer positions
        c.max_length = min(DEFAULTS["max_length"], hf.max_position_embeddings)
    for k, v in DEFAULTS.items():
        if getattr(c, k) is None:
            setattr(c, k, v)
    if c.max_length < 2:
        raise UsageError(f"--max-length must be >= 2 ([CLS] and [SEP]), got {c.max_length}")
    if c.max_length > hf.max_position_embeddings:
        raise UsageError(f"--max-length {c.max_length} is more than {c.model} takes "
                         f"({hf.max_position_embeddings} positions)")
    if c.warmup == GPT_WARMUP:
        c.warmup = math.ceil(WARMUP_SHARE * c.iters)
    if c.weight_decay == GPT_WEIGHT_DECAY:
        c.weight_decay = WEIGHT_DECAY
    if c.beta2 == GPT_BETA2:
        c.beta2 = BETA2
    shape = {"n_layer": hf.num_hidden_layers, "n_head": hf.num_attention_heads,
             "n_embd": hf.hidden_size, "block_size": c.max_length}
    for k in _MODEL_FIELDS[:3]:  # block_size follows --max-length
        if getattr(c, k) not in (None, shape[k]):
            raise UsageError(f"--{k.replace('_', '-')} is not available for --task classify "
                             f"(the model is --model's: {k} {shape[k]})")
        setattr(c, k, shape[k])
    c.block_size = c.max_length
    if c.threads is None and c.n_embd <= 64:
        c.threads = 1  # as preset tiny: a second thread costs more than it saves
    return c


def _saved_classifier_config(out):
    path = os.path.join(out, ckpt.CONFIG)
    if not os.path.isfile(path):
        return None
    config = ckpt.read_json(path, "config")
    return _config_from_saved(config["model"]) if is_classify_config(config) else None


class ClassifyTask:
    """train.py's data object of a classify run: its tokenizer, model, lr, step, evaluation."""

    def __init__(self, cfg, log=print):
        from .distributed import launcher_info
        info = launcher_info()
        if info is not None and info["world_size"] > 1:
            raise UsageError("--task classify does not run under mpiexec (one process)")
        self.cfg = cfg
        try:
            self.data = TextClassificationData(cfg.data, heldout=HELDOUT, seed=SPLIT_SEED)
        except ValueError as e:  # DataError, or a file too small for a held-out split
            raise UsageError(str(e).splitlines()[0]) from None
        # a resumed run reads the tokenizer it saved: the --model folder may be gone
        self.tokenizer = tokenizer_from_pretrained(cfg.out if cfg.resume else cfg.model)
        self.block_size = cfg.max_length
        d = self.data
        log(f"classify: {d.num_labels} labels, {len(d.train_ids)} train / {len(d.heldout_ids)} "
            f"held-out examples; majority-class baseline {d.majority_baseline():.4f}")

    def build_model(self, cfg):
        if cfg.resume:  # the weights come from the checkpoint; the architecture from the run
            config = ckpt.read_json(os.path.join(cfg.out, ckpt.CONFIG), "config")
            model = model_from_saved(config["model"])
        else:
            model = build_classifier(cfg.model, self.data, cfg.from_scratch, cfg.seed)
        self.layers = str(cfg.n_layer)
        saved = {"kind": KIND, "config": _jsonable(model.config.to_dict()),
                 "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_embd": cfg.n_embd,
                 "block_size": cfg.max_length, "max_length": cfg.max_length}
        return model, saved

    def lr(self, step):
        c = self.cfg
        return c.lr * lr_factor(step, c.warmup, c.iters, "linear")

    def loader(self, start):
        """The DataLoader of training batches start, start + 1, ...: StepBatches picks each
        one's examples, the collate tokenises them (data.classify's train_batch)."""
        c, d = self.cfg, self.data
        return DataLoader(Examples(len(d.texts)),
                          batch_sampler=StepBatches(d, c.batch_size, c.seed, start),
                          collate_fn=lambda ids: d.encode(ids, self.tokenizer, c.max_length))

    def step(self, run, stats=None):
        c = self.cfg
        if getattr(self, "_next", None) != run.step:  # the first step, or a hand-set one
            self._batches = iter(self.loader(run.step))
        b = next(self._batches)
        self._next = run.step + 1
        b = {k: (v if k == "labels" else tensor(v, device=c.device)) for k, v in b.items()}
        return classifier_step(run.model, run.opt, b, c.grad_clip, stats)

    def evaluate(self, run):
        ev = evaluate_classifier(run.model, self.data, self.tokenizer, self.cfg.max_length)
        return {"val_loss": ev["loss"], "accuracy": ev["accuracy"]}

    def save_tokenizer(self, out):
        self.tokenizer.save_pretrained(out)


class Examples(Dataset):
    """Item i is example i's id, i: the collate tokenises a batch of them at once, padded
    to its longest row (TextClassificationData.encode)."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(f"example {i} of {self.n}")
        return int(i)


class StepBatches(Sampler):
    """Endless: batch s (from `start` on) holds the examples train_batch_ids(s, batch_size,
    seed), a pure function of the step, so a resumed run starts at its step."""

    def __init__(self, data, batch_size, seed, start=0):
        self.data, self.batch_size, self.seed, self.start = data, batch_size, seed, start

    def __iter__(self):
        s = self.start
        while True:
            yield self.data.train_batch_ids(s, self.batch_size, seed=self.seed).tolist()
            s += 1


def _jsonable(d):
    return json.loads(json.dumps(d))


def _config_from_saved(saved):
    fields = {f.name for f in dataclasses.fields(BertClassificationConfig)}
    return BertClassificationConfig(**{k: v for k, v in saved["config"].items() if k in fields})


def model_from_saved(saved):
    """The BertForSequenceClassification of a classify run's config.json "model" object."""
    return BertForSequenceClassification(_config_from_saved(saved), init_weights=False)


def load_tokenizer(out):
    return tokenizer_from_pretrained(out)


def evaluate_run(model, tokenizer, config, data=None):
    """`tensorlite eval` of a classify run: held-out accuracy and loss (and the
    majority-class baseline) on the run's own split of its TSV (or of data)."""
    train = config.get("train", {})
    path = data or train.get("data")
    d = TextClassificationData(path, heldout=HELDOUT, seed=SPLIT_SEED)
    max_length = config["model"].get("max_length") or train.get("max_length") or 64
    ev = evaluate_classifier(model, d, tokenizer, max_length)
    return {"task": TASK, "data": path, "heldout": ev["n"], "accuracy": ev["accuracy"],
            "loss": ev["loss"], "majority_baseline": d.majority_baseline()}


def predict(model, tokenizer, text, max_length, device="cpu"):
    """(label, probability) the classifier gives the text."""
    if not text:
        raise ValueError("a classification run needs a text to label: pass --prompt")
    from .models.bert import tokenize
    pad = getattr(tokenizer, "pad_token_id", None)
    x, mask, tt = tokenize(tokenizer, [text], max_length, pad if isinstance(pad, int) else 0)
    with no_grad():
        out = model(tensor(x, device=device), tensor(mask, device=device), tensor(tt, device=device))
    logits = out.logits.numpy()[0].astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    k = int(p.argmax())
    return model.config.id2label[k], float(p[k])


def run_command(command, a, model, tokenizer, config):
    """`tensorlite generate` (the label of --prompt) and `eval` of a classify run; False
    when config is no classify run's."""
    if not is_classify_config(config):
        return False
    if command == "eval":
        print(json.dumps(evaluate_run(model, tokenizer, config, getattr(a, "data", None))))
    else:
        label, p = predict(model, tokenizer, a.prompt, config["model"]["max_length"], a.device)
        print(f"{label}\t{p:.4f}")
    return True
