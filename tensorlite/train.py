"""Training a GPT, top to bottom: data -> model -> AdamW with warmup + cosine -> loop with
evaluation, logging and crash-safe checkpoints. `tensorlite train` is a thin layer over train().

    from tensorlite.train import TrainConfig, train
    result = train(TrainConfig(task="addition", out="runs/add"))

train() checks its inputs (train_config.py), sets up (or resumes) the run, then repeats
train_step(), the forward/backward/update of one batch, which a hand-written loop can call
on its own. Checkpoints are folders published by a rename (checkpoint.py); a resumed run
continues bit-exactly however the previous one ended: Ctrl-C, SIGTERM or kill -9.
"""
import contextlib
import json
import os
import shutil
import signal
import textwrap
import threading
import time

import numpy as np

from . import checkpoint as ckpt
from . import cuda
from ._threads import set_num_threads
from .autograd.grad_mode import no_grad
from .backend.device import cuda_unavailable_reason
from .backend.registry import provider_name, set_kernels
from .checkpoint import latest_checkpoint  # noqa: F401  (part of this module's API)
from .data.tasks import AdditionTask, SortTask
from .data.text import DataError, TokenFile, _read_utf8
from .errors import UsageError
from .factories import tensor
from .finetune import load_init_weights, prepare_init_from
from .models.gpt import GPT, GPTConfig
from .nn.utils import clip_grad_norm_
from .optim import AdamW
from .optim.lr_scheduler import warmup_cosine
from .plots import plot_losses
from .progress import make_progress
from .random import get_rng_state, manual_seed, set_rng_state
from .serialization import TEMP_PREFIX, CheckpointError, atomic_write_bytes
from .stats import TrainingStats
from .summary import MFUMeter
from .tokenizers import BPETokenizer, CharTokenizer, load_gpt2_tokenizer, load_tokenizer
from .train_config import (LIMITS, PRESETS, TrainConfig, check_fields, check_resume,  # noqa: F401
                           data_fingerprint, fill_from_run, limit_text, resume_config,
                           saved_form, saved_train_config)


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
    probe = os.path.join(out_dir, f"{TEMP_PREFIX}write-test.{os.getpid()}")
    try:
        with ckpt.open_log(probe, truncate=True):
            pass
        os.unlink(probe)
    except (OSError, UsageError) as e:
        raise UsageError(f"output folder {out_dir} is not writable: "
                         f"{getattr(e, 'strerror', None) or e}") from None


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
    """Train per cfg; returns a dict with the final train/val loss (and task accuracy).
    With cfg.resume, fields left None take the run's saved values; resume_config(out,
    overrides) gives the command line's --resume (the run's whole config, overridden)."""
    given = cfg
    check_fields(cfg)  # before the run folder is even looked at
    cfg = fill_from_run(cfg).resolved()
    init_tokenizer, saved = _check_inputs(cfg, given)
    if cfg.kernels:
        set_kernels(cfg.kernels)
    if cfg.threads:
        set_num_threads(cfg.threads)
    manual_seed(cfg.seed)
    run = _setup_run(cfg, init_tokenizer, saved, log)
    try:
        interrupted = _loop(run, log)
    finally:
        run.lock.close()
    if run.torn:
        log("stopped at once by a second interrupt: not saved; --resume continues from the "
            "newest checkpoint")
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
    that the weights belong to, with the RNG states as they were right after it."""

    def __init__(self, cfg, data, model, opt):
        self.cfg, self.data, self.model, self.opt = cfg, data, model, opt
        self.rng = np.random.default_rng(cfg.seed)
        self.start = self.step = 0
        self.history = []   # the evaluations so far, kept in the checkpoint
        self.last = {}      # the latest step's log record
        self.pending = None  # {"rec", "eval"}: a completed step whose record is not logged yet
        self.torn = False   # a second interrupt stopped a step halfway: nothing to save
        self.logf = self.lock = None
        self.mark()

    def mark(self):
        # the RNG states after the last completed step: a save at any later moment (the
        # next batch drawn, dropout masks made) stores these, so a resume redraws them
        self.rng_state = (_jsonable_state(self.rng.bit_generator.state), get_rng_state())

    def state(self):
        s = {"step": self.step, "data_rng": self.rng_state[0], "tl_rng": self.rng_state[1],
             "history": self.history}
        if self.pending is not None:
            s["pending"] = self.pending
        return s

    def save(self):
        if self.logf is not None:  # a checkpoint never gets ahead of its log on disk
            self.logf.flush()
            os.fsync(self.logf.fileno())
        ckpt.save_checkpoint(self.cfg.out, self.model, self.opt, self.state(),
                             keep_last=self.cfg.keep_last)

    def restore(self, folder):
        state = ckpt.load_checkpoint(folder, self.model, self.opt)
        self.start = self.step = state["step"]
        try:
            self.rng.bit_generator.state = state["data_rng"]
            set_rng_state(state["tl_rng"])
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{folder}/{ckpt.STATE}: unusable RNG state ({e})") from None
        self.history = state.get("history", [])
        self.pending = state.get("pending")
        self.mark()

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
    run being resumed, in place; returns (the --init-from run's tokenizer or None, the
    resumed run's config.json or None)."""
    out = cfg.out
    if cfg.tensorboard:
        tensorboard_writer_class()
    if cfg.device == "cuda" and not cuda.is_available():
        raise UsageError(f"--device cuda: {cuda_unavailable_reason()}")
    if cfg.data is not None and not os.path.isfile(cfg.data):
        hint = " (the file the run was trained on: pass --data with its new place)" \
            if cfg.resume and given.data is None else ""
        raise UsageError(f"data file {cfg.data} does not exist{hint}")
    init_tokenizer = prepare_init_from(cfg, given) if cfg.init_from else None
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"cannot create output folder {out}: it is a file")
    ckpt.refuse_links(out)
    has_run = ckpt.has_run(out)
    if cfg.resume and not has_run:
        raise UsageError(f"--resume: {out} holds no run to resume (no {ckpt.CONFIG})")
    if not cfg.resume and has_run:
        raise UsageError(f"{out} already holds a run; pass --resume to continue it or choose "
                         "another --out")
    saved = None
    if cfg.resume:
        saved = saved_train_config(out)
        if saved is None:
            raise UsageError(f"--resume: {out} has checkpoints but no {ckpt.CONFIG}")
        check_resume(cfg, saved)
    return init_tokenizer, saved


def _setup_run(cfg, init_tokenizer, saved, log):
    """Tokenizer, model and optimizer (restored from the newest checkpoint on --resume),
    all before the first write; then the run folder: a fresh run writes its tokenizer, an
    empty log and, last, its config, the mark of a run that exists."""
    out = cfg.out
    if cfg.data is None:
        data = TaskData(cfg)
        cfg.block_size, tokenizer = data.block_size, data.tokenizer
    else:
        data = None
        if cfg.block_size is None:
            cfg.block_size = 64
        tokenizer = load_tokenizer(os.path.join(out, ckpt.TOKENIZER)) if cfg.resume \
            else init_tokenizer or build_tokenizer(cfg)
    mcfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size,
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
    folder = latest_checkpoint(out) if cfg.resume else None
    if folder is not None:
        run.restore(folder)
    if run.step > cfg.iters:
        raise UsageError(f"--iters {cfg.iters} is below step {run.step}, where {out} stands; "
                         f"pass --iters {run.step} or more")
    # ---- the first write ----
    existed = set(os.listdir(out)) if os.path.isdir(out) else None
    _check_writable(out)
    run.lock = ckpt.lock_run(out)
    try:
        _write_run_folder(run, tokenizer, mcfg, saved, folder, log)
    except BaseException as e:
        run.lock.close()
        if isinstance(e, (DataError, UsageError)) and not cfg.resume:
            _undo_new_run(out, existed)
        raise
    log(describe_config(cfg))
    log(f"model: {model.num_parameters():,} parameters ({cfg.n_layer} layers, {cfg.n_head} heads, "
        f"{cfg.n_embd} dims, block {cfg.block_size}, vocab {mcfg.vocab_size}); kernels: "
        f"{_provider_name(cfg.device)}")
    return run


def _write_run_folder(run, tokenizer, mcfg, saved, folder, log):
    cfg, out = run.cfg, run.cfg.out
    removed = ckpt.clean_stale(out)
    if removed:
        log(f"removed {len(removed)} leftover(s) of an interrupted run: {', '.join(removed)}")
    if run.data is None:
        run.data = TextData(cfg, tokenizer, out)
    log_path = os.path.join(out, ckpt.LOG)
    if cfg.resume:
        ckpt.truncate_log(log_path, run.step, warn=log)
        _update_config(cfg, saved)
        log(f"resumed {out} at step {run.step}" + ("" if folder else " (no checkpoint yet)"))
        return
    source = {"source": cfg.extra["source"]} if cfg.extra.get("source") else {}
    data_hash = {"data_sha256": data_fingerprint(cfg.data)} if cfg.data else {}
    atomic_write_bytes(os.path.join(out, ckpt.TOKENIZER),
                       [json.dumps(tokenizer.to_dict()).encode(), b"\n"])
    ckpt.open_log(log_path, truncate=True).close()
    ckpt.write_json(os.path.join(out, ckpt.CONFIG),
                    {"model": mcfg.to_dict(), "train": saved_form(cfg), **data_hash, **source})


def _undo_new_run(out, existed):
    # a fresh run refused after its folder was made (the data is too short for a block):
    # leave --out as it was
    if existed is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for n in set(os.listdir(out)) - existed:
        p = os.path.join(out, n)
        if os.path.isfile(p) and not os.path.islink(p):
            os.unlink(p)


def _update_config(cfg, saved):
    # config.json describes the run as it continues now (a longer --iters, a new lr), so
    # that the next --resume starts from here
    new = dict(saved, train=saved_form(cfg))
    if cfg.extra.get("source"):
        new["resumed_with"] = cfg.extra["source"]
    if new != saved:
        ckpt.write_json(os.path.join(cfg.out, ckpt.CONFIG), new)


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


# ---- the loop ----------------------------------------------------------------------------

class _Signals:
    """SIGINT and SIGTERM during the loop. Inside a step (atomic()) the first one is held
    until the step is complete, so that what gets saved is never a half-applied update; a
    second one stops at once and marks the run torn (not saved)."""

    def __init__(self, run):
        self.run, self.deferring, self.caught, self.prev = run, False, None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.prev[sig] = signal.getsignal(sig)
                if self.prev[sig] is not signal.SIG_IGN:
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, h in self.prev.items():
            signal.signal(sig, h)

    def _handle(self, signum, frame):
        if self.deferring and self.caught is None:
            self.caught = signum
            return
        if self.deferring:
            self.run.torn = True
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def atomic(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.caught is not None:
            self.caught = None
            raise KeyboardInterrupt


def _loop(run, log):
    """Steps until cfg.iters or a stop condition, then the final save; returns whether an
    interrupt (Ctrl-C or SIGTERM) ended them."""
    cfg = run.cfg
    with ckpt.open_log(os.path.join(cfg.out, ckpt.LOG)) as logf:
        run.logf = logf
        stats = TrainingStats(run.model, cfg.stats_every) if cfg.log_stats else None
        mfu = MFUMeter(run.model, _tokens_per_step(cfg), cfg.block_size, cfg.device) if cfg.mfu else None
        if mfu:
            log(f"measured peak matmul throughput: {mfu.peak / 1e9:,.1f} GFLOP/s")
        bar = make_progress(cfg.progress, total=cfg.iters, initial=run.start, say=log)
        tb = _open_tensorboard(cfg, run.start) if cfg.tensorboard else None
        out = (logf, bar, tb)
        try:
            with _Signals(run) as sigs:
                run.model.train()
                interrupted = False
                try:
                    _steps(run, sigs, out, stats, mfu, log)
                except KeyboardInterrupt:
                    interrupted = True
                    if run.pending is not None and not run.pending["eval"] and not run.torn:
                        with contextlib.suppress(KeyboardInterrupt):
                            _finish_step(run, out, sigs)  # a complete step gets its log record
                    if not run.torn:
                        log(f"\ninterrupted: saving step {run.step} to {cfg.out}")
                if not run.torn:
                    try:
                        with sigs.atomic():  # a signal now waits for the save to be complete
                            run.save()
                    except KeyboardInterrupt:
                        interrupted = True
                return interrupted
        finally:
            run.logf = None
            bar.close()
            if tb is not None:
                tb.close()


def _steps(run, sigs, out, stats, mfu, log):
    cfg = run.cfg
    if run.pending is not None:  # resumed from a save taken during step N's evaluation
        _finish_eval(run, out[1].write)
        _finish_step(run, out, sigs)
    t0 = time.perf_counter()
    while run.step < cfg.iters:
        with sigs.atomic():
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
            rec = {"step": run.step, "loss": loss, "lr": lr, "grad_norm": norm,
                   "tokens_per_s": _tokens_per_step(cfg) / dt if dt > 0 else None}
            if mfu:
                rec["mfu"] = mfu(dt)
            if tracking:
                rec["stats"] = stats.end()
            due = run.step % cfg.eval_every == 0 or run.step == cfg.iters
            run.pending = {"rec": rec, "eval": due}
            run.mark()
        _finish_eval(run, out[1].write)
        _finish_step(run, out, sigs)
        t0 = time.perf_counter()  # the evaluation's and the log's time is no step's
        if run.step % cfg.save_every == 0 and run.step != cfg.iters:
            with sigs.atomic():
                run.save()
        if _should_stop(run, run.last, log):
            break


def _finish_eval(run, say):
    rec = run.pending["rec"]
    if run.pending["eval"]:
        rec.update(run.evaluate())
        run.pending["eval"] = False
        msg = f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()
                                               if k in ("train_loss", "val_loss", "accuracy"))
        msg += f", mfu {rec['mfu']:.2%}" if rec.get("mfu") is not None else ""
        say(msg)


def _finish_step(run, out, sigs):
    logf, bar, tb = out
    with sigs.atomic():
        rec = run.pending["rec"]
        if any(k in rec for k in ("val_loss", "train_loss", "accuracy")):
            run.history.append({k: rec[k] for k in rec if k in ("step", "loss", "val_loss",
                                                                 "train_loss", "accuracy")})
        logf.write(json.dumps(rec) + "\n")
        logf.flush()
        if tb is not None:
            _tensorboard_step(tb, rec)
        run.pending, run.last = None, rec
        run.mark()
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
                                      purge_step=start if cfg.resume else None, flush_secs=10)


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


def _provider_name(device):
    return provider_name("cuda" if str(device).startswith("cuda") else "cpu")


def _jsonable_state(state):
    return json.loads(json.dumps(state, default=int))
