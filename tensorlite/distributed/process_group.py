"""The default process group: PyTorch's torch.distributed functions over one backend.

Every collective is issued non-blocking and then polled against a deadline, so a rank that
died or hangs makes the others fail with DistBackendError after `timeout` instead of
blocking forever inside MPI or NCCL. An uncaught exception on any rank then calls
MPI_Abort (the excepthook installed by init_process_group), which makes the launcher
(mpiexec) kill every rank: one failure ends the whole job, quickly and with its reason.
"""
import atexit
import enum
import os
import sys
import time
from datetime import timedelta

import numpy as np

from ..backend.device import xp_of
from ..tensor import Tensor

default_pg_timeout = timedelta(minutes=30)  # PyTorch's default


class DistBackendError(RuntimeError):
    """A collective failed or timed out; the process group cannot be used afterwards."""


class ReduceOp(enum.Enum):
    SUM = "sum"
    AVG = "avg"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    BAND = "band"
    BOR = "bor"
    BXOR = "bxor"


class _State:
    backend = None
    timeout_s = None
    failed = None          # the message of the collective that broke the group
    prev_excepthook = None


_S = _State()

# rank / size variables set by the launchers we know: MPICH/Intel (PMI_), Open MPI (OMPI_),
# PMIx, Slurm, and torchrun-style RANK/WORLD_SIZE
_RANK_VARS = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS", "WORLD_SIZE")
_LOCAL_VARS = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "LOCAL_WORLD_SIZE")


def _first_int(names):
    for n in names:
        v = os.environ.get(n)
        if v is not None and v.strip().lstrip("-").isdigit():
            return int(v)
    return None


def launcher_info():
    """{'rank', 'world_size', 'local_rank', 'local_world_size'} as the launcher's environment
    gives them, or None when no launcher started this process. Read before
    init_process_group: to decide whether to initialise at all, or how many threads each of
    the ranks on this machine may use (`tensorlite train` under mpiexec)."""
    size = _first_int(_SIZE_VARS)
    if size is None:
        return None
    rank = _first_int(_RANK_VARS) or 0
    local, local_size = _first_int(_LOCAL_VARS), _first_int(_LOCAL_SIZE_VARS)
    return {"rank": rank, "world_size": size, "local_rank": rank if local is None else local,
            "local_world_size": size if local_size is None else local_size}


def _seconds(timeout):
    if timeout is None:
        return None
    s = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not s > 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return s


def is_available():
    """Whether the MPI backend can be used (mpi4py imports)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return True


def is_initialized():
    return _S.backend is not None


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1,
                       store=None, group_name="", pg_options=None, device_id=None):
    """Join the job the launcher started (mpiexec: MPI's COMM_WORLD). backend: "mpi" (CPU
    NumPy arrays; CuPy arrays are staged through the host) or "nccl" (CuPy arrays on one GPU
    per rank; untested on hardware, see docs/DISTRIBUTED.md). world_size/rank, when given,
    must match the launcher's. timeout: a timedelta or seconds, the longest any collective
    waits for the other ranks (default 30 minutes, as PyTorch)."""
    if _S.backend is not None:
        raise RuntimeError("trying to initialize the default process group twice")
    name = (backend or "mpi").lower()
    if name not in ("mpi", "nccl"):
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl', got {backend!r}")
    if init_method not in (None, "env://"):
        raise ValueError(f"init_process_group: init_method must be None or 'env://' (the "
                         f"launcher's environment), got {init_method!r}")
    if store is not None:
        raise ValueError("init_process_group: store is not supported; launch with mpiexec")
    timeout_s = _seconds(timeout if timeout is not None else default_pg_timeout)
    if name == "mpi":
        from .mpi_backend import MPIBackend
        be = MPIBackend(timeout_s, _wait)
    else:
        from .nccl_backend import NCCLBackend
        be = NCCLBackend(timeout_s, _wait, device_id)
    env = launcher_info()
    if env is not None and env["world_size"] > 1 and be.world_size == 1:
        be.close()
        raise RuntimeError(
            f"init_process_group: the launcher started {env['world_size']} processes but MPI "
            "sees only this one: mpi4py is linked to a different MPI than the mpiexec that "
            "launched it (use the mpiexec of the MPI that mpi4py loads, e.g. the venv's "
            "bin/mpiexec from the mpich wheel)")
    for what, want, got in (("world_size", world_size, be.world_size), ("rank", rank, be.rank)):
        if want not in (None, -1) and int(want) != got:
            be.close()
            raise ValueError(f"init_process_group: {what}={want} but the launcher gave {got}")
    _S.backend, _S.timeout_s, _S.failed = be, timeout_s, None
    if be.world_size > 1 and _S.prev_excepthook is None:
        _S.prev_excepthook = sys.excepthook
        sys.excepthook = _abort_on_uncaught


def destroy_process_group(group=None):
    """Leave the group. After a failed collective this aborts the job (MPI_Abort), because a
    clean MPI_Finalize would wait for ranks that will never come."""
    be = _S.backend
    if be is None:
        return
    _S.backend = None
    if _S.prev_excepthook is not None:
        sys.excepthook, _S.prev_excepthook = _S.prev_excepthook, None
    if _S.failed is not None:
        be.abort(1)
    be.close()


def _abort_on_uncaught(etype, value, tb):
    # print first: MPI_Abort ends the process, and the reason must reach the job's log
    (_S.prev_excepthook or sys.__excepthook__)(etype, value, tb)
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.2)  # let the launcher forward what was just printed before the job is killed
    be = _S.backend
    if be is not None:
        be.abort(1)


@atexit.register
def _abort_if_broken():
    # a script that caught DistBackendError and exits normally would otherwise hang in the
    # MPI_Finalize that mpi4py runs at exit
    if _S.backend is not None and _S.failed is not None:
        _S.backend.abort(1)


def _group(group, what):
    if group is not None:
        raise ValueError(f"{what}: only the default process group (group=None) is supported")
    be = _S.backend
    if be is None:
        raise RuntimeError(f"{what}: default process group has not been initialized, please "
                           "make sure to call init_process_group")
    if _S.failed is not None:
        raise DistBackendError(f"{what}: the process group is broken by an earlier failure "
                               f"({_S.failed})")
    return be


def get_backend(group=None):
    return _group(group, "get_backend").name


def get_rank(group=None):
    return _group(group, "get_rank").rank


def get_world_size(group=None):
    return _group(group, "get_world_size").world_size


def _wait(req, what, timeout_s=None):
    """Poll a backend request until it completes or the deadline passes. The nap doubles up to
    1 ms: short waits stay short, and a long one leaves the core to the other ranks' work
    (on a small machine they share it)."""
    if req.test():
        req.finish()
        return
    t = _S.timeout_s if timeout_s is None else timeout_s
    start = time.monotonic()
    nap = 0.0
    while not req.test():
        if time.monotonic() - start > t:
            be = _S.backend
            rank = be.rank if be is not None else "?"
            size = be.world_size if be is not None else "?"
            msg = (f"{what}: rank {rank} timed out after {t:g} s waiting for the other ranks "
                   f"({size} in all): one of them exited, crashed or hangs, or called a "
                   "different collective. The job is aborted (MPI_Abort) when this error "
                   "leaves the script; pass a longer timeout= to init_process_group if the "
                   "ranks are just slow")
            _S.failed = msg
            req.on_timeout()
            raise DistBackendError(msg)
        time.sleep(nap)
        nap = min(nap * 2 if nap else 1e-5, 1e-3)
    req.finish()


class Work:
    """What async_op=True returns: wait() blocks (up to the group's timeout) until the
    collective is done and its result is in the tensors."""

    def __init__(self, req, what, after=None):
        self._req, self._what, self._after = req, what, after
        self._done = False

    def is_completed(self):
        if not self._done and self._req.test():
            self.wait()
        return self._done

    def wait(self, timeout=None):
        if not self._done:
            _wait(self._req, self._what, _seconds(timeout))
            if self._after is not None:
                self._after()
            self._done = True
        return True


def _array_of(t, what):
    if isinstance(t, Tensor):
        return t._data
    if isinstance(t, np.ndarray) or type(t).__module__.startswith("cupy"):
        return t
    raise TypeError(f"{what}: expected a tensorlite Tensor, got {type(t).__name__}")


def _inplace(t, what):
    """(contiguous array to communicate, function that puts it back into t)."""
    a = _array_of(t, what)
    buf = a if a.flags.c_contiguous else xp_of(a).ascontiguousarray(a)

    def put_back():
        if buf is not a:
            a[...] = buf
        if isinstance(t, Tensor):
            t._version.value += 1  # an in-place write, as far as autograd's checks go
    return buf, put_back


def _run(work, async_op):
    if async_op:
        return work
    work.wait()
    return None


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce tensor across all ranks, in place; every rank gets the result."""
    be = _group(group, "all_reduce")
    if not isinstance(op, ReduceOp):
        raise TypeError(f"all_reduce: op must be a ReduceOp, got {op!r}")
    buf, put_back = _inplace(tensor, "all_reduce")
    if op is ReduceOp.AVG and buf.dtype.kind != "f":
        raise ValueError(f"all_reduce: ReduceOp.AVG needs a floating tensor, got {buf.dtype}")
    req = be.iallreduce(buf, ReduceOp.SUM if op is ReduceOp.AVG else op)

    def after():
        if op is ReduceOp.AVG:
            buf[...] /= be.world_size
        put_back()
    return _run(Work(req, "all_reduce", after), async_op)


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank src's tensor into the tensor of every other rank, in place."""
    be = _group(group, "broadcast")
    if not 0 <= int(src) < be.world_size:
        raise ValueError(f"broadcast: src must be a rank in [0, {be.world_size - 1}], got {src}")
    buf, put_back = _inplace(tensor, "broadcast")
    return _run(Work(be.ibroadcast(buf, int(src)), "broadcast", put_back), async_op)


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """tensor_list[r] receives rank r's tensor (every rank's tensor has one shape and dtype)."""
    be = _group(group, "all_gather")
    if len(tensor_list) != be.world_size:
        raise ValueError(f"all_gather: tensor_list must hold world_size={be.world_size} "
                         f"tensors, got {len(tensor_list)}")
    a = _array_of(tensor, "all_gather")
    xp = xp_of(a)
    send = xp.ascontiguousarray(a)
    recv = xp.empty((be.world_size,) + a.shape, dtype=a.dtype)
    for r, t in enumerate(tensor_list):
        if tuple(_array_of(t, "all_gather").shape) != tuple(a.shape):
            raise ValueError(f"all_gather: tensor_list[{r}] has shape {tuple(t.shape)}, "
                             f"expected {tuple(a.shape)}")

    def after():
        for r, t in enumerate(tensor_list):
            _array_of(t, "all_gather")[...] = recv[r]
            if isinstance(t, Tensor):
                t._version.value += 1
    return _run(Work(be.iallgather(send, recv), "all_gather", after), async_op)


def barrier(group=None, async_op=False, device_ids=None):
    """Return once every rank has entered the barrier (or fail after the timeout)."""
    be = _group(group, "barrier")
    return _run(Work(be.ibarrier(), "barrier"), async_op)
