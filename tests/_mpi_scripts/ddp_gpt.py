"""Train a small GPT for a few AdamW steps, data-parallel or not, and save the final weights.

    mpiexec -n 2 python ddp_gpt.py --batch 4 --out w          # 2 ranks x 4 rows
    mpiexec -n 1 python ddp_gpt.py --batch 4 --accum 2 --out w  # 1 rank, 2 micro-steps (no_sync)
    python ddp_gpt.py --batch 8 --no-ddp --out w              # 1 process, plain, 8 rows
    mpiexec -n 2 python ddp_gpt.py --batch 4 --backend nccl --device cuda --out w  # GPUs

Every step draws one global batch of batch * accum * world rows from a generator seeded by
--seed, so the batches depend only on the seed and that product: rank r takes the r-th
contiguous share, and micro-step k the k-th `batch` rows of it. Every row has the same
number of tokens, so the mean loss over the global batch is the mean of the micro-batch
means, which is what DDP's averaging plus the 1/accum loss scale compute."""
import argparse

import numpy as np

import tensorlite as tl
from tensorlite.models import GPT, GPTConfig

p = argparse.ArgumentParser()
p.add_argument("--batch", type=int, required=True)
p.add_argument("--accum", type=int, default=1)
p.add_argument("--steps", type=int, default=50)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--bucket-cap-mb", type=float, default=25.0)
p.add_argument("--lr", type=float, default=3e-3)
p.add_argument("--eps", type=float, default=1e-8)
p.add_argument("--no-ddp", action="store_true")
p.add_argument("--backend", default="mpi")
p.add_argument("--device", default="cpu")
p.add_argument("--out", required=True)
args = p.parse_args()
tl.set_num_threads(1)

if args.no_ddp:
    rank, world, ddp = 0, 1, None
else:
    import tensorlite.distributed as dist
    dist.init_process_group(args.backend, timeout=60)
    rank, world = dist.get_rank(), dist.get_world_size()

# a different init on every rank: DDP must start all of them from rank 0's weights
tl.manual_seed(1234 + 1000 * rank)
cfg = GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
model = GPT(cfg).to(args.device)
if not args.no_ddp:
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb)
    assert len(ddp.bucket_sizes) >= 1
net = ddp if ddp is not None else model
opt = tl.optim.AdamW(model.parameters(), lr=args.lr, eps=args.eps, weight_decay=0.1)

rng = np.random.default_rng(args.seed)
rows = args.batch * args.accum * world
share = args.batch * args.accum
losses = []
for step in range(args.steps):
    # learnable rows: arithmetic sequences mod vocab_size with a random start and stride
    start = rng.integers(0, cfg.vocab_size, size=(rows, 1))
    stride = rng.integers(1, 4, size=(rows, 1))
    data = (start + stride * np.arange(cfg.block_size + 1)) % cfg.vocab_size
    mine = data[rank * share:(rank + 1) * share]
    opt.zero_grad()
    total = 0.0
    for k in range(args.accum):
        chunk = mine[k * args.batch:(k + 1) * args.batch]
        x = tl.tensor(chunk[:, :-1], device=args.device)
        y = tl.tensor(chunk[:, 1:], device=args.device)
        last = k == args.accum - 1
        if ddp is not None and not last:
            with ddp.no_sync():
                _, loss = net(x, y)
                (loss / args.accum).backward()
        else:
            _, loss = net(x, y)
            (loss / args.accum).backward()
        total += loss.item() / args.accum
    if ddp is not None:
        ddp.finish_gradient_sync()  # a no-op here: every parameter gets a gradient
    opt.step()
    losses.append(total)

weights = {k: v.cpu().numpy() for k, v in model.state_dict().items()}
if ddp is not None:
    assert list(ddp.state_dict()) == list(model.state_dict())  # no "module." prefix
    stats = ddp.comm_stats
    assert stats["syncs"] == args.steps, stats
np.savez(f"{args.out}.rank{rank}.npz", losses=np.array(losses), **weights)
print(f"rank {rank} done: loss {losses[0]:.4f} -> {losses[-1]:.4f}", flush=True)
if ddp is not None:
    dist.destroy_process_group()
