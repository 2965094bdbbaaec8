"""Run under `mpiexec -n 2 python collectives.py [mpi|nccl]`: each collective of
tensorlite.distributed against the value it must give, on CPU tensors (mpi) or cuda
tensors (nccl, one GPU per rank). Prints "collectives ok" on every rank that passed."""
import sys

import numpy as np

import tensorlite as tl
import tensorlite.distributed as dist

backend = sys.argv[1] if len(sys.argv) > 1 else "mpi"
dev = "cuda" if backend == "nccl" else "cpu"
dist.init_process_group(backend, timeout=30)
rank, world = dist.get_rank(), dist.get_world_size()
assert dist.is_initialized() and dist.get_backend() == backend


def host(t):
    return t.cpu().numpy()


assert world >= 2, world
ranks = np.arange(world, dtype=np.float64)

# SUM and AVG in place, float32 and int64; the tensor keeps its identity and dtype
t = tl.tensor([1.0, 2.0, 3.0], device=dev) * (rank + 1)
arr = t._data
dist.all_reduce(t)
assert t._data is arr and t.dtype == tl.float32
np.testing.assert_allclose(host(t), np.array([1.0, 2.0, 3.0]) * (ranks + 1).sum())
a = tl.tensor([rank + 1.0, 10.0], device=dev)
dist.all_reduce(a, op=dist.ReduceOp.AVG)
np.testing.assert_allclose(host(a), [(ranks + 1).mean(), 10.0])
i = tl.tensor([rank, 7], dtype=tl.int64, device=dev)
dist.all_reduce(i, op=dist.ReduceOp.MAX)
assert i.tolist() == [world - 1, 7]
m = tl.tensor([float(rank)], device=dev)
dist.all_reduce(m, op=dist.ReduceOp.MIN)
assert m.item() == 0.0
try:
    dist.all_reduce(tl.tensor([1, 2], device=dev), op=dist.ReduceOp.AVG)
    raise AssertionError("AVG of an int tensor must fail")
except ValueError as e:
    assert "AVG" in str(e)

# a non-contiguous tensor (a transposed view) is reduced into its own memory
base = tl.tensor(np.arange(6, dtype=np.float32).reshape(2, 3) + rank, device=dev)
view = base.t()
dist.all_reduce(view)
expect = (np.arange(6, dtype=np.float32).reshape(2, 3) * world + ranks.sum())
np.testing.assert_allclose(host(base), expect)

# async_op returns a Work whose wait() delivers the result
w = tl.ones(4, device=dev) * rank
work = dist.all_reduce(w, async_op=True)
assert work.wait() is True and work.is_completed()
np.testing.assert_allclose(host(w), np.full(4, ranks.sum()))

# broadcast from the last rank
b = tl.tensor([float(rank)] * 3, device=dev)
dist.broadcast(b, src=world - 1)
assert b.tolist() == [world - 1.0] * 3

# all_gather: slot r holds rank r's tensor
outs = [tl.zeros(2, device=dev) for _ in range(world)]
dist.all_gather(outs, tl.tensor([rank, rank * 10.0], device=dev))
assert [o.tolist() for o in outs] == [[r, r * 10.0] for r in range(world)]

dist.barrier()
dist.barrier(async_op=True).wait()
print(f"collectives ok rank {rank}", flush=True)
dist.destroy_process_group()
assert not dist.is_initialized()
