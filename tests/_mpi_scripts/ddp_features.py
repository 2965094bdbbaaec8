"""Run under `mpiexec -n 2`: DistributedDataParallel's behaviours one by one on a small
two-branch model. Prints "ddp features ok" on every rank that passed."""
import numpy as np

import tensorlite as tl
import tensorlite.distributed as dist
from tensorlite import nn

dist.init_process_group("mpi", timeout=30)
rank, world = dist.get_rank(), dist.get_world_size()


class Net(nn.Module):
    def __init__(self, with_side=False):
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)
        if with_side:
            self.side = nn.Linear(4, 2)  # used only when forward gets side=True

    def forward(self, x, side=False):
        h = self.a(x).relu()
        out = self.b(h)
        return out + self.side(h) if side else out


def gathered(arr):
    outs = [tl.zeros(arr.size) for _ in range(world)]
    dist.all_gather(outs, tl.tensor(np.ascontiguousarray(arr, dtype=np.float32).ravel()))
    return [o.numpy() for o in outs]


def same_on_all_ranks(arr):
    got = gathered(arr)
    return all(np.array_equal(got[0], g) for g in got[1:])


def grads(model):
    return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}


tl.manual_seed(100 + rank)  # different weights per rank before wrapping
net = Net()
ddp = dist.DistributedDataParallel(net, bucket_cap_mb=1e-5)  # one parameter per bucket
assert ddp.bucket_sizes == [1] * 4, ddp.bucket_sizes
for p in net.parameters():
    assert same_on_all_ranks(p.detach().numpy()), "construction must broadcast rank 0's weights"
assert ddp.module is net

rng = np.random.default_rng(rank)
x = tl.tensor(rng.standard_normal((5, 3)).astype(np.float32))

# a synced backward: .grad is the average of the ranks' local gradients
ref = Net()
ref.load_state_dict(net.state_dict())
ref(x).sum().backward()
local = grads(ref)
ddp(x).sum().backward()
for n, g in grads(net).items():
    every = gathered(local[n])
    np.testing.assert_allclose(g.ravel(), np.mean(every, axis=0), rtol=1e-6, atol=1e-7)
    assert same_on_all_ranks(g)

# no_sync: gradients stay local and accumulate; the next synced backward averages the sum
net.zero_grad()
ref.zero_grad()
with ddp.no_sync():
    ddp(x).sum().backward()
ref(x).sum().backward()
np.testing.assert_array_equal(net.a.weight.grad.numpy(), ref.a.weight.grad.numpy())
ddp(x * 2).sum().backward()
ref(x * 2).sum().backward()
every = gathered(ref.a.weight.grad.numpy())
np.testing.assert_allclose(net.a.weight.grad.numpy().ravel(), np.mean(every, axis=0), rtol=1e-6)

# a forward under no_grad, or the wrapped module called directly, syncs nothing
with tl.no_grad():
    ddp(x)
net.zero_grad()
net(x).sum().backward()  # bypasses the wrapper: local gradients (each rank has its own x)
assert not same_on_all_ranks(net.a.weight.grad.numpy())

# a parameter that only rank 0 uses: without find_unused_parameters the sync does not
# finish inside backward on rank 1, and the next forward says what to do
tl.manual_seed(7)
net = Net(with_side=True)
ddp = dist.DistributedDataParallel(net)
ddp(x, side=(rank == 0)).sum().backward()
if rank == 1:
    try:
        ddp(x)
        raise AssertionError("an unfinished sync must be reported")
    except RuntimeError as e:
        assert "finish_gradient_sync" in str(e) and "side.weight" in str(e), e
ddp.finish_gradient_sync()  # every rank calls it; a no-op on rank 0
ddp.finish_gradient_sync()  # twice is fine
side = net.side.weight.grad.numpy()
assert same_on_all_ranks(side)
assert np.abs(side).sum() > 0  # rank 0's gradient, halved

# find_unused_parameters: forward finds the unused branch, backward finishes by itself
ddp2 = dist.DistributedDataParallel(net, find_unused_parameters=True)
net.zero_grad()
ddp2(x, side=(rank == 0)).sum().backward()
assert not ddp2._armed
assert same_on_all_ranks(net.side.weight.grad.numpy())
net.zero_grad()
ddp2(x).sum().backward()  # unused on every rank: its .grad stays None, as without DDP
assert net.side.weight.grad is None and net.a.weight.grad is not None

# state dicts: no "module." prefix; PyTorch-style prefixed keys load too
sd = ddp.state_dict()
assert list(sd) == list(net.state_dict()) and not any(k.startswith("module.") for k in sd)
ddp.load_state_dict({"module." + k: v.numpy() * 0 for k, v in sd.items()})
assert float(np.abs(net.a.weight.detach().numpy()).sum()) == 0.0

# ranks that wrap different models are told so, on every rank, before anything else runs
try:
    dist.DistributedDataParallel(Net(with_side=(rank == 1)))
    raise AssertionError("different models must be refused")
except RuntimeError as e:
    assert "every rank must wrap the same model" in str(e), e

print(f"ddp features ok rank {rank}", flush=True)
dist.destroy_process_group()
