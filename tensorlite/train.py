"""Training a GPT, top to bottom: data -> model -> AdamW with warmup + cosine -> loop with
evaluation, logging and atomic checkpoints. `tensorlite train` is a thin layer over train().

    from tensorlite.train import TrainConfig, train
    result = train(TrainConfig(task="addition", out="runs/add"))
"""
import dataclasses
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, asdict, field

import numpy as np

from . import checkpoint as ckpt
from .backend.providers import set_kernels
from .models.gpt import GPT, GPTConfig
from .optim import AdamW
from .optim.lr_scheduler import warmup_cosine
from .nn.utils import clip_grad_norm_
from .random import manual_seed, get_rng_state, set_rng_state

PRESETS = {
    # the built-in tasks: small enough to learn addition in a minute or two on 2 cores
    "tiny": dict(n_layer=2, n_head=4, n_embd=64),
    # nanoGPT's CPU "baby" Shakespeare model
    "baby": dict(n_layer=4, n_head=4, n_embd=128),
    # nanoGPT's shakespeare-char model
    "small": dict(n_layer=6, n_head=6, n_embd=384),
}


class UsageError(ValueError):
    """Bad input from the user: the command prints it on one line and exits with code 2."""


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
    iters: int = None           # default: 2000 for tasks, 2000 for text
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
    progress: bool = True
    stop_at_accuracy: float = None  # tasks: stop once held-out exact match reaches this
    stop_after: int = None      # stop (and save) after this many steps in this invocation
    init_from: str = None       # fine-tune: start from this run's weights, config and tokenizer
    log_stats: bool = False     # per-layer activation/gradient/update statistics into log.jsonl
    stats_every: int = 10       # ... every this many steps
    mfu: bool = False           # model FLOPs utilisation against this machine's measured peak
    extra: dict = field(default_factory=dict)

    def resolved(self):
        """Fill the defaults that depend on the kind of run."""
        c = dataclasses.replace(self)
        is_task = c.data is None
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
        if c.iters < 0 or c.batch_size < 1 or c.lr <= 0:
            raise UsageError("iters must be >= 0, batch_size >= 1 and lr > 0")
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
        from .data.tasks import AdditionTask, SortTask
        self.task = AdditionTask(n_digits=cfg.task_digits, seed=cfg.seed) if cfg.task == "addition" \
            else SortTask(seed=cfg.seed)
        from .tokenizers import CharTokenizer
        self.tokenizer = CharTokenizer(list(self.task.chars))
        self.block_size = self.task.block_size

    def batch(self, split, batch_size, block_size, rng):
        return self.task.get_batch(batch_size, rng)


class TextData:
    def __init__(self, cfg, tokenizer, out_dir):
        from .data.text import TokenFile
        self.tokenizer = tokenizer
        key = json.dumps(tokenizer.to_dict(), sort_keys=True)
        self.file = TokenFile(cfg.data, tokenizer, tokenizer_key=key, cache_dir=out_dir,
                              block_size=cfg.block_size)
        self.block_size = cfg.block_size

    def batch(self, split, batch_size, block_size, rng):
        return self.file.get_batch(split, batch_size, block_size, rng)


def build_tokenizer(cfg):
    from .data.text import _read_utf8
    from .tokenizers import BPETokenizer, CharTokenizer, load_gpt2_tokenizer
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


# ---- the loop ----------------------------------------------------------------------------

def train(cfg, log=print):
    """Train per cfg; returns a dict with the final train/val loss (and task accuracy)."""
    import tensorlite as tl
    given = cfg
    cfg = cfg.resolved()
    out = cfg.out
    # nothing is written until the inputs have been checked
    if cfg.device == "cuda" and not tl.cuda.is_available():
        from .backend.device import cuda_unavailable_reason
        raise UsageError(f"--device cuda: {cuda_unavailable_reason()}")
    if cfg.data is not None and not os.path.isfile(cfg.data):
        raise UsageError(f"data file {cfg.data} does not exist")
    init_tokenizer = None
    if cfg.init_from:
        from .finetune import prepare_init_from
        init_tokenizer = prepare_init_from(cfg, given)
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
    if cfg.kernels:
        set_kernels(cfg.kernels)
    if cfg.threads:
        tl.set_num_threads(cfg.threads)
    manual_seed(cfg.seed)

    # data and tokenizer
    if cfg.data is None:
        data = TaskData(cfg)
        cfg.block_size = data.block_size
    else:
        if cfg.block_size is None:
            cfg.block_size = 64
        if cfg.resume:
            from .tokenizers import load_tokenizer
            tokenizer = load_tokenizer(os.path.join(out, ckpt.TOKENIZER))
        else:
            tokenizer = init_tokenizer or build_tokenizer(cfg)
        data = TextData(cfg, tokenizer, out)

    mcfg = GPTConfig(vocab_size=data.tokenizer.vocab_size, block_size=cfg.block_size,
                     n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                     dropout=cfg.dropout, bias=cfg.bias)
    model = GPT(mcfg).to(cfg.device)
    if cfg.init_from and not cfg.resume:
        from .finetune import load_init_weights
        load_init_weights(model, cfg.init_from)
        log(f"initialised from {cfg.init_from} (weights only; a fresh optimizer)")
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                 {"params": no_decay, "weight_decay": 0.0}],
                lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    rng = np.random.default_rng(cfg.seed)
    start = 0
    history = []
    if cfg.resume:
        state = ckpt.load_checkpoint(out, model, opt)
        start = state["step"]
        rng.bit_generator.state = state["data_rng"]
        set_rng_state(state["tl_rng"])
        history = state.get("history", [])
        _truncate_log(os.path.join(out, "log.jsonl"), start)
        log(f"resumed {out} at step {start}")
    else:
        ckpt.write_json(os.path.join(out, ckpt.CONFIG), {"model": mcfg.to_dict(), "train": _jsonable(cfg)})
        data.tokenizer.save(os.path.join(out, ckpt.TOKENIZER))
        open(os.path.join(out, "log.jsonl"), "w").close()
    log(f"model: {model.num_parameters():,} parameters ({cfg.n_layer} layers, {cfg.n_head} heads, "
        f"{cfg.n_embd} dims, block {cfg.block_size}, vocab {mcfg.vocab_size}); kernels: "
        f"{_provider_name(cfg.device)}")

    def save(step):
        ckpt.save_checkpoint(out, model, opt, {
            "step": step, "data_rng": _jsonable_state(rng.bit_generator.state),
            "tl_rng": get_rng_state(), "history": history})

    def evaluate(step):
        model.eval()
        erng = np.random.default_rng([cfg.seed, step])  # evaluation never touches training RNGs
        res = {}
        with tl.no_grad():
            for split in (("train", "val") if cfg.data is not None else ("val",)):
                losses = []
                for _ in range(cfg.eval_iters):
                    x, y = data.batch(split, cfg.batch_size, cfg.block_size, erng)
                    _, loss = model(tl.tensor(x, device=cfg.device), tl.tensor(y, device=cfg.device))
                    losses.append(loss.item())
                res[f"{split}_loss"] = float(np.mean(losses))
            if cfg.data is None:
                res["accuracy"] = task_accuracy(model, data.task, cfg.device)
        model.train()
        return res

    logf = open(os.path.join(out, "log.jsonl"), "a")
    bar = _progress(cfg, start)
    tokens_per_step = cfg.batch_size * cfg.block_size
    from .stats import TrainingStats
    from .summary import MFUMeter
    stats = TrainingStats(model, cfg.stats_every) if cfg.log_stats else None
    mfu = MFUMeter(model, tokens_per_step, cfg.block_size, cfg.device) if cfg.mfu else None
    if mfu:
        log(f"measured peak matmul throughput: {mfu.peak / 1e9:,.1f} GFLOP/s")
    result = {}
    interrupted = False
    prev_handler = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    step = start
    t0 = time.perf_counter()
    try:
        model.train()
        while step < cfg.iters:
            lr = cfg.lr * warmup_cosine(step, cfg.warmup, cfg.iters, cfg.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            x, y = data.batch("train", cfg.batch_size, cfg.block_size, rng)
            tracking = stats is not None and stats.begin(step + 1)
            _, loss = model(tl.tensor(x, device=cfg.device), tl.tensor(y, device=cfg.device))
            opt.zero_grad()
            loss.backward()
            if tracking:
                stats.grads()
            norm = clip_grad_norm_(list(model.parameters()), cfg.grad_clip) if cfg.grad_clip else None
            if tracking:
                stats.snapshot()
            opt.step()
            step += 1
            dt = time.perf_counter() - t0
            t0 = time.perf_counter()
            rec = {"step": step, "loss": loss.item(), "lr": lr, "grad_norm": norm,
                   "tokens_per_s": tokens_per_step / dt if dt > 0 else None}
            if mfu:
                rec["mfu"] = mfu(dt)
            if tracking:
                rec["stats"] = stats.end()
            if step % cfg.eval_every == 0 or step == cfg.iters:
                rec.update(evaluate(step))
                history.append({k: rec[k] for k in rec if k in ("step", "loss", "val_loss", "train_loss",
                                                                 "accuracy")})
                msg = f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in rec.items()
                                                   if k in ("train_loss", "val_loss", "accuracy"))
                msg += f", mfu {rec['mfu']:.2%}" if rec.get("mfu") is not None else ""
                (bar.write if bar else log)(msg)
                t0 = time.perf_counter()
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            if bar:
                bar.update(1)
                bar.set_postfix(loss=f"{rec['loss']:.4f}", lr=f"{lr:.2e}",
                                tok_s=f"{rec['tokens_per_s'] or 0:,.0f}",
                                **({"mfu": f"{rec['mfu'] or 0:.2%}"} if mfu else {}))
            if step % cfg.save_every == 0 and step != cfg.iters:
                save(step)
            result = rec
            if cfg.stop_at_accuracy is not None and rec.get("accuracy", -1) >= cfg.stop_at_accuracy:
                log(f"held-out accuracy {rec['accuracy']:.4f} reached --stop-at-accuracy")
                break
            if cfg.stop_after is not None and step - start >= cfg.stop_after:
                break
    except KeyboardInterrupt:
        interrupted = True
        log(f"\ninterrupted: saving step {step} to {out}")
    finally:
        signal.signal(signal.SIGTERM, prev_handler)
        if bar:
            bar.close()
        logf.close()
    save(step)
    plot_losses(out)
    final = {"step": step, "interrupted": interrupted}
    final.update({k: v for k, v in result.items() if k in ("loss", "val_loss", "train_loss", "accuracy")})
    if history:
        final.update({k: v for k, v in history[-1].items() if k in ("val_loss", "train_loss", "accuracy")})
    if interrupted:
        raise KeyboardInterrupt
    return final


def task_accuracy(model, task, device, n=None):
    """Held-out exact match with greedy decoding (KV cache)."""
    import tensorlite as tl

    def predict(prompts, n_new):
        idx = tl.tensor(prompts, device=device)
        return model.generate(idx, n_new, temperature=0).numpy()[:, prompts.shape[1]:]
    return float(task.evaluate(predict, n=n))


def plot_losses(out):
    """loss.png: train loss (every step, smoothed) and val loss (at each eval)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    steps, losses, vs, vl = [], [], [], []
    with open(os.path.join(out, "log.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            steps.append(r["step"])
            losses.append(r["loss"])
            if "val_loss" in r:
                vs.append(r["step"])
                vl.append(r["val_loss"])
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=0.6, alpha=0.5, label="train (per step)")
    w = max(1, len(losses) // 50)
    if w > 1:
        sm = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(steps[w - 1:], sm, lw=1.5, label=f"train ({w}-step mean)")
    if vs:
        ax.plot(vs, vl, "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(out, "loss.png")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _progress(cfg, start):
    if not cfg.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.iters, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr)


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
    from .backend.providers import provider_name
    return provider_name("cuda" if str(device).startswith("cuda") else "cpu")


def _jsonable(cfg):
    d = asdict(cfg)
    return {k: v for k, v in d.items() if k not in ("progress", "extra", "stop_after")}


def _jsonable_state(state):
    return json.loads(json.dumps(state, default=int))


