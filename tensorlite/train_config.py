"""TrainConfig, the settings of a training run, and everything that checks them: every
field's type, range and finiteness (LIMITS), the choices of the string fields, and what a
resumed run may change. All of it runs before anything is written.

    cfg = TrainConfig(data="input.txt", out="runs/mine").resolved()   # or UsageError
    cfg = resume_config("runs/mine", {"iters": 4000})                 # the run's own config

--resume continues a run from its own config.json: only what is given overrides it. The
model (its shape, tokenizer and vocabulary), the data and the seed are the run's identity
and cannot change; --data is kept as an absolute path with the sha256 of its bytes, so a
run resumes from any directory and refuses a file that changed since.
"""
import dataclasses
import math
import numbers
import os
import textwrap
from dataclasses import dataclass, field

from . import checkpoint as ckpt
from .classify_run import resolve as resolve_classify
from .data.text import _file_sha256
from .errors import UsageError
from .progress import MODES as PROGRESS_MODES
from .seq2seq_run import check_config as check_seq2seq_config
from .seq2seq_run import is_seq2seq_task

PRESETS = {
    # the built-in tasks: small enough to learn addition in a minute or two on 2 cores
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 64},
    # nanoGPT's CPU "baby" Shakespeare model
    "baby": {"n_layer": 4, "n_head": 4, "n_embd": 128},
    # nanoGPT's shakespeare-char model
    "small": {"n_layer": 6, "n_head": 6, "n_embd": 384},
}

# allowed values of the numeric fields: (low, high, low included, high included); None: unbounded.
# resolved() checks them, and `tensorlite train --help` prints them from here.
LIMITS = {
    "n_layer": (1, None, True, True), "n_head": (1, None, True, True),
    "n_embd": (1, None, True, True), "block_size": (1, None, True, True),
    "iters": (0, None, True, True), "batch_size": (1, None, True, True),
    "warmup": (0, None, True, True), "eval_every": (1, None, True, True),
    "eval_iters": (1, None, True, True), "save_every": (1, None, True, True),
    "keep_last": (1, None, True, True),
    "seed": (0, None, True, True), "threads": (1, None, True, True),
    "task_digits": (1, None, True, True), "stop_after": (1, None, True, True),
    "stats_every": (1, None, True, True), "vocab_size": (257, None, True, True),
    "lr": (0, None, False, True), "dropout": (0, 1, True, False),
    "weight_decay": (0, None, True, True), "grad_clip": (0, None, True, True),
    "min_lr_ratio": (0, 1, True, True), "stop_at_accuracy": (0, 1, True, True),
    "beta1": (0, 1, True, False), "beta2": (0, 1, True, False),
    "grad_accum": (1, None, True, True), "dist_timeout": (0, None, False, True),
    "max_length": (2, None, True, True),
}

# reverse and seq2seq-sort train an encoder-decoder (seq2seq_run.py), classify a BERT
# classifier on --data (classify_run.py), the others a GPT
TASKS = ("addition", "sort", "reverse", "seq2seq-sort", "classify")
CHOICES = {"task": TASKS, "tokenizer": ("char", "bpe", "gpt2"),
           "preset": tuple(PRESETS), "device": ("cpu", "cuda"),
           "kernels": ("numpy", "cpp", "triton"), "progress": PROGRESS_MODES,
           "dtype": ("fp32", "bf16", "fp16"),
           "dist_backend": ("mpi", "nccl")}
_PATHS = ("data", "gpt2_dir", "init_from", "model")  # kept absolute: a run resumes from anywhere

# what a resumed run cannot change: the model it holds, how its data is tokenized, and the
# seed (it picks a task's held-out problems and every evaluation's batches); `data` is
# compared by content, below
IDENTITY = ("task", "task_digits", "tokenizer", "vocab_size", "preset", "n_layer", "n_head",
            "n_embd", "bias", "block_size", "seed", "init_from", "model", "from_scratch",
            "max_length")
# fields left None on a resume take the run's value rather than their kind-of-run default
# (init_from is not among them: None there says "not fine-tuned", and is compared)
_FROM_RUN = ("iters", "batch_size", "lr", "kernels", "threads", "block_size", "preset",
             "n_layer", "n_head", "n_embd", "max_length")
# not part of a run's saved config: how this invocation shows progress and when it stops
_NOT_SAVED = ("progress", "extra", "stop_after", "dist_backend", "dist_timeout")


def limit_text(name):
    """The allowed range of a field in words: ">= 1", "> 0", "0 <= x < 1"."""
    lo, hi, lo_in, hi_in = LIMITS[name]
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo:g}"
    return f"{lo:g} {'<=' if lo_in else '<'} x {'<=' if hi_in else '<'} {hi:g}"


def _in_limits(name, v):
    lo, hi, lo_in, hi_in = LIMITS[name]
    return (v >= lo if lo_in else v > lo) and (hi is None or (v <= hi if hi_in else v < hi))


@dataclass
class TrainConfig:
    data: str = None            # a text file; None trains on the built-in `task`
    task: str = "addition"      # addition | sort (a GPT), reverse | seq2seq-sort (encoder-decoder)
    tokenizer: str = "char"     # char | bpe | gpt2 (for --data)
    vocab_size: int = 512       # target vocabulary of a trained bpe tokenizer
    gpt2_dir: str = None        # folder with encoder.json + vocab.bpe for --tokenizer gpt2
    preset: str = None          # tiny | baby | small (default: tiny for tasks, baby for text)
    n_layer: int = None
    n_head: int = None
    n_embd: int = None
    dropout: float = 0.0
    bias: bool = True
    block_size: int = None      # default: the task's length, or 64 for text
    device: str = "cpu"
    kernels: str = None         # numpy | cpp | triton (None: the device's default)
    dtype: str = "fp32"         # fp32 | bf16 | fp16: the training step under autocast
    iters: int = None           # default: 1000 for tasks, 2000 for text
    batch_size: int = None      # default: 64 for tasks, 12 for text; per micro-step
    grad_accum: int = 1         # micro-batches of batch_size per optimizer step
    lr: float = None            # peak lr; default 3e-3 for tasks, 1e-3 for text
    min_lr_ratio: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    eval_every: int = 250
    eval_iters: int = 20
    save_every: int = 500
    keep_last: int = 2          # complete checkpoints kept in OUT/checkpoints
    out: str = "runs/default"
    resume: bool = False
    seed: int = 1337
    threads: int = None
    task_digits: int = 2        # addition: digits per operand
    progress: str = "auto"      # auto | bar | log | none (True/False: auto/none)
    stop_at_accuracy: float = None  # tasks: stop once held-out exact match reaches this
    stop_after: int = None      # stop (and save) after this many steps in this invocation
    init_from: str = None       # fine-tune: start from this run's weights, config and tokenizer
    log_stats: bool = False     # per-layer activation/gradient/update statistics into log.jsonl
    stats_every: int = 10       # ... every this many steps
    mfu: bool = False           # model FLOPs utilisation against this machine's measured peak
    tensorboard: bool = False   # also write TensorBoard events into OUT/tensorboard
    dist_backend: str = None    # under mpiexec: mpi | nccl (None: nccl on cuda, else mpi)
    dist_timeout: float = 1800.0  # under mpiexec: seconds a collective waits for the others
    model: str = None           # --task classify: the BERT folder to fine-tune
    from_scratch: bool = False  # --task classify: its architecture, random init
    max_length: int = None      # --task classify: tokens per text (default 64)
    extra: dict = field(default_factory=dict)

    def resolved(self):
        """Check every field and fill the defaults that depend on the kind of run."""
        c = dataclasses.replace(self)
        check_fields(c)  # now, before the defaults below can hide a given value
        is_task = c.data is None
        for k in _PATHS:
            if getattr(c, k) is not None:
                setattr(c, k, os.path.abspath(getattr(c, k)))
        if c.task == "classify" or c.model or c.from_scratch or c.max_length is not None:
            return resolve_classify(c)
        c.preset = c.preset or ("tiny" if is_task else "baby")
        for k, v in PRESETS[c.preset].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        seq2seq = is_task and is_seq2seq_task(c.task)
        if c.iters is None:
            c.iters = (1500 if seq2seq else 1000) if is_task else 2000
        if c.threads is None and c.preset == "tiny":
            # a tiny model's matmuls and kernels take tens of microseconds: a second thread
            # costs more to wake than it saves (and much more on a shared machine)
            c.threads = 1
        if c.batch_size is None:
            c.batch_size = 64 if is_task else 12
        if c.lr is None:
            c.lr = 3e-3 if is_task else 1e-3
        if c.n_embd % c.n_head:
            raise UsageError(f"n_embd ({c.n_embd}) must be divisible by n_head ({c.n_head})")
        if seq2seq:
            check_seq2seq_config(c)
        return c


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               dict: "a dict"}


def _type_ok(v, want):
    if want is bool or isinstance(v, bool):  # True is no number, 1 is no switch
        return want is bool and isinstance(v, bool)
    if want is int:
        return isinstance(v, numbers.Integral)
    if want is float:
        return isinstance(v, numbers.Real)
    return isinstance(v, want)


def check_field(name, v):
    """UsageError unless v is an allowed value of TrainConfig field `name`."""
    f = _FIELDS[name]
    if v is None and f.default is None:
        return
    if name == "progress" and isinstance(v, bool):
        return
    if not _type_ok(v, f.type):
        raise UsageError(f"{name} must be {_TYPE_WORDS[f.type]}, got {v!r}")
    if f.type is float and not math.isfinite(v):
        raise UsageError(f"{name} must be a finite number ({limit_text(name)}), got {v!r}")
    if name in CHOICES and v not in CHOICES[name]:
        raise UsageError(f"{name} must be one of {', '.join(CHOICES[name])}, got {v!r}")
    if name in LIMITS and not _in_limits(name, v):
        raise UsageError(f"{name} must be {limit_text(name)}, got {v!r}")
    if f.type is str and name not in CHOICES and not v.strip():
        raise UsageError(f"{name} must be a non-empty path, got {v!r}")
    if f.type is str and "\0" in v:
        raise UsageError(f"{name} must not contain NUL characters, got {v!r}")


def check_fields(cfg):
    for name in _FIELDS:
        check_field(name, getattr(cfg, name))


def saved_train_config(out):
    """The "train" part of OUT/config.json, or None when out holds no config."""
    path = os.path.join(out, ckpt.CONFIG)
    if not os.path.isfile(path):
        return None
    saved = ckpt.read_json(path, "config")
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        raise UsageError(f"{path}: not a tensorlite run config (no \"train\" object)")
    return saved


def resume_config(out, overrides=None):
    """The TrainConfig that --resume of the run in out uses: its own config.json, with the
    fields in overrides ({name: value}) replacing the saved ones."""
    overrides = dict(overrides or {})
    saved = saved_train_config(out)
    base = {}
    if saved is not None:
        base = {k: v for k, v in saved["train"].items()
                if k in _FIELDS and k not in _NOT_SAVED + ("out", "resume")}
        for k, v in base.items():
            try:
                check_field(k, v)
            except UsageError as e:  # a hand-edited config: say which file is wrong
                raise UsageError(f"{os.path.join(out, ckpt.CONFIG)}: {e}") from None
    if "task" in overrides and "data" not in overrides:
        base.pop("data", None)  # --task and --data exclude each other
    base.update(overrides)
    base.update(out=out, resume=True)
    return TrainConfig(**base)


def fill_from_run(cfg):
    """On resume, a field left None takes the run's saved value (see _FROM_RUN)."""
    saved = saved_train_config(cfg.out) if cfg.resume else None
    if saved is None:
        return cfg
    c = dataclasses.replace(cfg)
    for k in _FROM_RUN:
        if getattr(c, k) is None and saved["train"].get(k) is not None:
            setattr(c, k, saved["train"][k])
    return c


def data_fingerprint(path):
    return _file_sha256(path)


def check_resume(cfg, saved):
    """UsageError (one line, naming the field) when the resolved cfg would change what the
    run in cfg.out is; saved: its config.json."""
    old = saved["train"]
    is_task = cfg.data is None
    keys = [k for k in IDENTITY if not (k == "vocab_size" and cfg.tokenizer != "bpe")
            and not (k in ("task", "task_digits") and not is_task)
            and not (k == "tokenizer" and is_task)]
    old = dict({"from_scratch": False}, **old)  # a run from before --task classify
    diff = [f"{k}: {old.get(k)!r} -> {getattr(cfg, k)!r}" for k in keys if old.get(k) != getattr(cfg, k)]
    old_data = old.get("data")
    sha = saved.get("data_sha256")
    if (old_data is None) != (cfg.data is None):
        diff.insert(0, f"data: {old_data!r} -> {cfg.data!r}")
    elif cfg.data is not None and sha is None and os.path.abspath(old_data) != cfg.data:
        diff.insert(0, f"data: {old_data!r} -> {cfg.data!r}")  # a run from before the hash
    if diff:
        raise UsageError(f"--resume: {cfg.out} was trained with a different config "
                         f"({'; '.join(diff)}); a resumed run keeps its model, data and seed")
    if cfg.data is not None and sha is not None:
        now = data_fingerprint(cfg.data)
        if now != sha and cfg.data == old_data:
            raise UsageError(f"--resume: data file {cfg.data} has changed since {cfg.out} "
                             f"started (sha256 {sha[:12]}... then, {now[:12]}... now)")
        if now != sha:
            raise UsageError(f"--resume: data file {cfg.data} is not the one {cfg.out} was "
                             f"trained on ({old_data}, sha256 {sha[:12]}...): its bytes differ")


def saved_form(cfg):
    """cfg as config.json's "train" object."""
    return {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_SAVED}


# the fields worth a line at the start of a run, in reading order
_SHOWN = ("data", "task", "task_digits", "tokenizer", "preset", "n_layer", "n_head", "n_embd",
          "block_size", "dropout", "iters", "batch_size", "grad_accum", "lr", "min_lr_ratio", "warmup", "weight_decay",
          "grad_clip", "eval_every", "eval_iters", "save_every", "seed", "device", "kernels",
          "threads", "init_from", "model", "from_scratch", "max_length", "log_stats", "tensorboard", "out")


def describe_config(cfg):
    """The effective config, key=value, wrapped into a compact block."""
    skip = ("data", "tokenizer") if cfg.data is None else ("task", "task_digits")
    if cfg.task == "classify":
        skip = ("task_digits", "tokenizer", "preset", "dropout", "min_lr_ratio", "eval_iters")
    if cfg.data is None and is_seq2seq_task(cfg.task):
        skip += ("task_digits",)
    items = [f"{k}={getattr(cfg, k)}" for k in _SHOWN
             if k not in skip and getattr(cfg, k) not in (None, False)
             and not (k == "grad_accum" and cfg.grad_accum == 1)]
    if cfg.extra.get("source"):
        items.append(f"(from {cfg.extra['source']})")
    return textwrap.fill(" ".join(items), width=100, initial_indent="config: ",
                         subsequent_indent="        ", break_on_hyphens=False,
                         break_long_words=False)
