"""The "nccl" backend: collectives on CuPy arrays through cupy.cuda.nccl, one GPU per rank.

UNTESTED ON HARDWARE: written against CuPy's NcclCommunicator API and checked only for
importing cleanly without a GPU (docs/DISTRIBUTED.md). CuPy is imported when the backend is
created, never when this module is imported.

MPI still starts the job: it gives the rank, the world size and the local rank (which GPU),
and carries NCCL's unique id from rank 0 to the others. Collectives run on a stream of our
own that first waits for the current stream (so they see the gradients the backward wrote);
an event recorded after each one is what _wait polls, so a dead peer is noticed by the
deadline, and the communicator is aborted (ncclCommAbort) before the error is raised.
"""
from .mpi_backend import MPIBackend


class NCCLRequest:
    __slots__ = ("backend", "event", "keep")

    def __init__(self, backend, event, keep=None):
        self.backend, self.event, self.keep = backend, event, keep

    def test(self):
        return self.event.done

    def finish(self):
        # later kernels on the current stream must see the result
        self.backend.cupy.cuda.get_current_stream().wait_event(self.event)
        self.keep = None

    def on_timeout(self):
        self.backend.abort_nccl()


class NCCLBackend:
    name = "nccl"

    def __init__(self, timeout_s, wait, device_id=None):
        try:
            import cupy
            from cupy.cuda import nccl
        except ImportError as e:
            raise RuntimeError(f"backend 'nccl' needs CuPy built with NCCL ({e}); "
                               "use backend='mpi' on CPUs") from None
        if not getattr(nccl, "available", False):
            raise RuntimeError("backend 'nccl': this CuPy has no NCCL (cupy.cuda.nccl.available "
                               "is False); install NCCL or use backend='mpi'")
        self.cupy, self.nccl = cupy, nccl
        self.mpi = MPIBackend(timeout_s, wait)
        MPI = self.mpi.MPI
        self.rank, self.world_size = self.mpi.rank, self.mpi.world_size
        self.host = self.mpi  # small host-side metadata (DDP's checks) travels over MPI
        if device_id is None:
            local = self.mpi.comm.Split_type(MPI.COMM_TYPE_SHARED)
            device_id = local.Get_rank() % cupy.cuda.runtime.getDeviceCount()
            local.Free()
        cupy.cuda.Device(int(getattr(device_id, "index", device_id) or 0)).use()
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.mpi.comm.bcast(uid, root=0)
        # ncclCommInitRank blocks until every rank joins: meet at a polled barrier first so a
        # rank that died before this point is reported by the deadline, not by a hang
        wait(self.mpi.ibarrier(), "init_process_group (before NCCL init)", timeout_s)
        self.comm = nccl.NcclCommunicator(self.world_size, uid, self.rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._ops = {"sum": nccl.NCCL_SUM, "product": nccl.NCCL_PROD, "min": nccl.NCCL_MIN,
                     "max": nccl.NCCL_MAX}
        self._types = {"float16": nccl.NCCL_FLOAT16, "float32": nccl.NCCL_FLOAT32,
                       "float64": nccl.NCCL_FLOAT64, "int32": nccl.NCCL_INT32,
                       "int64": nccl.NCCL_INT64, "uint8": nccl.NCCL_UINT8,
                       "int8": nccl.NCCL_INT8}

    def _check(self, a, what):
        if not type(a).__module__.startswith("cupy"):
            raise TypeError(f"{what}: backend 'nccl' needs cuda tensors, got a "
                            f"{type(a).__module__} array; move it with .cuda() or use 'mpi'")
        t = self._types.get(a.dtype.name)
        if t is None:
            raise TypeError(f"{what}: backend 'nccl' has no dtype {a.dtype}; "
                            f"allowed: {', '.join(self._types)}")
        return t

    def _launch(self, fn, keep=None):
        cur = self.cupy.cuda.get_current_stream()
        self.stream.wait_event(cur.record())
        fn(self.stream.ptr)
        # keep: arrays the collective reads or writes, alive until it is done
        return NCCLRequest(self, self.stream.record(), keep)

    def iallreduce(self, a, op):
        t = self._check(a, "all_reduce")
        nop = self._ops.get(op.value)
        if nop is None:
            raise ValueError(f"all_reduce: backend 'nccl' has no ReduceOp.{op.name}; "
                             f"allowed: SUM, AVG, PRODUCT, MIN, MAX")
        p = a.data.ptr
        return self._launch(lambda s: self.comm.allReduce(p, p, a.size, t, nop, s), a)

    def ibroadcast(self, a, src):
        t = self._check(a, "broadcast")
        return self._launch(lambda s: self.comm.bcast(a.data.ptr, a.size, t, src, s), a)

    def iallgather(self, send, recv):
        t = self._check(send, "all_gather")
        return self._launch(lambda s: self.comm.allGather(send.data.ptr, recv.data.ptr,
                                                          send.size, t, s), (send, recv))

    def ibarrier(self):
        # NCCL has no barrier: a one-element all-reduce is one (PyTorch does the same)
        one = self.cupy.zeros(1, dtype=self.cupy.float32)
        return self._launch(lambda s: self.comm.allReduce(one.data.ptr, one.data.ptr, 1,
                                                          self.nccl.NCCL_FLOAT32,
                                                          self.nccl.NCCL_SUM, s), one)

    def abort_nccl(self):
        comm, self.comm = getattr(self, "comm", None), None
        if comm is not None:
            comm.abort()

    def abort(self, code=1):
        self.abort_nccl()
        self.mpi.abort(code)

    def close(self):
        comm, self.comm = getattr(self, "comm", None), None
        if comm is not None:
            self.stream.synchronize()
            comm.destroy()
        self.mpi.close()
