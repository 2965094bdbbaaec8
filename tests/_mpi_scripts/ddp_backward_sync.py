"""Run under `mpiexec -n 2`: DistributedDataParallel finishes the gradient sync inside
loss.backward() (post-accumulate-grad hooks start the bucket all-reduces, an end-of-backward
callback waits for them), so .grad is the average right after backward, with no
finish_gradient_sync() call. Each rank compares with one process that runs the whole global
batch itself. Prints "ddp backward sync ok" on every rank that passed."""
import numpy as np

import tensorlite as tl
import tensorlite.distributed as dist
from tensorlite import nn

dist.init_process_group("mpi", timeout=30)
rank, world = dist.get_rank(), dist.get_world_size()
ROWS = 4  # per rank and micro-batch


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 5)
        self.b = nn.Linear(5, 2)

    def forward(self, x):
        return self.b(self.a(x).tanh())


def loss_of(model, x, y):
    return ((model(x) - y) ** 2).mean()


def grads(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


def gathered(arr):
    outs = [tl.zeros(arr.size) for _ in range(world)]
    dist.all_gather(outs, tl.tensor(np.ascontiguousarray(arr, dtype=np.float32).ravel()))
    return [o.numpy() for o in outs]


def close(got, want, what):
    for n in want:
        diff = float(np.abs(got[n] - want[n]).max())
        assert diff <= 1e-6, f"{what}: {n} differs from one process by {diff:.2e}"
        assert all(np.array_equal(g, got[n].ravel()) for g in gathered(got[n])), \
            f"{what}: ranks disagree on {n}"


# the same global batches on every rank; rank r's share is rows [r * ROWS, (r + 1) * ROWS)
rng = np.random.default_rng(0)
batches = [(rng.standard_normal((world * ROWS, 3)).astype(np.float32),
            rng.standard_normal((world * ROWS, 2)).astype(np.float32)) for _ in range(3)]


def mine(k):
    x, y = batches[k]
    return tl.tensor(x[rank * ROWS:(rank + 1) * ROWS]), tl.tensor(y[rank * ROWS:(rank + 1) * ROWS])


def whole(k):
    return tl.tensor(batches[k][0]), tl.tensor(batches[k][1])


tl.manual_seed(10 + rank)  # different weights per rank: wrapping broadcasts rank 0's
net = Net()
ddp = dist.DistributedDataParallel(net, bucket_cap_mb=1e-5)  # one parameter per bucket
ref = Net()
ref.load_state_dict(net.state_dict())

# 1. one synced backward. A hook registered after DDP's on a.weight (among the last
# gradients to arrive) sees buckets already launched but the sync not yet finished: the
# all-reduces start during backward and are waited for only at its end
seen = {}


def watch(p):
    seen["launches"], seen["armed"] = ddp.comm_stats["launches"], ddp._armed


handle = net.a.weight.register_post_accumulate_grad_hook(watch)
loss_of(ref, *whole(0)).backward()
syncs = ddp.comm_stats["syncs"]
loss_of(ddp, *mine(0)).backward()
assert seen["armed"] and seen["launches"] >= 2, seen
assert not ddp._armed and ddp.comm_stats["syncs"] == syncs + 1, ddp.comm_stats
close(grads(net), grads(ref), "synced backward")
handle.remove()
ddp.finish_gradient_sync()  # a harmless no-op now
assert ddp.comm_stats["syncs"] == syncs + 1, ddp.comm_stats

# 2. no_sync: two micro-batches accumulate locally with no communication at all; the third,
# synced backward all-reduces what .grad accumulated over the three
net.zero_grad()
ref.zero_grad()
launches = ddp.comm_stats["launches"]
with ddp.no_sync():
    for k in range(2):
        loss_of(ddp, *mine(k)).backward()
assert ddp.comm_stats["launches"] == launches, "no_sync must not communicate"
loss_of(ddp, *mine(2)).backward()
assert ddp.comm_stats["launches"] == launches + len(ddp.bucket_sizes), ddp.comm_stats
for k in range(3):
    loss_of(ref, *whole(k)).backward()
close(grads(net), grads(ref), "no_sync accumulation")

# 3. autograd.grad accumulates nothing, so it fires no post-accumulate hook and syncs nothing
launches = ddp.comm_stats["launches"]
tl.autograd.grad(loss_of(ddp, *mine(0)), list(net.parameters()))
assert ddp.comm_stats["launches"] == launches, ddp.comm_stats
loss_of(ddp, *mine(1)).backward()  # the next forward re-arms; this backward syncs as usual
assert not ddp._armed

print(f"ddp backward sync ok rank {rank}", flush=True)
dist.destroy_process_group()
