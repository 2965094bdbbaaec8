"""Data-parallel GPT training on CPUs: 2 ranks x 1 thread against 1 rank x 1 thread.

Each rank runs the same per-rank batch (weak scaling: 2 ranks train on twice the tokens
per step), so the ideal tokens/s ratio is 2.0 on two free cores. Every step is forward,
backward (DDP all-reduces gradient buckets during it), finish_gradient_sync, AdamW. Reported
per config: the median step time (the slowest rank's), tokens/s for both runs and their
ratio, the time a step spends blocked waiting for the all-reduce after backward (what the
overlap did not hide, ddp.comm_stats["wait_s"]), and, for scale, one blocking all_reduce of
all the gradients at once, timed on its own.

    python benchmarks/distributed.py                  # both configs, ~1-2 minutes
    python benchmarks/distributed.py --configs tiny --steps-tiny 5   # smoke test

"small" is nanoGPT's shakespeare-char model (6 layers, 6 heads, 384 dims, T=256); "tiny"
(4 layers, 4 heads, 128 dims, T=64) is the one to iterate with on a small machine. Writes
benchmarks/results/distributed.json (--out to change).
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = {
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch=4),
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch=8),
}


def worker(a):
    import tensorlite as tl
    from tensorlite.models import GPT, GPTConfig
    tl.set_num_threads(1)
    c = CONFIGS[a.config]
    dist = None
    rank, world = 0, 1
    if a.ddp:
        import tensorlite.distributed as dist
        dist.init_process_group("mpi", timeout=300)
        rank, world = dist.get_rank(), dist.get_world_size()
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=65, block_size=c["block_size"], n_layer=c["n_layer"],
                          n_head=c["n_head"], n_embd=c["n_embd"], dropout=0.0))
    net = dist.DistributedDataParallel(model) if dist else model
    opt = tl.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(rank)
    B, T = c["batch"], c["block_size"]
    times, waits = [], []
    for step in range(a.warmup + a.steps):
        d = rng.integers(0, 65, size=(B, T + 1))
        x, y = tl.tensor(d[:, :-1]), tl.tensor(d[:, 1:])
        if dist and step == a.warmup:
            dist.barrier()
        w0 = net.comm_stats["wait_s"] if dist else 0.0
        t0 = time.perf_counter()
        _, loss = net(x, y)
        opt.zero_grad()
        loss.backward()
        if dist:
            net.finish_gradient_sync()
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
            waits.append((net.comm_stats["wait_s"] if dist else 0.0) - w0)
    n_params = sum(p.numel() for p in model.parameters())
    res = {"rank_step_s": statistics.median(times), "rank_wait_s": statistics.median(waits),
           "parameters": n_params, "world_size": world, "batch_per_rank": B, "block_size": T}
    if dist:
        # the slowest rank sets the pace of a synchronous step
        both = tl.tensor([res["rank_step_s"], res["rank_wait_s"]], dtype="float64")
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        res["step_s"], res["wait_s_per_step"] = both.tolist()
        flat = tl.zeros(n_params)
        reps = []
        for _ in range(5):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            reps.append(time.perf_counter() - t0)
        res["allreduce_all_grads_s"] = statistics.median(reps)
        res["buckets"] = len(net.bucket_sizes)
        res["grad_mb"] = n_params * 4 / 2 ** 20
    else:
        res["step_s"], res["wait_s_per_step"] = res["rank_step_s"], 0.0
    res["tokens_per_s"] = world * B * T / res["step_s"]
    if rank == 0:
        pathlib.Path(a.json).write_text(json.dumps(res))
    if dist:
        dist.destroy_process_group()


def _mpiexec():
    here = pathlib.Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else shutil.which("mpiexec")


def run(config, ranks, steps, warmup, tmp):
    out = pathlib.Path(tmp) / f"{config}_{ranks}.json"
    cmd = [sys.executable, __file__, "--worker", "--config", config, "--steps", str(steps),
           "--warmup", str(warmup), "--json", str(out)]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks)] + cmd + ["--ddp"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return json.loads(out.read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="tiny,small")
    p.add_argument("--steps-tiny", type=int, default=20)
    p.add_argument("--steps-small", type=int, default=4)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ddp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    if _mpiexec() is None:
        raise SystemExit("needs mpiexec: pip install 'tensorlite[distributed]'")
    load0 = os.getloadavg()
    t_start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in a.configs.split(","):
            steps = a.steps_small if config == "small" else a.steps_tiny
            warmup = 1 if config == "small" else 3
            one = run(config, 1, steps, warmup, tmp)
            two = run(config, 2, steps, warmup, tmp)
            row = {"config": config, **{k: v for k, v in CONFIGS[config].items()},
                   "parameters": one["parameters"], "steps": steps, "warmup": warmup,
                   "one_rank": one, "two_ranks": two,
                   "tokens_per_s_ratio": two["tokens_per_s"] / one["tokens_per_s"],
                   "wait_fraction_of_step": two["wait_s_per_step"] / two["step_s"]}
            rows.append(row)
            print(f"{config:5s} {one['parameters'] / 1e6:5.2f}M params: 1 rank {one['step_s'] * 1e3:7.1f} ms/step "
                  f"{one['tokens_per_s']:7.0f} tok/s | 2 ranks {two['step_s'] * 1e3:7.1f} ms/step "
                  f"{two['tokens_per_s']:7.0f} tok/s | ratio {row['tokens_per_s_ratio']:.2f} | "
                  f"all-reduce wait {two['wait_s_per_step'] * 1e3:.1f} ms/step "
                  f"({100 * row['wait_fraction_of_step']:.1f} %), one blocking all_reduce of "
                  f"{two['grad_mb']:.1f} MB {two['allreduce_all_grads_s'] * 1e3:.1f} ms", flush=True)
    from mpi4py import MPI

    from tensorlite.backend.registry import provider_name
    env = {"cpu": platform.machine(), "cores_visible": os.cpu_count(), "threads_per_rank": 1,
           "python": platform.python_version(), "numpy": np.__version__,
           "tensorlite_kernels": provider_name("cpu"),
           "mpi": MPI.Get_library_version().splitlines()[0].strip(),
           "loadavg_before": load0, "loadavg_after": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "wall_s": round(time.perf_counter() - t_start, 1)}
    out = pathlib.Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"results": rows, "environment": env}, indent=1) + "\n")
    print(f"wrote {out} ({env['wall_s']} s; load average {load0[0]:.1f} before, "
          f"{env['loadavg_after'][0]:.1f} after on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
