"""The fused kernels' threads with and without PyTorch in the same process, two builds.

Why: the OpenMP build of tensorlite._C bound to PyTorch's libgomp when `import torch` came
first; that copy started before tensorlite set OMP_WAIT_POLICY=PASSIVE and its idle threads
spun on the cores BLAS and Python needed (a small GPT step ~3x slower on 2 cores). The
kernels now use their own pool (csrc/thread_pool.h). This times both builds side by side.

Every measurement is a fresh process (thread runtimes are set up once per process), and the
builds and settings take turns within every round, so a change of machine load hits all of
them alike. Each process reports the median of its steps; the table gives the median over
rounds, and its min: the least disturbed process (on a shared machine other jobs' bursts add
hundreds of ms to single processes). The builds are two copies of the package in a temporary
folder, one with each extension, put first on PYTHONPATH (the editable install's finder comes
after sys.path).

    python benchmarks/threads_and_torch.py --old-so /tmp/old_C.so [--new-so PATH] [--rounds 9]

Without --old-so only the build in the tree is timed. Writes results/threads_and_torch.json.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A baby GPT training step: 4 layers, 4 heads, 128 dims, T 64, batch 12, vocab 65, AdamW.
STEP = r"""
import json, os, sys, time
cfg = json.loads(sys.argv[1])
if cfg["torch"] == "before":
    import torch  # noqa: F401
import numpy as np
import tensorlite as tl
import tensorlite._C
if cfg["torch"] == "after":
    import torch  # noqa: F401,E402
from tensorlite.models import GPT, GPTConfig
if cfg.get("set_threads"):
    tl.set_num_threads(cfg["set_threads"])
out = {"so": os.path.basename(os.path.dirname(os.path.dirname(tl._C.__file__))),
       "threads": tl.get_num_threads()}
if cfg["what"] == "step":
    tl.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128))
    opt = tl.optim.AdamW(m.parameters(), lr=1e-3)
    x = tl.randint(0, 65, (12, 64)); y = tl.randint(0, 65, (12, 64))
    ts = []
    for i in range(cfg["steps"]):
        t = time.perf_counter()
        _, loss = m(x, y); opt.zero_grad(); loss.backward(); opt.step()
        ts.append(time.perf_counter() - t)
    out["ms"] = float(np.median(ts[5:]) * 1e3)
    out["best_step_ms"] = float(np.min(ts[5:]) * 1e3)
else:
    C = tl._C
    r = np.random.default_rng(0)
    sm = r.standard_normal((4096, 1024)).astype(np.float32)
    ln = r.standard_normal((8192, 768)).astype(np.float32)
    w = r.standard_normal(768).astype(np.float32)
    q, k, v, do = (r.standard_normal((8, 6, 256, 64)).astype(np.float32) for _ in range(4))
    def attn():
        o, lse = C.attention_forward(q, k, v, None, True, 0.125)
        C.attention_backward(q, k, v, o, lse, do, None, True, 0.125)
    jobs = {"softmax 4096x1024 fwd": lambda: C.softmax_forward(sm),
            "layer_norm 8192x768 fwd": lambda: C.layer_norm_forward(ln, w, w, 1e-5),
            "attention 8x6x256x64 causal fwd+bwd": attn}
    for name, fn in jobs.items():
        fn()
        ts = []
        for _ in range(cfg["reps"]):
            t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
        out[name] = float(np.median(ts) * 1e3)
with open("/proc/self/maps") as f:
    out["libgomp_loaded"] = "libgomp" in f.read()
print("RESULT " + json.dumps(out))
"""

SETTINGS = [  # (name, torch, environment OMP_NUM_THREADS or None, tl.set_num_threads or None)
    ("tensorlite alone", "no", None, None),
    ("import torch first", "before", None, None),
    ("import torch after", "after", None, None),
    ("OMP_NUM_THREADS=1", "no", "1", None),
    ("OMP_NUM_THREADS=2", "no", "2", None),
    ("torch first, OMP_NUM_THREADS=2", "before", "2", None),
    ("tl.set_num_threads(1)", "no", None, 1),
    ("tl.set_num_threads(2)", "no", None, 2),
]


def make_tree(base, name, so):
    """A copy of the package with extension `so`, importable as tensorlite from base/name."""
    dst = os.path.join(base, name)
    shutil.copytree(os.path.join(ROOT, "tensorlite"), os.path.join(dst, "tensorlite"),
                    ignore=shutil.ignore_patterns("__pycache__", "_C.*.so"))
    if os.path.isdir(os.path.join(ROOT, "kernels")):
        shutil.copytree(os.path.join(ROOT, "kernels"), os.path.join(dst, "tensorlite", "kernels"),
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(so, os.path.join(dst, "tensorlite", "_C" + sysconfig_suffix()))
    return dst


def sysconfig_suffix():
    import sysconfig
    return sysconfig.get_config_var("EXT_SUFFIX")


def run_one(tree, cfg, omp):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "PYTHONPATH")}
    env["PYTHONPATH"] = tree
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    p = subprocess.run([sys.executable, "-c", STEP, json.dumps(cfg)], check=False,
                       capture_output=True, text=True, env=env, cwd=tree, timeout=600)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"child failed ({p.returncode}): {p.stderr[-2000:]}")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-so", help="the extension to compare with (e.g. the OpenMP build)")
    ap.add_argument("--new-so", help="default: the one built in tensorlite/")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--kernel-reps", type=int, default=15)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results",
                                                  "threads_and_torch.json"))
    args = ap.parse_args()
    new_so = args.new_so or os.path.join(ROOT, "tensorlite", "_C" + sysconfig_suffix())
    info = {"cpu": cpu_model(), "cpus_usable": len(os.sched_getaffinity(0)),
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "load_before": os.getloadavg(), "python": platform.python_version()}
    print(json.dumps(info))
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"new": make_tree(tmp, "new", new_so)}
        if args.old_so:
            trees["old"] = make_tree(tmp, "old", args.old_so)
        builds = list(trees)
        steps = {(s[0], b): [] for s in SETTINGS for b in builds}
        best = {(s[0], b): [] for s in SETTINGS for b in builds}
        kernels = {b: [] for b in builds}
        gomp = {}
        for r in range(args.rounds):
            order = builds if r % 2 == 0 else builds[::-1]  # who goes first alternates too
            for name, torch_mode, omp, set_threads in SETTINGS:
                for b in order:
                    cfg = {"what": "step", "torch": torch_mode, "set_threads": set_threads,
                           "steps": args.steps}
                    res = run_one(trees[b], cfg, omp)
                    assert res["so"] == b, res  # the copy, not the editable install
                    steps[(name, b)].append(res["ms"])
                    best[(name, b)].append(res["best_step_ms"])
                    gomp[(name, b)] = res["libgomp_loaded"]
            for b in order:
                kernels[b].append(run_one(trees[b], {"what": "kernels", "torch": "no",
                                                     "reps": args.kernel_reps}, None))
            print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()}", flush=True)
    info["load_after"] = os.getloadavg()

    rows = []
    for name, *_ in SETTINGS:
        row = {"setting": name}
        for b in builds:
            v = steps[(name, b)]
            row[b] = {"median_ms": statistics.median(v), "min_ms": min(v), "runs_ms": v,
                      "best_step_ms": statistics.median(best[(name, b)]),
                      "libgomp_loaded": gomp[(name, b)]}
        rows.append(row)
    kern = []
    for k in [k for k in kernels["new"][0] if k not in ("so", "threads", "libgomp_loaded")]:
        row = {"kernel": k}
        for b in builds:
            v = [run[k] for run in kernels[b]]
            row[b] = {"median_ms": statistics.median(v), "min_ms": min(v), "runs_ms": v}
        kern.append(row)

    hdr = "| setting | " + " | ".join(f"{b} ms (median / min)" for b in builds)
    hdr += " | new/old |" if "old" in builds else " |"
    print("\n" + hdr)
    print("|---|" + "---:|" * (len(builds) + ("old" in builds)))
    for row in rows + kern:
        cells = [f"{row[b]['median_ms']:.1f} / {row[b]['min_ms']:.1f}" for b in builds]
        if "old" in builds:
            cells.append(f"{row['new']['median_ms'] / row['old']['median_ms']:.2f}")
        print(f"| {row.get('setting') or row.get('kernel')} | " + " | ".join(cells) + " |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"info": info, "rounds": args.rounds, "steps_per_process": args.steps,
                   "step": rows, "kernels": kern}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
