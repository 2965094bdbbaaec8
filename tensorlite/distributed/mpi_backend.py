"""The "mpi" backend: collectives on NumPy arrays through mpi4py, all of them non-blocking
(MPI-3 Iallreduce, Ibcast, Iallgather, Ibarrier) so the caller can poll them against a
deadline and overlap them with computation. CuPy arrays are staged through host memory."""
import numpy as np


class MPIRequest:
    """One MPI request, as process_group._wait polls it: test() until True, then finish()."""
    __slots__ = ("req", "keep", "done")

    def __init__(self, req, keep=None, done=None):
        self.req, self.keep, self.done = req, keep, done

    def test(self):
        return self.req.Test()

    def finish(self):
        if self.done is not None:
            self.done()
            self.done = None
        self.keep = None

    def on_timeout(self):
        # MPI cannot cancel a started collective; the MPI_Abort that follows ends it
        pass


class MPIBackend:
    name = "mpi"

    def __init__(self, timeout_s, wait):
        try:
            from mpi4py import MPI
        except ImportError:
            raise RuntimeError("backend 'mpi' needs mpi4py: pip install 'tensorlite[distributed]' "
                               "(mpi4py and the mpich wheel, which brings mpiexec)") from None
        self.MPI = MPI
        world = MPI.COMM_WORLD
        self.rank, self.world_size = world.Get_rank(), world.Get_size()
        # a communicator of our own, so that the user's MPI traffic never matches ours; Idup is
        # non-blocking, so even joining times out if a rank never arrives
        comm, req = world.Idup()
        wait(MPIRequest(req), "init_process_group", timeout_s)
        self.comm = comm
        self.host = self  # where small host-side metadata goes (the NCCL backend's is MPI)
        self._ops = {"sum": MPI.SUM, "product": MPI.PROD, "min": MPI.MIN, "max": MPI.MAX,
                     "band": MPI.BAND, "bor": MPI.BOR, "bxor": MPI.BXOR}

    def _host(self, a):
        """(numpy buffer, function copying it back into a) for a NumPy or CuPy array."""
        if isinstance(a, np.ndarray):
            return a, None
        host = a.get()

        def back():
            a.set(host)
        return host, back

    def iallreduce(self, a, op):
        buf, back = self._host(a)
        return MPIRequest(self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=self._ops[op.value]),
                          buf, back)

    def ibroadcast(self, a, src):
        buf, back = self._host(a)
        return MPIRequest(self.comm.Ibcast(buf, root=src), buf, back)

    def iallgather(self, send, recv):
        sbuf, _ = self._host(send)
        rbuf, back = self._host(recv)
        return MPIRequest(self.comm.Iallgather(sbuf, rbuf), (sbuf, rbuf), back)

    def ibarrier(self):
        return MPIRequest(self.comm.Ibarrier())

    def abort(self, code=1):
        self.MPI.COMM_WORLD.Abort(code)

    def close(self):
        comm, self.comm = getattr(self, "comm", None), None
        if comm is not None:
            comm.Free()
