"""Training-step speed against PyTorch eager, both ways a user meets the two together.

    python benchmarks/train_speed.py [--rounds 3] [--configs baby,small] [--threads 1,2] [--quick]

One step = forward + backward + clip_grad_norm_ + AdamW, the models of
benchmarks/train_shakespeare.py (nanoGPT's GPT, the same initial weights on both sides):
  baby:  4 layers, 4 heads, 128 dims, block 64, batch 12, vocab 65
  small: 6 layers, 6 heads, 384 dims, block 256, batch 8, vocab 65
Settings, every one a fresh process: tensorlite alone; tensorlite with `import torch` run
before it (what a notebook that has both does); PyTorch. They take turns inside every round
(A/B alternated: a change of machine load hits all alike); each process reports the median
of its timed steps, and the table the median over rounds. Also reported: the machine's FMA
peak for that thread count (tensorlite._C.fma_peak) and the fraction of it a step reaches
(nanoGPT's FLOP estimate: 6 N + 12 L T C per token), and each process's peak resident memory
growth over its steps (VmHWM after them minus VmRSS before the first). Writes
results/train_speed.json.
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = {
    "baby": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12),
    "small": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, batch_size=8),
}
STEPS = {"baby": (5, 40), "small": (2, 8)}  # (warm-up, timed) steps per process
SETTINGS = ("tensorlite", "tensorlite+torch", "pytorch")
VOCAB = 65


def _status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def worker(spec):
    if spec["setting"] == "tensorlite+torch":
        import torch  # noqa: F401 -- before tensorlite, as in the notebook case
    import numpy as np
    sys.path.insert(0, str(HERE))
    import train_shakespeare as ts
    ts.CONFIG = dict(ts.CONFIG, **CONFIGS[spec["config"]])
    c = ts.CONFIG
    import tensorlite as tl
    tl.manual_seed(0)
    init = {k: np.asarray(v.numpy()) for k, v in ts.tensorlite_gpt(VOCAB).state_dict().items()}
    run = (ts.TorchRun if spec["setting"] == "pytorch" else ts.TensorliteRun)(VOCAB, init,
                                                                              spec["threads"])
    rng = np.random.default_rng(0)
    data = rng.integers(0, VOCAB, size=200_000)
    warm, timed = spec["steps"]
    times = []
    rss0 = _status("VmRSS")
    for i in range(warm + timed):
        x, y = ts.get_batch(data, c["batch_size"], c["block_size"], rng)
        t = time.perf_counter()
        run.step(x, y, c["lr"])
        if i >= warm:
            times.append(time.perf_counter() - t)
    out = {"step_s": statistics.median(times), "mem_growth": _status("VmHWM") - rss0}
    if spec["setting"] != "pytorch":
        from tensorlite import _C
        from tensorlite.backend import blas
        out["fma_peak"] = _C.fma_peak()
        out["blas"] = blas.backend()
    print("RESULT " + json.dumps(out), flush=True)


def step_flops(cfg):
    L, C, T, B = cfg["n_layer"], cfg["n_embd"], cfg["block_size"], cfg["batch_size"]
    n_params = L * 12 * C * C + VOCAB * C  # blocks + tied embedding (positions excluded)
    return (6 * n_params + 12 * L * T * C) * T * B


def spawn(spec):
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    p = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                       capture_output=True, text=True, timeout=900)
    line = next((ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"worker {spec} failed:\n{p.stdout}\n{p.stderr}")
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", default="baby,small")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--quick", action="store_true", help="1 round, few steps (a smoke test)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(json.loads(a.worker))
    try:
        import torch  # noqa: F401
        settings = SETTINGS
    except ImportError:
        print("torch is not importable: tensorlite alone")
        settings = SETTINGS[:1]
    configs = a.configs.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    rounds = 1 if a.quick else a.rounds
    print(f"{platform.machine()} {os.cpu_count()} CPUs, OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')}, load {os.getloadavg()[0]:.2f}; "
          f"{rounds} rounds, fresh process per measurement, settings alternated")
    res = {}
    for r in range(rounds):
        for cfg in configs:
            steps = (1, 2) if a.quick else STEPS[cfg]
            for th in threads:
                order = settings if r % 2 == 0 else settings[::-1]
                for s in order:
                    out = spawn(dict(setting=s, config=cfg, threads=th, steps=steps))
                    res.setdefault((cfg, th, s), []).append(out)
    rows = []
    print(f"\n{'config':6s} {'thr':>3s} {'setting':17s} {'step ms':>8s} {'tok/s':>8s} "
          f"{'vs torch':>8s} {'% peak':>7s} {'mem MB':>7s}")
    for cfg in configs:
        tokens = CONFIGS[cfg]["block_size"] * CONFIGS[cfg]["batch_size"]
        for th in threads:
            base = res.get((cfg, th, "pytorch"))
            base_s = statistics.median(o["step_s"] for o in base) if base else None
            peak = next((o["fma_peak"] for o in res[(cfg, th, "tensorlite")]), None)
            for s in settings:
                outs = res[(cfg, th, s)]
                st = statistics.median(o["step_s"] for o in outs)
                mem = statistics.median(o["mem_growth"] for o in outs) / 2**20
                speed = base_s / st if base_s else float("nan")
                frac = step_flops(CONFIGS[cfg]) / st / peak if peak else float("nan")
                rows.append(dict(config=cfg, threads=th, setting=s, step_ms=st * 1e3,
                                 tokens_per_s=tokens / st, speed_vs_torch=speed,
                                 peak_fraction=frac, mem_growth_mb=mem, fma_peak_gflops=peak / 1e9,
                                 all_step_ms=[o["step_s"] * 1e3 for o in outs]))
                print(f"{cfg:6s} {th:3d} {s:17s} {st * 1e3:8.1f} {tokens / st:8.0f} {speed:7.2f}x "
                      f"{frac:7.1%} {mem:7.1f}")
    out = pathlib.Path(a.out) / ("train_speed_quick.json" if a.quick else "train_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                               "blas": res[(configs[0], threads[0], "tensorlite")][0].get("blas"),
                               "rounds": rounds, "rows": rows}, indent=1))
    print("wrote", out)


if __name__ == "__main__":
    main()
