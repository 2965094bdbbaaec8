"""Training a GPT, top to bottom: data -> model -> AdamW with warmup + cosine -> loop with
evaluation, logging and atomic checkpoints. `tensorlite train` is a thin layer over train().

    from tensorlite.train import TrainConfig, train
    result = train(TrainConfig(task="addition", out="runs/add"))

train() checks its inputs, sets up (or resumes) the run, then repeats train_step(), the
forward/backward/update of one batch, which a hand-written loop can call on its own.
"""
import dataclasses
import json
import os
import signal
import textwrap
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from . import checkpoint as ckpt
from . import cuda
from ._threads import set_num_threads
from .autograd.grad_mode import no_grad
from .backend.device import cuda_unavailable_reason
from .backend.registry import provider_name, set_kernels
from .data.tasks import AdditionTask, SortTask
from .data.text import TokenFile, _read_utf8
from .errors import UsageError
from .factories import tensor
from .finetune import load_init_weights, prepare_init_from
from .models.gpt import GPT, GPTConfig
from .nn.utils import clip_grad_norm_
from .optim import AdamW
from .optim.lr_scheduler import warmup_cosine
from .plots import plot_losses
from .progress import MODES as PROGRESS_MODES, make_progress
from .random import get_rng_state, manual_seed, set_rng_state
from .stats import TrainingStats
from .summary import MFUMeter
from .tokenizers import BPETokenizer, CharTokenizer, load_gpt2_tokenizer, load_tokenizer

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
    "seed": (0, None, True, True), "threads": (1, None, True, True),
    "task_digits": (1, None, True, True), "stop_after": (1, None, True, True),
    "stats_every": (1, None, True, True), "vocab_size": (257, None, True, True),
    "lr": (0, None, False, True), "dropout": (0, 1, True, False),
    "weight_decay": (0, None, True, True), "grad_clip": (0, None, True, True),
    "min_lr_ratio": (0, 1, True, True), "stop_at_accuracy": (0, 1, True, True),
    "beta1": (0, 1, True, False), "beta2": (0, 1, True, False),
}


def limit_text(name):
    """The allowed range of a field in words: ">= 1", "> 0", "0 <= x < 1"."""
    lo, hi, lo_in, hi_in = LIMITS[name]
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo:g}"
    return f"{lo:g} {'<=' if lo_in else '<'} x {'<=' if hi_in else '<'} {hi:g}"


def _check_limits(c):
    for name, (lo, hi, lo_in, hi_in) in LIMITS.items():
        v = getattr(c, name)
        if v is None:
            continue
        ok = (v >= lo if lo_in else v > lo) and (hi is None or (v <= hi if hi_in else v < hi))
        if not ok:
            raise UsageError(f"{name} must be {limit_text(name)}, got {v!r}")


@dataclass
class TrainConfig:
    data: str = None            # a text file; None trains on the built-in `task`
    task: str = "addition"      # addition | sort
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
    iters: int = None           # default: 1000 for tasks, 2000 for text
    batch_size: int = None      # default: 64 for tasks, 12 for text
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
    extra: dict = field(default_factory=dict)

    def resolved(self):
        """Fill the defaults that depend on the kind of run."""
        c = dataclasses.replace(self)
        is_task = c.data is None
        _check_limits(c)  # now, before `or` below can turn a given 0 into a default
        if c.progress not in PROGRESS_MODES and not isinstance(c.progress, bool):
            raise UsageError(f"unknown progress mode {c.progress!r}: choose one of "
                             f"{', '.join(PROGRESS_MODES)}")
        if c.task not in ("addition", "sort"):
            raise UsageError(f"unknown task {c.task!r}: choose addition or sort")
        if c.tokenizer not in ("char", "bpe", "gpt2"):
            raise UsageError(f"unknown tokenizer {c.tokenizer!r}: choose char, bpe or gpt2")
        preset = c.preset or ("tiny" if is_task else "baby")
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        c.preset = preset
        for k, v in PRESETS[preset].items():
            if getattr(c, k) is None:
                setattr(c, k, v)
        c.iters = c.iters if c.iters is not None else (1000 if is_task else 2000)
        if c.threads is None and preset == "tiny":
            # a tiny model's matmuls and kernels take tens of microseconds: a second thread
            # costs more to wake than it saves (and much more on a shared machine)
            c.threads = 1
        c.batch_size = c.batch_size or (64 if is_task else 12)
        c.lr = c.lr or (3e-3 if is_task else 1e-3)
        _check_limits(c)  # and the filled-in values
        if c.n_embd % c.n_head:
            raise UsageError(f"n_embd ({c.n_embd}) must be divisible by n_head ({c.n_head})")
        return c


# the fields that must match for --resume to continue the same run
_RESUME_KEYS = ("data", "task", "task_digits", "tokenizer", "vocab_size", "n_layer", "n_head",
                "n_embd", "bias", "block_size", "dropout", "batch_size", "lr", "min_lr_ratio",
                "warmup", "weight_decay", "beta1", "beta2", "grad_clip", "seed", "iters", "kernels",
                "init_from")


# ---- data --------------------------------------------------------------------------------

class TaskData:
    """A built-in task, presented like a text dataset: batches and a tokenizer."""

    def __init__(self, cfg):
        self.task = AdditionTask(n_digits=cfg.task_digits, seed=cfg.seed) if cfg.task == "addition" \
            else SortTask(seed=cfg.seed)
        self.tokenizer = CharTokenizer(list(self.task.chars))
        self.block_size = self.task.block_size

    def batch(self, split, batch_size, block_size, rng):
        return self.task.get_batch(batch_size, rng)


class TextData:
    def __init__(self, cfg, tokenizer, out_dir):
        self.tokenizer = tokenizer
        key = json.dumps(tokenizer.to_dict(), sort_keys=True)
        self.file = TokenFile(cfg.data, tokenizer, tokenizer_key=key, cache_dir=out_dir,
                              block_size=cfg.block_size)
        self.block_size = cfg.block_size

    def batch(self, split, batch_size, block_size, rng):
        return self.file.get_batch(split, batch_size, block_size, rng)


def build_tokenizer(cfg):
    if cfg.tokenizer == "gpt2":
        if not cfg.gpt2_dir:
            raise UsageError("--tokenizer gpt2 needs --gpt2-dir, a folder with GPT-2's "
                             "encoder.json and vocab.bpe")
        return load_gpt2_tokenizer(cfg.gpt2_dir)
    text = _read_utf8(cfg.data)
    if not text:
        raise UsageError(f"data file {cfg.data} is empty")
    if cfg.tokenizer == "char":
        return CharTokenizer.from_text(text)
    return BPETokenizer.train(text, cfg.vocab_size)


def _check_writable(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output folder {out_dir}: {e.strerror}") from None
    probe = os.path.join(out_dir, ".write-test")
    try:
        with open(probe, "w") as f:
            f.write("")
        os.unlink(probe)
    except OSError as e:
        raise UsageError(f"output folder {out_dir} is not writable: {e.strerror}") from None


# ---- one step ----------------------------------------------------------------------------

def train_step(model, optimizer, x, y, grad_clip=None, stats=None):
    """One optimisation step on the batch (x, y): forward, zero_grad, backward, gradient
    clipping, optimizer step.

    model(x, y) must return (logits, loss). grad_clip: the largest global gradient norm
    (None or 0: no clipping). stats: a TrainingStats whose begin() returned True for this
    step (begin() before this call, end() after it are the caller's); its grads() sees the
    gradients and snapshot() the weights just before the update. The learning rate is
    whatever optimizer.param_groups hold.

    Returns (loss as a float, the gradient norm before clipping or None without clipping).
    """
    _, loss = model(x, y)
    optimizer.zero_grad()
    loss.backward()
    if stats is not None:
        stats.grads()
    norm = clip_grad_norm_(list(model.parameters()), grad_clip) if grad_clip else None
    if stats is not None:
        stats.snapshot()
    optimizer.step()
    return loss.item(), norm


# ---- a run -------------------------------------------------------------------------------

def train(cfg, log=print):
    """Train per cfg; returns a dict with the final train/val loss (and task accuracy)."""
    given = cfg
    cfg = cfg.resolved()
    init_tokenizer = _check_inputs(cfg, given)
    if cfg.kernels:
        set_kernels(cfg.kernels)
    if cfg.threads:
        set_num_threads(cfg.threads)
    manual_seed(cfg.seed)
    run = _setup_run(cfg, init_tokenizer, log)
    interrupted = _loop(run, log)
    run.save()
    plot_losses(cfg.out)
    final = {"step": run.step, "interrupted": interrupted}
    final.update({k: v for k, v in run.last.items() if k in ("loss", "val_loss", "train_loss", "accuracy")})
    if run.history:
        final.update({k: v for k, v in run.history[-1].items() if k in ("val_loss", "train_loss", "accuracy")})
    if interrupted:
        raise KeyboardInterrupt
    return final


class _Run:
    """What one train() call advances and what its checkpoints hold. The step count lives
    here rather than in a loop's local so that an interrupt at any point saves the step
    that the weights belong to."""

    def __init__(self, cfg, data, model, opt):
        self.cfg, self.data, self.model, self.opt = cfg, data, model, opt
        self.rng = np.random.default_rng(cfg.seed)
        self.start = self.step = 0
        self.history = []  # the evaluations so far, kept in the checkpoint
        self.last = {}     # the latest step's log record

    def save(self):
        ckpt.save_checkpoint(self.cfg.out, self.model, self.opt, {
            "step": self.step, "data_rng": _jsonable_state(self.rng.bit_generator.state),
            "tl_rng": get_rng_state(), "history": self.history})

    def restore(self):
        state = ckpt.load_checkpoint(self.cfg.out, self.model, self.opt)
        self.start = self.step = state["step"]
        self.rng.bit_generator.state = state["data_rng"]
        set_rng_state(state["tl_rng"])
        self.history = state.get("history", [])
        _truncate_log(os.path.join(self.cfg.out, "log.jsonl"), self.start)

    def evaluate(self):
        """Mean loss over eval_iters batches per split, and a task's held-out accuracy."""
        cfg, model = self.cfg, self.model
        model.eval()
        erng = np.random.default_rng([cfg.seed, self.step])  # evaluation never touches training RNGs
        res = {}
        with no_grad():
            for split in (("train", "val") if cfg.data is not None else ("val",)):
                losses = []
                for _ in range(cfg.eval_iters):
                    x, y = self.data.batch(split, cfg.batch_size, cfg.block_size, erng)
                    _, loss = model(tensor(x, device=cfg.device), tensor(y, device=cfg.device))
                    losses.append(loss.item())
                res[f"{split}_loss"] = float(np.mean(losses))
            if cfg.data is None:
                res["accuracy"] = task_accuracy(model, self.data.task, cfg.device)
        model.train()
        return res


def _check_inputs(cfg, given):
    """Refuse bad input before anything is written. Fits cfg to an --init-from run or to the
    run being resumed, in place; returns the --init-from run's tokenizer (or None)."""
    out = cfg.out
    if cfg.tensorboard:
        tensorboard_writer_class()
    if cfg.device == "cuda" and not cuda.is_available():
        raise UsageError(f"--device cuda: {cuda_unavailable_reason()}")
    if cfg.data is not None and not os.path.isfile(cfg.data):
        raise UsageError(f"data file {cfg.data} does not exist")
    init_tokenizer = prepare_init_from(cfg, given) if cfg.init_from else None
    has_run = os.path.exists(os.path.join(out, ckpt.STATE))
    if cfg.resume and not has_run:
        raise UsageError(f"--resume: {out} holds no run to resume (no {ckpt.STATE})")
    if not cfg.resume and has_run:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose "
                         "another --out")
    if cfg.resume:
        saved = ckpt.read_json(os.path.join(out, ckpt.CONFIG), "config")["train"]
        diff = [f"{k}: {saved.get(k)!r} -> {getattr(cfg, k)!r}" for k in _RESUME_KEYS
                if k != "block_size" and saved.get(k) != getattr(cfg, k)]
        if cfg.block_size is not None and saved.get("block_size") != cfg.block_size:
            diff.append(f"block_size: {saved.get('block_size')!r} -> {cfg.block_size!r}")
        if diff:
            raise UsageError(f"--resume: {out} was trained with a different config ({'; '.join(diff)})")
        cfg.block_size = saved["block_size"]
    _check_writable(out)
    return init_tokenizer


def _setup_run(cfg, init_tokenizer, log):
    """Data, tokenizer, model and optimizer, restored from cfg.out on --resume; a fresh run
    writes its config, tokenizer and an empty log first."""
    out = cfg.out
    data = _build_data(cfg, init_tokenizer)
    mcfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=cfg.block_size,
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                     dropout=cfg.dropout, bias=cfg.bias)
    model = GPT(mcfg).to(cfg.device)
    if cfg.init_from and not cfg.resume:
        load_init_weights(model, cfg.init_from)
        log(f"initialised from {cfg.init_from} (weights only; a fresh optimizer)")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}],
                lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    run = _Run(cfg, data, model, opt)
    if cfg.resume:
        run.restore()
        log(f"resumed {out} at step {run.start}")
    else:
        source = {"source": cfg.extra["source"]} if cfg.extra.get("source") else {}
        ckpt.write_json(os.path.join(out, ckpt.CONFIG),
                        {"model": mcfg.to_dict(), "train": _jsonable(cfg), **source})
        data.tokenizer.save(os.path.join(out, ckpt.TOKENIZER))
        open(os.path.join(out, "log.jsonl"), "w").close()
    log(describe_config(cfg))
    log(f"model: {model.num_parameters():,} parameters ({cfg.n_layer} layers, {cfg.n_head} heads, "
        f"{cfg.n_embd} dims, block {cfg.block_size}, vocab {mcfg.vocab_size}); kernels: "
        f"{_provider_name(cfg.device)}")
    return run


# the fields worth a line at the start of a run, in reading order
_SHOWN = ("data", "task", "task_digits", "tokenizer", "preset", "n_layer", "n_head", "n_embd",
          "block_size", "dropout", "iters", "batch_size", "lr", "min_lr_ratio", "warmup", "weight_decay",
          "grad_clip", "eval_every", "eval_iters", "save_every", "seed", "device", "kernels",
          "threads", "init_from", "log_stats", "tensorboard", "out")


def describe_config(cfg):
    """The effective config, key=value, wrapped into a compact block."""
    skip = ("data", "tokenizer") if cfg.data is None else ("task", "task_digits")
    items = [f"{k}={getattr(cfg, k)}" for k in _SHOWN
             if k not in skip and getattr(cfg, k) not in (None, False)]
    if cfg.extra.get("source"):
        items.append(f"(from {cfg.extra['source']})")
    return textwrap.fill(" ".join(items), width=100, initial_indent="config: ",
                         subsequent_indent="        ", break_on_hyphens=False,
                         break_long_words=False)


def _build_data(cfg, init_tokenizer):
    # also settles cfg.block_size: a task's own length, or text's default
    if cfg.data is None:
        data = TaskData(cfg)
        cfg.block_size = data.block_size
        return data
    if cfg.block_size is None:
        cfg.block_size = 64
    if cfg.resume:
        tokenizer = load_tokenizer(os.path.join(cfg.out, ckpt.TOKENIZER))
    else:
        tokenizer = init_tokenizer or build_tokenizer(cfg)
    return TextData(cfg, tokenizer, cfg.out)


# ---- the loop ----------------------------------------------------------------------------

def _loop(run, log):
    """Steps until cfg.iters or a stop condition; returns whether an interrupt (Ctrl-C or
    SIGTERM) ended them."""
    cfg = run.cfg
    with open(os.path.join(cfg.out, "log.jsonl"), "a") as logf:
        stats = TrainingStats(run.model, cfg.stats_every) if cfg.log_stats else None
        mfu = MFUMeter(run.model, _tokens_per_step(cfg), cfg.block_size, cfg.device) if cfg.mfu else None
        if mfu:
            log(f"measured peak matmul throughput: {mfu.peak / 1e9:,.1f} GFLOP/s")
        bar = make_progress(cfg.progress, total=cfg.iters, initial=run.start, say=log)
        tb = _open_tensorboard(cfg, run.start) if cfg.tensorboard else None
        prev_handler = signal.getsignal(signal.SIGTERM)
        # a killed job (SIGTERM) saves its step like Ctrl-C does
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            run.model.train()
            _steps(run, logf, bar, stats, mfu, tb, log)
        except KeyboardInterrupt:
            log(f"\ninterrupted: saving step {run.step} to {cfg.out}")
            return True
        finally:
            signal.signal(signal.SIGTERM, prev_handler)
            bar.close()
            if tb is not None:
                tb.close()
    return False


def _steps(run, logf, bar, stats, mfu, tb, log):
    cfg = run.cfg
    t0 = time.perf_counter()
    while run.step < cfg.iters:
        lr = cfg.lr * warmup_cosine(run.step, cfg.warmup, cfg.iters, cfg.min_lr_ratio)
        for g in run.opt.param_groups:
            g["lr"] = lr
        x, y = run.data.batch("train", cfg.batch_size, cfg.block_size, run.rng)
        tracking = stats is not None and stats.begin(run.step + 1)
        loss, norm = train_step(run.model, run.opt, tensor(x, device=cfg.device),
                                tensor(y, device=cfg.device), cfg.grad_clip,
                                stats=stats if tracking else None)
        run.step += 1
        dt = time.perf_counter() - t0
        t0 = time.perf_counter()
        rec = {"step": run.step, "loss": loss, "lr": lr, "grad_norm": norm,
               "tokens_per_s": _tokens_per_step(cfg) / dt if dt > 0 else None}
        if mfu:
            rec["mfu"] = mfu(dt)
        if tracking:
            rec["stats"] = stats.end()
        if run.step % cfg.eval_every == 0 or run.step == cfg.iters:
            _evaluate_into(run, rec, bar.write)
            t0 = time.perf_counter()  # the evaluation's time is no step's
        _log_step(logf, bar, rec)
        if tb is not None:
            _tensorboard_step(tb, rec)
        if run.step % cfg.save_every == 0 and run.step != cfg.iters:
            run.save()
        run.last = rec
        if _should_stop(run, rec, log):
            break


def _evaluate_into(run, rec, say):
    rec.update(run.evaluate())
    run.history.append({k: rec[k] for k in rec if k in ("step", "loss", "val_loss", "train_loss",
                                                         "accuracy")})
    msg = f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()
                                           if k in ("train_loss", "val_loss", "accuracy"))
    msg += f", mfu {rec['mfu']:.2%}" if rec.get("mfu") is not None else ""
    say(msg)


def _log_step(logf, bar, rec):
    logf.write(json.dumps(rec) + "\n")
    logf.flush()
    bar.update(rec["step"], loss=rec["loss"], lr=rec["lr"], tok_s=rec["tokens_per_s"],
               **({"mfu": rec["mfu"]} if "mfu" in rec else {}))


# ---- TensorBoard (--tensorboard) -----------------------------------------------------------

TENSORBOARD_DIR = "tensorboard"


def tensorboard_writer_class():
    """tensorboardX's SummaryWriter, or a UsageError saying how to install it."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise UsageError("--tensorboard needs the tensorboardX package: pip install tensorboardX "
                         "(or pip install -e \".[tensorboard]\")") from None
    return SummaryWriter


def _open_tensorboard(cfg, start):
    # purge_step: on --resume, the events logged after the checkpoint are dropped, as the
    # log.jsonl lines are, so the curves show each step once
    return tensorboard_writer_class()(os.path.join(cfg.out, TENSORBOARD_DIR),
                                      purge_step=start or None, flush_secs=10)


def _tensorboard_step(tb, rec):
    step = rec["step"]
    for key, tag in (("loss", "train/loss"), ("lr", "train/lr"), ("grad_norm", "train/grad_norm"),
                     ("tokens_per_s", "train/tokens_per_s"), ("mfu", "train/mfu"),
                     ("train_loss", "eval/train_loss"), ("val_loss", "eval/val_loss"),
                     ("accuracy", "eval/accuracy")):
        if rec.get(key) is not None:
            tb.add_scalar(tag, float(rec[key]), step)
    for group, vals in (rec.get("stats") or {}).items():
        for key, v in vals.items():
            if v is not None:
                tb.add_scalar(f"stats/{key}/{group}", float(v), step)


def _should_stop(run, rec, log):
    cfg = run.cfg
    if cfg.stop_at_accuracy is not None and rec.get("accuracy", -1) >= cfg.stop_at_accuracy:
        log(f"held-out accuracy {rec['accuracy']:.4f} reached --stop-at-accuracy")
        return True
    return cfg.stop_after is not None and run.step - run.start >= cfg.stop_after


def _tokens_per_step(cfg):
    return cfg.batch_size * cfg.block_size


def task_accuracy(model, task, device, n=None):
    """Held-out exact match with greedy decoding (KV cache)."""
    def predict(prompts, n_new):
        idx = tensor(prompts, device=device)
        return model.generate(idx, n_new, temperature=0).numpy()[:, prompts.shape[1]:]
    return float(task.evaluate(predict, n=n))


def _truncate_log(path, step):
    # steps logged after the checkpoint was taken will be run again: drop them
    if not os.path.exists(path):
        return
    with open(path) as f:
        keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    ckpt.atomic_write_bytes(path, [line.encode() for line in keep])


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _provider_name(device):
    return provider_name("cuda" if str(device).startswith("cuda") else "cpu")


def _jsonable(cfg):
    d = asdict(cfg)
    return {k: v for k, v in d.items() if k not in ("progress", "extra", "stop_after")}


def _jsonable_state(state):
    return json.loads(json.dumps(state, default=int))


