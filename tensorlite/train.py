"""Training a GPT, top to bottom: data -> model -> AdamW with warmup + cosine -> loop with
evaluation, logging and crash-safe checkpoints. `tensorlite train` is a thin layer over train().

    from tensorlite.train import TrainConfig, train
    result = train(TrainConfig(task="addition", out="runs/add"))

train() checks its inputs (train_config.py), sets up (or resumes) the run, then repeats
train_step(), the forward/backward/update of one batch, which a hand-written loop can call
on its own. The batches are a DataLoader's over the text file's windows or the task's
examples (train_data.py), its sampler drawing from the run's data generator. Checkpoints
are folders published by a rename (checkpoint.py); a resumed run continues bit-exactly
however the previous one ended: Ctrl-C, SIGTERM or kill -9.
"""
import contextlib
import json
import os
import shutil
import time

import numpy as np

from . import checkpoint as ckpt
from . import cuda
from ._threads import set_num_threads
from .amp import GradScaler, autocast
from .autograd.grad_mode import no_grad
from .backend.device import cuda_unavailable_reason
from .backend.registry import provider_name, set_kernels
from .checkpoint import latest_checkpoint  # noqa: F401  (part of this module's API)
from .classify_run import ClassifyTask
from .data.text import DataError
from .distributed import DistributedDataParallel
from .errors import UsageError
from .factories import tensor
from .finetune import load_init_weights, prepare_init_from
from .models.gpt import GPT, GPTConfig
from .optim import AdamW
from .optim.lr_scheduler import warmup_cosine
from .plots import plot_losses
from .progress import make_progress
from .random import get_rng_state, manual_seed, set_rng_state
from .seq2seq_run import Seq2SeqTaskData, is_seq2seq_task, run_is_seq2seq
from .serialization import CheckpointError, atomic_write_bytes
from .stats import TrainingStats
from .summary import MFUMeter
from .tokenizers import load_tokenizer
from .train_loop import (NO_LOCK, clip_and_step, TENSORBOARD_DIR, Dist, Signals, check_writable,  # noqa: F401
                         my_rows, open_tensorboard, start_distributed, tensorboard_step,
                         tensorboard_writer_class)
from .train_data import TaskData, TextData, build_tokenizer, task_accuracy  # noqa: F401
from .train_config import (LIMITS, PRESETS, TrainConfig, check_fields, check_resume,  # noqa: F401
                           data_fingerprint, describe_config, fill_from_run, limit_text,
                           resume_config, saved_form, saved_train_config)

_LOW = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}  # --dtype -> autocast's


# ---- one step ----------------------------------------------------------------------------

def train_step(model, optimizer, x, y, grad_clip=None, stats=None, grad_accum=1, scaler=None):
    """One optimisation step on the batch (x, y): forward, zero_grad, backward, gradient
    clipping, optimizer step.

    model(x, y) must return (logits, loss). grad_clip: the largest global gradient norm
    (None or 0: no clipping). stats: a TrainingStats whose begin() returned True for this
    step (begin() before this call, end() after it are the caller's); its grads() sees the
    gradients and snapshot() the weights just before the update. The learning rate is
    whatever optimizer.param_groups hold.

    grad_accum N > 1: x and y hold N micro-batches of len(x) // N rows, one after the other;
    each is a forward and a backward of its loss / N, the gradients add up, then one update.
    The loss is then the mean over the micro-batches, which is the batch's mean loss when
    every row has as many target tokens. A DistributedDataParallel model all-reduces only
    after the last micro-batch (the others run under its no_sync()).

    scaler: a GradScaler (float16 training): losses scaled before backward, gradients
    unscaled before clipping. Returns (loss as a float, the gradient norm before clipping
    or None without clipping).
    """
    scale = scaler.scale if scaler is not None else (lambda v: v)
    if grad_accum == 1:
        _, loss = model(x, y)
        optimizer.zero_grad()
        scale(loss).backward()
        loss = loss.item()
    else:
        loss = _accumulate(model, optimizer, x, y, grad_accum, scale)
    if hasattr(model, "finish_gradient_sync"):
        model.finish_gradient_sync()  # a no-op unless some parameter got no gradient
    return loss, clip_and_step(model, optimizer, grad_clip, stats, scaler)


def _accumulate(model, optimizer, x, y, n, scale):
    if len(x) % n:
        raise ValueError(f"train_step: {len(x)} rows do not split into {n} micro-batches")
    b = len(x) // n
    optimizer.zero_grad()
    total = 0.0
    for k in range(n):
        last = k == n - 1
        # a DDP model syncs once, on the last backward; the others only accumulate
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") \
            else model.no_sync()
        with sync:
            _, loss = model(x[k * b:(k + 1) * b], y[k * b:(k + 1) * b])
            scale(loss / n).backward()
        total += loss.item()
    return total / n


# ---- a run -------------------------------------------------------------------------------

def train(cfg, log=print):
    """Train per cfg; returns a dict with the final train/val loss (and task accuracy).
    With cfg.resume, fields left None take the run's saved values; resume_config(out,
    overrides) gives the command line's --resume (the run's whole config, overridden)."""
    given = cfg
    check_fields(cfg)  # before the run folder is even looked at
    cfg = fill_from_run(cfg).resolved()
    dist = start_distributed(cfg)  # under `mpiexec -n N`: this rank of N
    try:
        return _train(cfg, given, dist, log if dist.writer else (lambda *a, **kw: None))
    finally:
        dist.close()


def _train(cfg, given, dist, log):
    init_tokenizer, saved = _check_inputs(cfg, given)
    if saved is not None and saved.get("world_size", 1) != dist.world:
        raise UsageError(f"--resume: {cfg.out} was trained by {saved.get('world_size', 1)} "
                         f"process(es), this is {dist.world}: resume it with as many "
                         "(mpiexec -n N), which keep its batches")
    if cfg.kernels:
        set_kernels(cfg.kernels)
    if cfg.threads:
        set_num_threads(cfg.threads)
    manual_seed(cfg.seed)
    run = _setup_run(cfg, init_tokenizer, saved, log, dist)
    if dist.world > 1:
        log(f"distributed: {dist.world} processes x batch {cfg.batch_size} x accum "
            f"{cfg.grad_accum} = {cfg.batch_size * cfg.grad_accum * dist.world} rows per step")
    try:
        interrupted = _loop(run, log)
    finally:
        run.lock.close()
    if run.torn:
        log("stopped at once by a second interrupt: not saved; --resume continues from the "
            "newest checkpoint")
    if dist.writer:
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
        self.dist, self.net = Dist(), model  # net: what the training forward runs (DDP or model)
        self.scaler = GradScaler(cfg.device) if cfg.dtype == "fp16" else None
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
        if self.scaler is not None:
            s["scaler"] = self.scaler.state_dict()
        return s

    def save(self):
        if self.dist.writer:
            if self.logf is not None:  # a checkpoint never gets ahead of its log on disk
                self.logf.flush()
                os.fsync(self.logf.fileno())
            ckpt.save_checkpoint(self.cfg.out, self.model, self.opt, self.state(),
                                 keep_last=self.cfg.keep_last)
        self.dist.barrier()  # no rank steps on while a resume could find a half-written folder

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
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.mark()

    def evaluate(self):
        """Mean loss over eval_iters batches per split, and a task's held-out accuracy."""
        cfg, model = self.cfg, self.model
        if hasattr(self.data, "evaluate"):  # a classify run: accuracy over its held-out split
            return self.data.evaluate(self)
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
                res["accuracy"] = self.data.accuracy(model, cfg.device)
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
    if cfg.init_from and run_is_seq2seq(cfg.init_from):
        raise UsageError(f"--init-from: {cfg.init_from} holds a seq2seq run; fine-tuning "
                         "continues a GPT")
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


def _setup_run(cfg, init_tokenizer, saved, log, dist):
    """Tokenizer, model and optimizer (restored from the newest checkpoint on --resume),
    all before the first write; then the run folder: a fresh run writes its tokenizer, an
    empty log and, last, its config, the mark of a run that exists."""
    out = cfg.out
    if cfg.task == "classify":
        data = ClassifyTask(cfg, log)
        tokenizer = data.tokenizer
    elif cfg.data is None:
        data = Seq2SeqTaskData(cfg) if is_seq2seq_task(cfg.task) else TaskData(cfg)
        cfg.block_size, tokenizer = data.block_size, data.tokenizer
    else:
        data = None
        if cfg.block_size is None:
            cfg.block_size = 64
        tokenizer = load_tokenizer(ckpt.tokenizer_file(out)) if cfg.resume \
            else init_tokenizer or build_tokenizer(cfg)
    if hasattr(data, "build_model"):  # an encoder-decoder task, or a classifier
        model, model_dict = data.build_model(cfg)
        layers = getattr(data, "layers", f"{cfg.n_layer}+{cfg.n_layer} encoder+decoder")
    else:
        mcfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=cfg.block_size,
                         n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                         dropout=cfg.dropout, bias=cfg.bias)
        model, model_dict, layers = GPT(mcfg), mcfg.to_dict(), str(cfg.n_layer)
    model = model.to(cfg.device)
    if cfg.init_from and not cfg.resume:
        load_init_weights(model, cfg.init_from)
        log(f"initialised from {cfg.init_from} (weights only; a fresh optimizer)")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}],
                lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    run = _Run(cfg, data, model, opt)
    run.dist = dist
    folder = latest_checkpoint(out) if cfg.resume else None
    if folder is not None:
        run.restore(folder)
    if run.step > cfg.iters:
        raise UsageError(f"--iters {cfg.iters} is below step {run.step}, where {out} stands; "
                         f"pass --iters {run.step} or more")
    dist.barrier()  # every rank has read the run folder before rank 0 writes to it
    err, run.lock = None, NO_LOCK
    if dist.writer:
        try:
            _first_write(run, tokenizer, model_dict, saved, folder, log)
        except BaseException as e:
            err = e
    if dist.any(err is not None):  # the other ranks stop too, rather than wait for rank 0
        raise err if err is not None else UsageError(f"rank 0 could not write {out}")
    if run.data is None:  # the ranks but 0: the token cache is there now
        run.data = TextData(cfg, tokenizer, out)
    if dist.world > 1:
        run.net = DistributedDataParallel(model)
        if folder is None:  # different dropout masks on every rank; the weights are rank 0's
            manual_seed(cfg.seed + dist.rank)
    log(describe_config(cfg))
    log(f"model: {model.num_parameters():,} parameters ({layers} layers, {cfg.n_head} heads, "
        f"{cfg.n_embd} dims, block {cfg.block_size}, vocab {tokenizer.vocab_size}); kernels: "
        f"{_provider_name(cfg.device)}")
    return run


def _first_write(run, tokenizer, model_dict, saved, folder, log):
    out = run.cfg.out
    existed = set(os.listdir(out)) if os.path.isdir(out) else None
    check_writable(out)
    run.lock = ckpt.lock_run(out)
    try:
        _write_run_folder(run, tokenizer, model_dict, saved, folder, log)
    except BaseException as e:
        run.lock.close()
        run.lock = NO_LOCK
        if isinstance(e, (DataError, UsageError)) and not run.cfg.resume:
            _undo_new_run(out, existed)
        raise


def _write_run_folder(run, tokenizer, model_dict, saved, folder, log):
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
    if hasattr(run.data, "save_tokenizer"):  # WordPiece: its own files, no to_dict()
        run.data.save_tokenizer(out)
    else:
        atomic_write_bytes(os.path.join(out, ckpt.TOKENIZER),
                           [json.dumps(tokenizer.to_dict()).encode(), b"\n"])
    ckpt.open_log(log_path, truncate=True).close()
    world = {"world_size": run.dist.world} if run.dist.world > 1 else {}  # resumed by as many
    ckpt.write_json(os.path.join(out, ckpt.CONFIG),
                    {"model": model_dict, "train": saved_form(cfg), **data_hash, **source, **world})


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


# ---- the loop ----------------------------------------------------------------------------

def _loop(run, log):
    """Steps until cfg.iters or a stop condition, then the final save; returns whether an
    interrupt (Ctrl-C or SIGTERM) ended them."""
    cfg = run.cfg
    writer = run.dist.writer  # the other ranks of a distributed run write nothing
    logf = ckpt.open_log(os.path.join(cfg.out, ckpt.LOG)) if writer else open(os.devnull, "w")
    with logf:
        run.logf = logf
        stats = TrainingStats(run.model, cfg.stats_every) if cfg.log_stats else None
        mfu = MFUMeter(run.model, _tokens_per_step(cfg), cfg.block_size, cfg.device) if cfg.mfu else None
        if mfu:
            log(f"measured peak matmul throughput: {mfu.peak / 1e9:,.1f} GFLOP/s")
        bar = make_progress(cfg.progress if writer else "none", total=cfg.iters, initial=run.start,
                            say=log)
        tb = open_tensorboard(cfg, run.start) if cfg.tensorboard and writer else None
        out = (logf, bar, tb)
        try:
            with Signals(run, run.dist.any if run.dist.world > 1 else None) as sigs:
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
            task = run.data if hasattr(run.data, "step") else None  # a classify run's own
            lr = task.lr(run.step) if task is not None else \
                cfg.lr * warmup_cosine(run.step, cfg.warmup, cfg.iters, cfg.min_lr_ratio)
            for g in run.opt.param_groups:
                g["lr"] = lr
            tracking = stats is not None and stats.begin(run.step + 1)
            if task is not None:
                loss, norm = task.step(run, stats if tracking else None)
            else:
                x, y = _train_batch(run)
                with autocast(cfg.device, dtype=_LOW[cfg.dtype], enabled=cfg.dtype != "fp32"):
                    loss, norm = train_step(run.net, run.opt, tensor(x, device=cfg.device),
                                            tensor(y, device=cfg.device), cfg.grad_clip,
                                            stats=stats if tracking else None,
                                            grad_accum=cfg.grad_accum, scaler=run.scaler)
            loss = run.dist.mean(loss)  # the mean over every rank's rows
            run.step += 1
            dt = time.perf_counter() - t0
            rec = {"step": run.step, "loss": loss, "lr": lr, "grad_norm": norm, "tokens_per_s":
                   _tokens_per_step(cfg) * run.dist.world / dt if dt > 0 else None}
            if mfu:
                rec["mfu"] = mfu(dt)
            if tracking:
                rec["stats"] = stats.end()
            due = run.step % cfg.eval_every == 0 or run.step == cfg.iters
            run.pending = {"rec": rec, "eval": due}
            run.mark()
        sigs.poll()  # a distributed run: every rank stops after the same step
        _finish_eval(run, out[1].write)
        _finish_step(run, out, sigs)
        t0 = time.perf_counter()  # the evaluation's and the log's time is no step's
        if run.step % cfg.save_every == 0 and run.step != cfg.iters:
            with sigs.atomic():
                run.save()
        if _should_stop(run, run.last, log):
            break


def _train_batch(run):
    """This rank's rows of the step's batch: the next batch of the data's DataLoader, whose
    sampler draws from run.rng (train_data.py)."""
    cfg, world, rank = run.cfg, run.dist.world, run.dist.rank
    # one global batch on every rank, so that batch B x accum A x N ranks trains on what
    # batch B*A*N does alone; each rank keeps its share (docs/DISTRIBUTED.md)
    x, y = run.data.batch("train", cfg.batch_size * cfg.grad_accum * world, cfg.block_size,
                          run.rng)
    if cfg.grad_accum == 1 and world == 1:
        return x, y
    return my_rows(x, cfg.batch_size, cfg.grad_accum, rank), \
        my_rows(y, cfg.batch_size, cfg.grad_accum, rank)


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
            tensorboard_step(tb, rec)
        run.pending, run.last = None, rec
        run.mark()
    bar.update(rec["step"], loss=rec["loss"], lr=rec["lr"], tok_s=rec["tokens_per_s"],
               **({"mfu": rec["mfu"]} if "mfu" in rec else {}))


def _should_stop(run, rec, log):
    cfg = run.cfg
    if cfg.stop_at_accuracy is not None and rec.get("accuracy", -1) >= cfg.stop_at_accuracy:
        log(f"held-out accuracy {rec['accuracy']:.4f} reached --stop-at-accuracy")
        return True
    return cfg.stop_after is not None and run.step - run.start >= cfg.stop_after


def _tokens_per_step(cfg):
    return cfg.batch_size * cfg.grad_accum * cfg.block_size


def _provider_name(device):
    return provider_name("cuda" if str(device).startswith("cuda") else "cpu")


def _jsonable_state(state):
    return json.loads(json.dumps(state, default=int))
