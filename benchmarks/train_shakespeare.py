"""Real text, side by side with PyTorch: nanoGPT's CPU "baby" Shakespeare model trained
with tensorlite and with PyTorch eager, on the same batches from the same initial weights.

    python benchmarks/train_shakespeare.py               # full run: 2000 iters each
    python benchmarks/train_shakespeare.py --iters 500 --eval-every 100
    python benchmarks/train_shakespeare.py --quick       # 20 iters on a 20 KB slice (smoke test)

The text is ../shared/data/tinyshakespeare.txt relative to the repository (or --data);
without it the script says so and exits with code 0. The config is nanoGPT's
`config/train_shakespeare_char.py` as its README runs it on a CPU: char-level,
n_layer 4, n_head 4, n_embd 128, block 64, batch 12, 2000 iters, dropout 0, no biases
(nanoGPT's default), AdamW lr 1e-3 (100 warmup steps, cosine decay to 1e-4), betas
(0.9, 0.99), weight decay 0.1 on the >= 2-D parameters, gradient clipping at 1.0.

Same data, same start: batch offsets come from one NumPy Generator seeded identically
for each run, and tensorlite's initial state_dict is loaded into both models. The
PyTorch model is a compact nanoGPT defined below: pre-LN blocks, tanh-GELU,
F.scaled_dot_product_attention (causal), tied input/output embeddings. Both use 2
threads (tensorlite.set_num_threads / torch.set_num_threads; --threads).

Each framework trains in its own worker process (neither's thread pools, OpenMP runtime
or allocator state touch the other's; PyTorch and tensorlite's C++ kernels would share
one libgomp in one process). The runs go one after the other, in alternating chunks of
--chunk steps (--sequential: each run whole), so a machine shared with other jobs
slows both alike; load averages are recorded with the timings.

Reported: the final val loss (mean over a fixed set of val batches, the same for both),
tokens/s over the training steps (evaluation excluded), and both loss curves. Results go
to benchmarks/results/train_shakespeare.json and train_shakespeare.png (--out, --tag).
"""
import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the environment as the user gave it: importing tensorlite sets OMP_WAIT_POLICY (a
# setdefault) in this process, and the PyTorch worker must not inherit that
ENV_AT_START = dict(os.environ)
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS = ROOT / "benchmarks" / "results"

CONFIG = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, dropout=0.0,
              bias=False, lr=1e-3, min_lr=1e-4, warmup=100, betas=(0.9, 0.99),
              weight_decay=0.1, grad_clip=1.0)
FRAMEWORKS = ("tensorlite", "pytorch")


# ------------------------------------------------------------------ data

def load_text(path, quick):
    text = pathlib.Path(path).read_text(encoding="utf-8")
    if quick:
        text = text[:20_000]
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    n = int(0.9 * len(ids))  # nanoGPT's split: first 90% train, last 10% val
    return ids[:n], ids[n:], len(chars)


def get_batch(data, batch_size, block_size, rng):
    ix = rng.integers(0, len(data) - block_size, size=batch_size)
    x = np.stack([data[i:i + block_size] for i in ix])
    y = np.stack([data[i + 1:i + 1 + block_size] for i in ix])
    return x, y


def lr_at(it, iters):
    from tensorlite.optim.lr_scheduler import warmup_cosine
    c = CONFIG
    return c["lr"] * warmup_cosine(it, c["warmup"], iters, c["min_lr"] / c["lr"])


def _groups(model):
    """nanoGPT's optimizer groups: weight decay on the >= 2-D parameters only."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": CONFIG["weight_decay"]}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def tensorlite_gpt(vocab_size):
    from tensorlite.models.gpt import GPT, GPTConfig
    c = CONFIG
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=c["block_size"], n_layer=c["n_layer"],
                         n_head=c["n_head"], n_embd=c["n_embd"], dropout=c["dropout"],
                         bias=c["bias"]))


# ------------------------------------------------------------------ the two trainers

class TensorliteRun:
    def __init__(self, vocab_size, init, threads):
        import tensorlite as tl
        from tensorlite.nn.utils import clip_grad_norm_
        from tensorlite.optim import AdamW
        self.tl, self.clip = tl, clip_grad_norm_
        tl.set_num_threads(threads)
        self.model = tensorlite_gpt(vocab_size)
        self.model.load_state_dict(init)
        self.opt = AdamW(_groups(self.model), lr=CONFIG["lr"], betas=CONFIG["betas"])
        self.params = list(self.model.parameters())

    def step(self, x, y, lr):
        tl = self.tl
        for g in self.opt.param_groups:
            g["lr"] = lr
        _, loss = self.model(tl.tensor(x), tl.tensor(y))
        self.opt.zero_grad()
        loss.backward()
        self.clip(self.params, CONFIG["grad_clip"])
        self.opt.step()
        return loss.item()

    def eval_loss(self, batches):
        tl = self.tl
        self.model.eval()
        with tl.no_grad():
            losses = [self.model(tl.tensor(x), tl.tensor(y))[1].item() for x, y in batches]
        self.model.train()
        return float(np.mean(losses))


def torch_gpt(vocab_size):
    """nanoGPT's model in a few lines, with tensorlite's state-dict names."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    c = CONFIG
    C, H, bias = c["n_embd"], c["n_head"], c["bias"]

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(C, 3 * C, bias=bias)
            self.c_proj = nn.Linear(C, C, bias=bias)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(x).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(C, 4 * C, bias=bias)
            self.c_proj = nn.Linear(4 * C, C, bias=bias)

        def forward(self, x):
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C, bias=bias)
            self.attn = Attention()
            self.ln_2 = nn.LayerNorm(C, bias=bias)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class TorchGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab_size, C), wpe=nn.Embedding(c["block_size"], C),
                h=nn.ModuleList([Block() for _ in range(c["n_layer"])]),
                ln_f=nn.LayerNorm(C, bias=bias)))
            self.lm_head = nn.Linear(C, vocab_size, bias=False)
            self.lm_head.weight = self.transformer.wte.weight  # weight tying
            # nanoGPT's init (N(0, 0.02); c_proj N(0, 0.02/sqrt(2 n_layer)); biases 0). The
            # benchmark then loads tensorlite's initial weights, so both start identical.
            for name, p in self.named_parameters():
                if p.ndim >= 2:
                    std = 0.02 / math.sqrt(2 * c["n_layer"]) if name.endswith("c_proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx, targets):
            B, T = idx.shape
            pos = torch.arange(T, device=idx.device)
            x = self.transformer.wte(idx) + self.transformer.wpe(pos)
            for block in self.transformer.h:
                x = block(x)
            logits = self.lm_head(self.transformer.ln_f(x))
            return logits, F.cross_entropy(logits.view(B * T, -1), targets.view(B * T))

    return TorchGPT()


class TorchRun:
    def __init__(self, vocab_size, init, threads):
        import torch
        self.torch = torch
        torch.set_num_threads(threads)
        self.model = torch_gpt(vocab_size)
        missing, unexpected = self.model.load_state_dict(
            {k: torch.from_numpy(v) for k, v in init.items()}, strict=True)
        assert not missing and not unexpected
        # PyTorch's default CPU AdamW (foreach), as nanoGPT gets on a CPU
        self.opt = torch.optim.AdamW(_groups(self.model), lr=CONFIG["lr"], betas=CONFIG["betas"])
        self.params = list(self.model.parameters())

    def step(self, x, y, lr):
        torch = self.torch
        for g in self.opt.param_groups:
            g["lr"] = lr
        _, loss = self.model(torch.from_numpy(x), torch.from_numpy(y))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, CONFIG["grad_clip"])
        self.opt.step()
        return loss.item()

    def eval_loss(self, batches):
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            losses = [self.model(torch.from_numpy(x), torch.from_numpy(y))[1].item()
                      for x, y in batches]
        self.model.train()
        return float(np.mean(losses))


# ------------------------------------------------------------------ worker process

def worker(args):
    """One framework's run. Protocol: stdout carries one JSON line per message; the
    parent writes a step count per line to stdin ("0" or EOF ends the run)."""
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not break the protocol
    c = CONFIG
    train_ids, val_ids, vocab = load_text(args.data, args.quick)
    vrng = np.random.default_rng(args.seed + 1)  # the fixed val batches, the same for both
    val_batches = [get_batch(val_ids, c["batch_size"], c["block_size"], vrng)
                   for _ in range(args.eval_batches)]
    with np.load(args.init) as f:
        init = {k: f[k] for k in f.files}
    run = (TensorliteRun if args.worker == "tensorlite" else TorchRun)(vocab, init, args.threads)
    rng = np.random.default_rng(args.seed)  # the data order: identical for both runs

    def send(msg):
        out.write(json.dumps(msg) + "\n")
        out.flush()

    send({"ready": True, "val": [[0, run.eval_loss(val_batches)]]})
    it = 0
    for line in sys.stdin:
        n = int(line)
        if n <= 0:
            break
        losses, step_s, val = [], [], []
        load = _load()
        for _ in range(min(n, args.iters - it)):
            x, y = get_batch(train_ids, c["batch_size"], c["block_size"], rng)
            lr = lr_at(it, args.iters)
            t0 = time.perf_counter()
            losses.append(run.step(x, y, lr))
            step_s.append(time.perf_counter() - t0)
            it += 1
            if it % args.eval_every == 0 or it == args.iters:
                val.append([it, run.eval_loss(val_batches)])
        send({"train_loss": losses, "step_s": step_s, "val": val, "load": [load, _load()]})


# ------------------------------------------------------------------ the parent

class Worker:
    def __init__(self, name, args, init_path, extra_env):
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", name,
               "--init", init_path, "--data", args.data, "--iters", str(args.iters),
               "--eval-every", str(args.eval_every), "--eval-batches", str(args.eval_batches),
               "--threads", str(args.threads), "--seed", str(args.seed)]
        if args.quick:
            cmd.append("--quick")
        env = dict(ENV_AT_START)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.update(extra_env)
        self.name, self.env = name, extra_env
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=str(ROOT))
        self.train_loss, self.step_s, self.val, self.loads = [], [], [], []
        self.val.extend(self._read()["val"])

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"the {self.name} worker exited (code {self.proc.returncode}) "
                               "without an answer; its error is printed above")
        return json.loads(line)

    def run(self, n):
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        r = self._read()
        self.train_loss += r["train_loss"]
        self.step_s += r["step_s"]
        self.val += r["val"]
        self.loads.append(r["load"])
        return r

    def close(self):
        try:
            self.proc.stdin.write("0\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait(timeout=60)

    def summary(self):
        c = CONFIG
        tokens = len(self.step_s) * c["batch_size"] * c["block_size"]
        total = sum(self.step_s)
        return {
            "final_val_loss": self.val[-1][1],
            "tokens_per_s": tokens / total if total else None,
            "median_step_ms": 1e3 * statistics.median(self.step_s) if self.step_s else None,
            "train_seconds": total,
            "env": self.env,
            "load_average_min_max": [min(a[0] for pair in self.loads for a in pair),
                                     max(a[0] for pair in self.loads for a in pair)]
            if self.loads else None,
            "train_loss": self.train_loss,
            "val_loss": self.val,
        }


def _load():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def environment(threads, worker_env):
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    try:
        from tensorlite.backend.registry import provider_name
        kernels = provider_name("cpu")
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        kernels = f"unknown ({e})"
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores_visible": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch_version,
        "tensorlite_kernels": kernels,
        # as the workers got them (tensorlite's import sets OMP_WAIT_POLICY=PASSIVE unless set)
        "OPENBLAS_CORETYPE": ENV_AT_START.get("OPENBLAS_CORETYPE"),
        "OPENBLAS_NUM_THREADS": ENV_AT_START.get("OPENBLAS_NUM_THREADS"),
        "OMP_NUM_THREADS": ENV_AT_START.get("OMP_NUM_THREADS"),
        "OMP_WAIT_POLICY": ENV_AT_START.get("OMP_WAIT_POLICY"),
        "tensorlite_worker_env": worker_env,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "note": "shared machine: other jobs ran alongside; see each run's load averages",
    }


def plot(results, path, title):
    """Both loss curves (left) and, when both ran, tensorlite minus PyTorch per step (right):
    with the same batches and weights the curves coincide, so the difference shows more."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    both = len(results) > 1
    fig, axes = plt.subplots(1, 2 if both else 1, figsize=(12 if both else 8, 4.5), squeeze=False)
    ax = axes[0][0]
    style = {"tensorlite": dict(color="tab:blue", lw=2.6, ls="-"),
             "pytorch": dict(color="tab:orange", lw=1.2, ls="--")}
    for name, r in results.items():
        st = style.get(name, {})
        curve = np.asarray(r["train_loss"])
        steps = np.arange(1, len(curve) + 1)
        w = max(1, len(curve) // 40)
        ax.plot(steps, curve, lw=0.5, alpha=0.2, color=st.get("color"))
        sm = np.convolve(curve, np.ones(w) / w, mode="valid") if w > 1 else curve
        ax.plot(steps[w - 1:], sm, label=f"{name} train" + (f" ({w}-step mean)" if w > 1 else ""), **st)
        vs, vl = zip(*r["val_loss"])
        ax.plot(vs, vl, marker="o", ms=4, color=st.get("color"), ls=":",
                label=f"{name} val (final {vl[-1]:.4f}; {r['tokens_per_s']:,.0f} tokens/s)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if both:
        ax = axes[0][1]
        a, b = (np.asarray(results[k]["train_loss"]) for k in ("tensorlite", "pytorch"))
        n = min(len(a), len(b))
        ax.plot(np.arange(1, n + 1), a[:n] - b[:n], lw=0.8, color="tab:purple", label="train loss")
        va = dict(results["tensorlite"]["val_loss"])
        vb = dict(results["pytorch"]["val_loss"])
        common = sorted(set(va) & set(vb))
        ax.plot(common, [va[s] - vb[s] for s in common], "o", ms=4, color="tab:green", label="val loss")
        ax.axhline(0, color="gray", lw=0.6)
        ax.set_xlabel("step")
        ax.set_ylabel("tensorlite - pytorch")
        ax.set_title("difference per step (same batches, same initial weights)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _env_pairs(items):
    env = {}
    for item in items or ():
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"--tensorlite-env: expected KEY=VALUE, got {item!r}")
        env[k] = v
    return env


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=None, help="training steps (2000; --quick: 20)")
    ap.add_argument("--eval-every", type=int, default=None, help="steps between val evaluations "
                    "(250; --quick: 10)")
    ap.add_argument("--eval-batches", type=int, default=None,
                    help="fixed val batches averaged for the val loss (20, as nanoGPT's "
                         "eval_iters; --quick: 4)")
    ap.add_argument("--quick", action="store_true", help="tiny run: 20 iters on a 20 KB slice")
    ap.add_argument("--data", default=str(DATA), help="the tiny Shakespeare text file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--chunk", type=int, default=50,
                    help="steps each run takes in turn (interleaving; default 50)")
    ap.add_argument("--sequential", action="store_true",
                    help="train tensorlite to the end, then PyTorch (no interleaving)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch run")
    ap.add_argument("--tensorlite-env", action="append", metavar="KEY=VALUE",
                    help="extra environment for the tensorlite worker only (experiments, e.g. "
                         "OMP_WAIT_POLICY=PASSIVE); recorded in the results")
    ap.add_argument("--out", default=str(RESULTS), help="folder for the JSON and the PNG")
    ap.add_argument("--tag", default="", help="suffix for the output file names")
    ap.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.iters = args.iters if args.iters is not None else (20 if args.quick else 2000)
    args.eval_every = args.eval_every or (10 if args.quick else 250)
    args.eval_batches = args.eval_batches or (4 if args.quick else 20)
    if args.worker:
        return worker(args)

    if not pathlib.Path(args.data).is_file():
        print(f"skipping: {args.data} not found (the tiny Shakespeare text lives in "
              "../shared/data/ next to the repository; it is not copied into the repo)")
        return 0
    sys.path.insert(0, str(ROOT))
    import tensorlite as tl

    def log(s):
        print(s, flush=True)

    train_ids, val_ids, vocab = load_text(args.data, args.quick)
    c = CONFIG
    tl.manual_seed(args.seed)
    model = tensorlite_gpt(vocab)  # the initial weights both runs start from
    n_params = model.num_parameters()
    frameworks = ["tensorlite"]
    if not args.no_torch:
        try:
            import torch  # noqa: F401 - only to know whether the baseline can run
            frameworks.append("pytorch")
        except ImportError:
            log("note: torch is not importable; tensorlite only")
    tl_env = _env_pairs(args.tensorlite_env)
    env = environment(args.threads, tl_env)
    log(f"tiny Shakespeare: {len(train_ids):,} train / {len(val_ids):,} val chars, vocab {vocab}; "
        f"{n_params:,} parameters; {args.iters} iters, batch {c['batch_size']} x block "
        f"{c['block_size']}; {args.threads} threads")
    log(f"numpy {env['numpy']}, torch {env['torch']}, tensorlite kernels {env['tensorlite_kernels']}, "
        f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE'] or '(unset)'}"
        + (f", tensorlite worker env {tl_env}" if tl_env else "")
        + f"; shared machine, load average {_load()}")

    with tempfile.TemporaryDirectory() as tmp:
        init_path = os.path.join(tmp, "init.npz")
        np.savez(init_path, **{k: np.asarray(v.numpy()) for k, v in model.state_dict().items()})
        del model
        workers = {}
        try:
            for name in frameworks:
                workers[name] = Worker(name, args, init_path, tl_env if name == "tensorlite" else {})
            order = list(workers.values())
            if args.sequential:
                for w in order:
                    _drive(w, args, log)
            else:
                done, turn = 0, 0
                while done < args.iters:
                    n = min(args.chunk, args.iters - done)
                    for w in (order if turn % 2 == 0 else order[::-1]):
                        _run_chunk(w, n, args, log)
                    done += n
                    turn += 1
        finally:
            for w in workers.values():
                if w.proc.poll() is None:
                    w.close()
    results = {name: w.summary() for name, w in workers.items()}

    summary = {}
    tlr = results["tensorlite"]
    if "pytorch" in results:
        ptr = results["pytorch"]
        summary = {
            "val_loss_diff": tlr["final_val_loss"] - ptr["final_val_loss"],
            "tokens_per_s_ratio": tlr["tokens_per_s"] / ptr["tokens_per_s"],
            "median_step_ratio": ptr["median_step_ms"] / tlr["median_step_ms"],
        }
    log("")
    log(f"{'':12s} {'val loss':>9s} {'tokens/s':>10s} {'median step':>12s}")
    for name, r in results.items():
        log(f"{name:12s} {r['final_val_loss']:9.4f} {r['tokens_per_s']:10,.0f} "
            f"{r['median_step_ms']:10.1f}ms")
    if summary:
        log(f"tensorlite - pytorch val loss: {summary['val_loss_diff']:+.4f}; tensorlite / pytorch "
            f"tokens/s: {summary['tokens_per_s_ratio']:.2f}x (median step: "
            f"{summary['median_step_ratio']:.2f}x)")

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("train_shakespeare_quick" if args.quick else "train_shakespeare") + args.tag
    cfg = dict(CONFIG, iters=args.iters, eval_every=args.eval_every, eval_batches=args.eval_batches,
               vocab_size=vocab, parameters=n_params, seed=args.seed, quick=args.quick,
               chunk=None if args.sequential else args.chunk,
               data=os.path.relpath(args.data, ROOT))
    doc = {"config": cfg, "environment": env, "summary": summary, "results": results}
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    png = plot(results, out / f"{stem}.png",
               f"tiny Shakespeare, nanoGPT baby config ({args.iters} iters, {args.threads} threads)")
    log(f"wrote {out / (stem + '.json')}" + (f" and {png}" if png else ""))
    return 0


def _run_chunk(w, n, args, log):
    r = w.run(n)
    if r["val"]:
        it, v = r["val"][-1]
        recent = w.step_s[-min(len(w.step_s), args.eval_every):]
        log(f"  {w.name:10s} step {it:5d}: train loss {w.train_loss[-1]:.4f}, val loss {v:.4f}, "
            f"{CONFIG['batch_size'] * CONFIG['block_size'] / statistics.median(recent):,.0f} "
            f"tokens/s (median step since the last eval), load {r['load'][1][0]:.1f}")


def _drive(w, args, log):
    done = 0
    while done < args.iters:
        n = min(args.chunk, args.iters - done)
        _run_chunk(w, n, args, log)
        done += n


if __name__ == "__main__":
    sys.exit(main())
