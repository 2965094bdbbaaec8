"""Who should multiply the matrices: NumPy (its OpenBLAS, on OpenBLAS's threads), tensorlite's
csrc/gemm.cpp (a sequential MKL GEMM per block on the kernels' own pool), and torch's
F.linear as the baseline, at the shapes of the models tensorlite trains and loads.

    python benchmarks/gemm.py [--threads 2] [--rounds 7]

Each shape is y = x W^T + b (a Linear with its bias); the three take turns inside every
round (each after a pause that lets the previous side's spinning threads sleep) and the
best of the rounds is kept. Prints the machine's measured FMA peak
(tensorlite._C.fma_peak) and each rate as a fraction of it, and writes results/gemm.json.
"""
import argparse
import json
import os
import pathlib
import platform
import time

import numpy as np

SHAPES = {  # name: (rows M, in K, out N)
    "minilm qkv (640 tokens)": (640, 384, 1152),
    "minilm ffn up": (640, 384, 1536),
    "minilm ffn down": (640, 1536, 384),
    "baby c_attn (768 tokens)": (768, 128, 384),
    "baby mlp up": (768, 128, 512),
    "small mlp up (2048 tokens)": (2048, 384, 1536),
    "gpt2 lm_head (1 token)": (1, 768, 50257),
}


def timed(fn, flops, budget=0.15, pause=0.3):
    # the previous side's idle threads (OpenBLAS's, torch's OpenMP workers) spin for a while
    # after their last call and would take the cores from this one: let them fall asleep
    time.sleep(pause)
    fn()
    reps, t = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        el = time.perf_counter() - t
        if el > budget:
            return flops * reps / el / 1e9


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="one short round (a smoke test)")
    ap.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    budget, pause = (0.005, 0.0) if a.quick else (0.15, 0.3)
    a.rounds = 1 if a.quick else a.rounds
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(a.threads))
    import tensorlite as tl
    from tensorlite import _C
    from tensorlite.backend import blas
    tl.set_num_threads(a.threads)
    ok, why = blas.available()
    try:
        import torch
        torch.set_num_threads(a.threads)
    except ImportError:
        torch = None
    peak = _C.fma_peak(2_000_000 if a.quick else 20_000_000) / 1e9
    print(f"{platform.processor() or platform.machine()}, {a.threads} threads, FMA peak "
          f"{peak:.0f} GFLOP/s ({_C._isa() if hasattr(_C, '_isa') else ''}), "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')}, "
          f"tensorlite gemm: {'MKL ' + _C.blas_name() if ok else 'off (' + str(why) + ')'}")
    rng = np.random.default_rng(0)
    rows = []
    for name, (M, K, N) in SHAPES.items():
        x = rng.standard_normal((M, K), dtype=np.float32)
        w = rng.standard_normal((N, K), dtype=np.float32)
        b = rng.standard_normal(N, dtype=np.float32)
        out = np.empty((M, N), np.float32)
        sides = {"numpy": lambda: np.add(np.matmul(x, w.T, out=out), b, out=out)}
        if ok:
            sides["tensorlite"] = lambda: blas.mm(x, w.T, bias=b, out=out)
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))
            sides["torch"] = lambda: torch.nn.functional.linear(tx, tw, tb)
        best = {k: 0.0 for k in sides}
        for _ in range(a.rounds):
            for k, fn in sides.items():
                best[k] = max(best[k], timed(fn, 2 * M * K * N, budget, pause))
        rows.append({"shape": name, "M": M, "K": K, "N": N, **{k + "_gflops": v for k, v in best.items()}})
        line = "  ".join(f"{k} {v:6.0f} GF ({v / peak:4.0%})" for k, v in best.items())
        ratio = best.get("tensorlite", 0) / best["torch"] if torch is not None and ok else float("nan")
        print(f"{name:28s} {line}  tensorlite/torch {ratio:.2f}x")
    out = pathlib.Path(a.out) / ("gemm_quick.json" if a.quick else "gemm.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": a.threads, "fma_peak_gflops": peak,
                               "blas": _C.blas_name() if ok else None, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
