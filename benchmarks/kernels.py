"""Times tensorlite's fused CPU kernels: the numpy reference, the C++ provider, and
PyTorch's CPU ops as the baseline (when torch is importable), all fp32.

    python benchmarks/kernels.py                 # full run, 2 threads
    python benchmarks/kernels.py --threads 1 --ops softmax,gelu
    python benchmarks/kernels.py --quick         # tiny shapes, 1 rep (a smoke test)
    python benchmarks/kernels.py --torch-first   # `import torch` before tensorlite

Both frameworks run in this one process (the same-process setting: a notebook with both);
by default tensorlite is imported first, with --torch-first torch is (the order that once
collapsed the OpenMP build: PyTorch's OpenMP runtime was up and spinning before ours).

Each case is timed forward only ("fwd") and forward + backward ("fwd+bwd"); adamw
times one optimizer step ("step") over the weights of a small GPT block stack. The
providers take turns inside every repetition (A/B interleaving), so a slow drift
of the machine (other jobs, clocks) hits them alike; the median is reported.
GB/s is the cpp time against the minimum memory traffic of the pass (every input
read once, every output written once), a lower bound on what the kernel moves.
Results go to benchmarks/results/kernels.json and, with matplotlib, kernels.png.
"""
import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TORCH_FIRST = "--torch-first" in sys.argv
if TORCH_FIRST:  # before anything of tensorlite's is imported
    import torch  # noqa: F401

import tensorlite.reference as ref  # noqa: E402

try:
    from tensorlite import _C
    from tensorlite import _C as cpp
except ImportError as e:  # the benchmark still reports numpy (and torch) without the extension
    _C = cpp = None
    CPP_MISSING = str(e)

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

RESULTS = ROOT / "benchmarks" / "results"
F32 = 4  # bytes


# ------------------------------------------------------------------ cases
# A case builds its fp32 inputs and returns, per provider, a pair of callables
# (forward, forward+backward), plus the minimum bytes each pass moves.

def softmax_case(shape, rng):
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    n = x.size

    def ours(p):
        return (lambda: p.softmax_forward(x),
                lambda: p.softmax_backward(p.softmax_forward(x), dy))

    def theirs():
        tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)
        return (lambda: torch.softmax(tx, -1),
                lambda: torch.autograd.grad(torch.softmax(tx, -1), tx, tdy))

    return ours, theirs, {"fwd": 2 * n * F32, "fwd+bwd": 5 * n * F32}


def layer_norm_case(shape, rng):
    C = shape[-1]
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal(C, dtype=np.float32)
    b = rng.standard_normal(C, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    n = x.size

    def ours(p):
        def both():
            y, mean, rstd = p.layer_norm_forward(x, w, b, 1e-5)
            return p.layer_norm_backward(dy, x, w, mean, rstd)
        return lambda: p.layer_norm_forward(x, w, b, 1e-5), both

    def theirs():
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tdy = torch.from_numpy(dy)

        def both():
            y = F.layer_norm(tx, (C,), tw, tb, 1e-5)
            return torch.autograd.grad(y, (tx, tw, tb), tdy)
        return lambda: F.layer_norm(tx, (C,), tw, tb, 1e-5), both

    return ours, theirs, {"fwd": 2 * n * F32, "fwd+bwd": 5 * n * F32}


def cross_entropy_case(shape, rng):
    N, V = shape
    x = rng.standard_normal(shape, dtype=np.float32) * 2
    t = rng.integers(0, V, N)
    dloss = np.full(N, 1.0 / N, np.float32)  # a mean reduction folded into dloss
    n = x.size

    def ours(p):
        def both():
            loss, lse = p.cross_entropy_forward(x, t, -100, 0.0)
            return p.cross_entropy_backward(x, t, lse, dloss, -100, 0.0)
        return lambda: p.cross_entropy_forward(x, t, -100, 0.0), both

    def theirs():
        tx, tt, tdl = torch.from_numpy(x).requires_grad_(), torch.from_numpy(t), torch.from_numpy(dloss)

        def both():
            loss = F.cross_entropy(tx, tt, reduction="none")
            return torch.autograd.grad(loss, tx, tdl)
        return lambda: F.cross_entropy(tx, tt, reduction="none"), both

    return ours, theirs, {"fwd": n * F32, "fwd+bwd": 3 * n * F32}


def gelu_case(shape, rng, approximate):
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    n = x.size

    def ours(p):
        return (lambda: p.gelu_forward(x, approximate),
                lambda: (p.gelu_forward(x, approximate), p.gelu_backward(x, dy, approximate)))

    def theirs():
        tx, tdy = torch.from_numpy(x).requires_grad_(), torch.from_numpy(dy)
        return (lambda: F.gelu(tx, approximate=approximate),
                lambda: torch.autograd.grad(F.gelu(tx, approximate=approximate), tx, tdy))

    return ours, theirs, {"fwd": 2 * n * F32, "fwd+bwd": 5 * n * F32}


def attention_case(shape, rng):
    B, H, T, D = shape
    q, k, v, do = (rng.standard_normal(shape, dtype=np.float32) for _ in range(4))
    scale = 1.0 / math.sqrt(D)
    n = q.size

    def ours(p):
        def both():
            o, lse = p.attention_forward(q, k, v, None, True, scale)
            return p.attention_backward(q, k, v, o, lse, do, None, True, scale)
        return lambda: p.attention_forward(q, k, v, None, True, scale), both

    def theirs():
        tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
        tdo = torch.from_numpy(do)

        def both():
            o = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            return torch.autograd.grad(o, (tq, tk, tv), tdo)
        return lambda: F.scaled_dot_product_attention(tq, tk, tv, is_causal=True), both

    return ours, theirs, {"fwd": 4 * n * F32, "fwd+bwd": 12 * n * F32}


def adamw_case(shape, rng):
    """One optimizer step over the weights of a GPT block stack: shape = (layers, width)."""
    layers, d = shape
    per_layer = [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,),
                 (d,), (d,), (d,), (d,)]
    shapes = per_layer * layers
    grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
    n = sum(g.size for g in grads)
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)

    def ours(p):
        # each provider updates its own copies: the values drift apart, the work does not
        params = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
        ms = [np.zeros(s, np.float32) for s in shapes]
        vs = [np.zeros(s, np.float32) for s in shapes]
        step = [0]

        def one():
            step[0] += 1
            p.adamw_step(params, grads, ms, vs, step=step[0], **hp)
        return (one,)

    def theirs():
        params = [torch.from_numpy(rng.standard_normal(s, dtype=np.float32)) for s in shapes]
        for t, g in zip(params, grads):
            t.grad = torch.from_numpy(g)
        opt = torch.optim.AdamW(params, lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                                eps=hp["eps"], weight_decay=hp["weight_decay"], fused=True)
        return (opt.step,)

    # read p, g, m, v and write p, m, v
    return ours, theirs, {"step": 7 * n * F32}


FULL = [
    ("softmax", (4096, 1024), softmax_case),
    ("layer_norm", (8192, 768), layer_norm_case),
    ("cross_entropy", (8192, 65), cross_entropy_case),
    ("cross_entropy", (2048, 50257), cross_entropy_case),
    ("gelu", (8192, 3072), lambda s, r: gelu_case(s, r, "none")),
    ("gelu_tanh", (8192, 3072), lambda s, r: gelu_case(s, r, "tanh")),
    ("attention", (8, 6, 256, 64), attention_case),
    ("attention", (4, 8, 1024, 64), attention_case),
    ("adamw", (4, 384), adamw_case),
]
QUICK = [
    ("softmax", (8, 33), softmax_case),
    ("layer_norm", (8, 48), layer_norm_case),
    ("cross_entropy", (8, 65), cross_entropy_case),
    ("gelu", (8, 64), lambda s, r: gelu_case(s, r, "none")),
    ("gelu_tanh", (8, 64), lambda s, r: gelu_case(s, r, "tanh")),
    ("attention", (1, 2, 16, 8), attention_case),
    ("adamw", (1, 16), adamw_case),
]


# ------------------------------------------------------------------ timing

def time_interleaved(fns, reps, slow_s):
    """fns: {provider: callable}. Runs them in turns (rotating who goes first) and
    returns {provider: median ms}. A provider slower than slow_s per call gets only
    two timed runs, so the numpy reference does not dominate the run time."""
    times = {p: [] for p in fns}
    first = {}
    for p, f in fns.items():  # warm-up: first touches, lazy inits, thread pools
        t0 = time.perf_counter()
        f()
        first[p] = time.perf_counter() - t0
    want = {p: (min(reps, 2) if first[p] > slow_s else reps) for p in fns}
    order = list(fns)
    for r in range(reps):
        for p in order[r % len(order):] + order[:r % len(order)]:
            if len(times[p]) < want[p]:
                t0 = time.perf_counter()
                fns[p]()
                times[p].append(time.perf_counter() - t0)
    return {p: 1e3 * statistics.median(ts) for p, ts in times.items()}


def providers_for(op):
    out = {"numpy": ref}
    if cpp is not None:
        out["cpp"] = cpp
    if op == "attention":
        missing = [n for n, p in out.items() if not hasattr(p, "attention_forward")]
        for n in missing:
            print(f"note: provider {n} has no attention_forward; skipped there")
            del out[n]
    return out


def run(cases, threads, reps, slow_s, ops):
    if _C is not None:
        _C.set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    rows = []
    for op, shape, make in cases:
        if ops and op not in ops and op.split("_")[0] not in ops:
            continue
        ours, theirs, nbytes = make(shape, rng)
        provs = providers_for(op)
        fns = {name: ours(p) for name, p in provs.items()}
        if torch is not None:
            fns["torch"] = theirs()
        for i, pas in enumerate(nbytes):
            ms = time_interleaved({name: f[i] for name, f in fns.items()}, reps, slow_s)
            row = {"op": op, "shape": list(shape), "pass": pas, "ms": ms,
                   "min_bytes": nbytes[pas]}
            if "cpp" in ms:
                row["cpp_GBps"] = nbytes[pas] / (ms["cpp"] * 1e-3) / 1e9
                if "torch" in ms:
                    row["cpp_over_torch"] = ms["cpp"] / ms["torch"]
                if "numpy" in ms:
                    row["cpp_over_numpy"] = ms["cpp"] / ms["numpy"]
            rows.append(row)
            print_row(row)
    return rows


# ------------------------------------------------------------------ report

HEADER = (f"{'op':<14}{'shape':<18}{'pass':<9}{'numpy ms':>10}{'cpp ms':>9}{'torch ms':>10}"
          f"{'cpp GB/s':>10}{'cpp/torch':>11}{'cpp/numpy':>11}")


def fmt(v, spec):
    return format(v, spec) if v is not None else "-".rjust(len(format(1.0, spec)))


def print_row(r):
    ms = r["ms"]
    print(f"{r['op']:<14}{'x'.join(map(str, r['shape'])):<18}{r['pass']:<9}"
          f"{fmt(ms.get('numpy'), '10.2f')}{fmt(ms.get('cpp'), '9.2f')}{fmt(ms.get('torch'), '10.2f')}"
          f"{fmt(r.get('cpp_GBps'), '10.1f')}{fmt(r.get('cpp_over_torch'), '11.2f')}"
          f"{fmt(r.get('cpp_over_numpy'), '11.3f')}", flush=True)


def environment(threads):
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "threads": threads,
        "cpu": cpu,
        "cores_visible": os.cpu_count(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch is not None else None,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not importable: no chart written")
        return
    provs = [p for p in ("numpy", "cpp", "torch") if any(p in r["ms"] for r in rows)]
    labels = [f"{r['op']}\n{'x'.join(map(str, r['shape']))}\n{r['pass']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(rows)), 5))
    width = 0.8 / len(provs)
    for i, p in enumerate(provs):
        xs = [j + (i - (len(provs) - 1) / 2) * width for j in range(len(rows))]
        ax.bar(xs, [r["ms"].get(p, float("nan")) for r in rows], width, label=p)
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (median, log scale)")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.legend()
    ax.set_title("tensorlite fused CPU kernels, fp32 (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="threads for cpp and torch (default 2)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, 1 rep: checks the script runs")
    ap.add_argument("--ops", default="", help="comma-separated ops to run, e.g. softmax,gelu")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per provider (median)")
    ap.add_argument("--out", default=str(RESULTS), help="folder for kernels.json / kernels.png")
    ap.add_argument("--torch-first", action="store_true",
                    help="import torch before tensorlite (read at start-up, from sys.argv)")
    args = ap.parse_args(argv)

    env = environment(args.threads)
    print(f"threads={args.threads}  cpu={env['cpu']}  numpy {env['numpy']}  torch {env['torch']}")
    print(f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE'] or '(unset)'}: OpenBLAS kernel choice for "
          f"NumPy matmuls (the numpy attention reference); the fused kernels do not use BLAS")
    if cpp is None:
        print(f"note: tensorlite._C is not importable ({CPP_MISSING}); cpp column empty")
    if torch is None:
        print("note: torch is not importable; no baseline column")
    print(HEADER)
    ops = {o.strip() for o in args.ops.split(",") if o.strip()}
    rows = run(QUICK if args.quick else FULL, args.threads, 1 if args.quick else args.reps,
               slow_s=0.5, ops=ops)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = ("kernels_quick" if args.quick else "kernels") + ("_torch_first" if TORCH_FIRST else "")
    env["torch_imported_first"] = TORCH_FIRST
    with open(out / f"{name}.json", "w") as f:
        json.dump({"environment": env, "results": rows}, f, indent=1)
    plot(rows, out / f"{name}.png")
    print(f"wrote {out / (name + '.json')}")


if __name__ == "__main__":
    main()
