"""Pieces of train.py's loop that hold no run state: signal deferral around a step, the
TensorBoard writer, and the split of one global batch into micro-batches (--grad-accum,
and the ranks of a distributed run).

The loop itself stays in train.py, calling train.train_step by its module name so that a
test can wrap it."""
import contextlib
import os
import signal
import threading

from . import checkpoint as ckpt
from .nn.utils import clip_grad_norm_
from .errors import UsageError
from .serialization import TEMP_PREFIX


class Signals:
    """SIGINT and SIGTERM during the loop. Inside a step (atomic()) the first one is held
    until the step is complete, so that what gets saved is never a half-applied update; a
    second one stops at once and marks the run torn (not saved).

    agree (a distributed run: Dist.any): the ranks must stop after the same step, so the
    first signal is held wherever it comes, and poll(), which every rank calls after each
    step, stops all of them once any rank holds one."""

    def __init__(self, run, agree=None):
        self.run, self.deferring, self.caught, self.prev = run, False, None, {}
        self.agree = agree

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
        if (self.deferring or self.agree is not None) and self.caught is None:
            self.caught = signum
            return
        if self.deferring or self.agree is not None:
            self.run.torn = True
        raise KeyboardInterrupt

    def poll(self):
        if self.agree is not None and self.agree(self.caught is not None):
            self.caught = None
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def atomic(self):
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.caught is not None and self.agree is None:
            self.caught = None
            raise KeyboardInterrupt


class Dist:
    """This process's place in a `mpiexec -n N tensorlite train` job (rank 0 of 1 without a
    launcher). Rank 0 alone writes the run folder; every rank computes the same
    evaluations from the same weights, so that stop decisions agree without messages."""

    def __init__(self, rank=0, world=1, module=None, owned=False, device="cpu"):
        self.rank, self.world, self.module, self.owned = rank, world, module, owned
        # where the reduced numbers travel: NCCL moves GPU arrays only
        self.device = device if module is not None and module.get_backend() == "nccl" else "cpu"

    @property
    def writer(self):
        return self.rank == 0

    def barrier(self):
        if self.world > 1:
            self.module.barrier()

    def mean(self, value):
        """value averaged over the ranks (the logged loss)."""
        if self.world == 1:
            return value
        return self._reduce(value, self.module.ReduceOp.AVG)

    def any(self, flag):
        """Whether flag is true on some rank (an interrupt that one rank caught)."""
        if self.world == 1:
            return bool(flag)
        return self._reduce(1.0 if flag else 0.0, self.module.ReduceOp.MAX) > 0

    def _reduce(self, value, op):
        from .factories import tensor
        t = tensor([float(value)], dtype="float64", device=self.device)
        self.module.all_reduce(t, op=op)
        return float(t.numpy()[0])

    def close(self):
        if self.owned:
            self.module.destroy_process_group()


def start_distributed(cfg):
    """A Dist for this process: under a launcher that started more than one process, join
    its job (or use the process group the caller made). Threads: without cfg.threads, each
    rank gets its share of this machine's cores."""
    from . import distributed as dist
    if dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), dist, device=cfg.device)
    info = dist.launcher_info()
    if info is None or info["world_size"] <= 1:
        return Dist()
    backend = cfg.dist_backend or ("nccl" if cfg.device == "cuda" else "mpi")
    dist.init_process_group(backend, timeout=cfg.dist_timeout)
    if cfg.threads is None:
        from ._threads import set_num_threads
        set_num_threads(max(1, (os.cpu_count() or 1) // info["local_world_size"]))
    return Dist(dist.get_rank(), dist.get_world_size(), dist, owned=True, device=cfg.device)


def my_rows(x, batch_size, grad_accum, rank):
    """Rank `rank`'s share of a global batch of batch_size * grad_accum * world rows: the
    rank-th contiguous block of batch_size * grad_accum rows. The global batch is drawn
    whole on every rank from the same rng, so which examples a step trains on depends only
    on the seed and the product, not on how it is divided among ranks and micro-steps."""
    share = batch_size * grad_accum
    return x[rank * share:(rank + 1) * share]


# ---- the run folder -----------------------------------------------------------------------

def check_writable(out_dir):
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


class _NoLock:
    def close(self):
        pass


NO_LOCK = _NoLock()  # the lock of a rank that does not write


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


def open_tensorboard(cfg, start):
    # purge_step: on --resume, the events logged after the checkpoint are dropped, as the
    # log.jsonl lines are, so the curves show each step once
    return tensorboard_writer_class()(os.path.join(cfg.out, TENSORBOARD_DIR),
                                      purge_step=start if cfg.resume else None, flush_secs=10)


def tensorboard_step(tb, rec):
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


def clip_and_step(model, optimizer, grad_clip=None, stats=None, scaler=None):
    """The end of every training step once the gradients are in: --log-stats sees them
    (stats.grads), clip to grad_clip (None or 0: no clipping), stats.snapshot sees the
    weights just before the update, then the optimizer steps (through a GradScaler, which
    unscales first and skips a step whose gradients overflowed). Returns the gradient norm
    before clipping, or None without clipping."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if stats is not None:
        stats.grads()
    norm = clip_grad_norm_(list(model.parameters()), grad_clip) if grad_clip else None
    if stats is not None:
        stats.snapshot()
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return norm
