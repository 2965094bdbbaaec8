"""What the profiler's hook costs while no profile is active.

Function.apply reads autograd.function._profiler once per op and the engine once per
backward. This times a small GPT train step (forward, backward, AdamW) with that code
as shipped ("hooked", profiler off) against the same functions recompiled from their
own source with the check cut out ("bare"). The two variants take turns, round after
round (A/B interleaving), so a drifting machine hits both alike; the ratio of the
medians is printed. A ratio within the noise of 1.00 means the hook is unmeasurable.
Because a whole step is noisy, it also times the dispatch of a tiny op (the forward of
a 1-element add, where the hook sits) the same way, takes the fastest round of each
variant (the least disturbed by other processes), and scales the per-op difference by
the number of forward ops in one step (counted with the profiler): the hook's share
of a step. (The engine's check runs once per backward call, not per op.) A third
variant, the shipped code recompiled unchanged ("A/A"), shows how large a difference
the measurement produces between two identical functions: the noise floor.

    python benchmarks/profiler_overhead.py                # ~1 minute
    python benchmarks/profiler_overhead.py --rounds 3 --steps 2   # smoke test
"""
import os

# One BLAS thread unless told otherwise: on a busy machine OpenBLAS's spinning thread pool
# turns a 25 ms step into a second of noise, hiding any difference being measured.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import inspect  # noqa: E402
import pathlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tensorlite as tl  # noqa: E402
from tensorlite import autograd  # noqa: E402
from tensorlite.autograd import engine, function  # noqa: E402
from tensorlite.models.gpt import GPT, GPTConfig  # noqa: E402
from tensorlite.optim import AdamW  # noqa: E402

# the lines that make up the hook, and what the bare variant has in their place
APPLY_HOOK = """\
    prof = _profiler
    if prof is None:
        out = cls.forward(ctx, *raw, **kwargs)
    else:
        out = prof.forward(cls, ctx, raw, kwargs)
"""
APPLY_BARE = "    out = cls.forward(ctx, *raw, **kwargs)\n"
ENGINE_HOOKS = [
    ("    prof = _function._profiler  # tensorlite.profiler: read once per backward, not per node\n", ""),
    ("in_grads = node.fn.backward(node.ctx, g) if prof is None else prof.backward(node, g)",
     "in_grads = node.fn.backward(node.ctx, g)"),
]


def _recompile(fn, replacements, module):
    """fn rebuilt from its source with the replacements applied, in a copy of module's globals."""
    src = textwrap.dedent(inspect.getsource(fn))
    for old, new in replacements:
        if old not in src:
            raise SystemExit(f"profiler_overhead: the hook code in {module.__name__}.{fn.__name__} "
                             f"changed; update this benchmark's patterns:\n{old}")
        src = src.replace(old, new)
    ns = dict(vars(module))
    exec(compile(src, f"<bare {fn.__name__}>", "exec"), ns)
    return ns[fn.__name__]


def variants():
    hooked = {"apply": function.Function.__dict__["apply"], "run_backward": engine.run_backward}
    bare = {"apply": _recompile(hooked["apply"].__func__, [(APPLY_HOOK, APPLY_BARE)], function),
            "run_backward": _recompile(engine.run_backward, ENGINE_HOOKS, engine)}
    same = {"apply": _recompile(hooked["apply"].__func__, [], function),
            "run_backward": _recompile(engine.run_backward, [], engine)}
    return {"hooked": hooked, "bare": bare, "A/A": same}


def install(v):
    function.Function.apply = v["apply"]
    engine.run_backward = v["run_backward"]
    autograd.run_backward = v["run_backward"]  # tensorlite.autograd.backward calls this name


def make_step(args):
    tl.manual_seed(0)
    cfg = GPTConfig(vocab_size=64, block_size=args.block, n_layer=args.layers, n_head=4,
                    n_embd=args.embd)
    model = GPT(cfg)
    opt = AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    x = tl.tensor(rng.integers(0, 64, (args.batch, args.block)))
    y = tl.tensor(rng.integers(0, 64, (args.batch, args.block)))

    def step():
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def time_interleaved(vs, fn, rounds, reps):
    """{variant: [seconds per call, one per round]}, the variants alternating each round."""
    times = {name: [] for name in vs}
    order = list(vs)
    try:
        for r in range(rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                install(vs[name])
                t = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name].append((time.perf_counter() - t) / reps)
    finally:
        install(vs["hooked"])
    return times


def tiny_op():
    a = tl.ones(1)
    from tensorlite.ops.elementwise import Add

    def op():
        Add.apply(a, a)
    return op


def forward_ops_per_step(step):
    from tensorlite import profiler
    with profiler.profile() as prof:
        step()
    return sum(e.kind == "forward" for e in prof.events)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--steps", type=int, default=5, help="train steps per variant per round")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--embd", type=int, default=64)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--op-rounds", type=int, default=200)
    p.add_argument("--op-reps", type=int, default=2000, help="tiny-op calls per variant per round")
    p.add_argument("--threads", type=int, default=1, help="C++ kernel threads")
    args = p.parse_args(argv)
    tl.set_num_threads(args.threads)
    vs = variants()
    ab = {k: vs[k] for k in ("hooked", "bare")}
    step = make_step(args)
    for name in vs:  # warm every variant up (first-call imports, allocator)
        install(vs[name])
        step()
    times = time_interleaved(ab, step, args.rounds, args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    op_times = time_interleaved(vs, tiny_op(), args.op_rounds, args.op_reps)
    op_best = {k: min(v) for k, v in op_times.items()}
    n_ops = forward_ops_per_step(step)
    # the spread of per-round ratios says how large a difference the noise could hide
    ratios = sorted(a / b for a, b in zip(times["hooked"], times["bare"]))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    print(f"GPT step ({args.layers} layers, {args.embd} dims, batch {args.batch}x{args.block}, "
          f"{args.threads} thread(s)), {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"  hooked, profiler off: {med['hooked'] * 1e3:.3f} ms/step (median)")
    print(f"  bare (check removed): {med['bare'] * 1e3:.3f} ms/step (median)")
    print(f"ratio hooked/bare = {med['hooked'] / med['bare']:.4f} "
          f"(per-round ratios, middle half: {q1:.4f} .. {q3:.4f})")
    diff = op_best["hooked"] - op_best["bare"]
    print(f"tiny op forward (fastest of {args.op_rounds} rounds): hooked "
          f"{op_best['hooked'] * 1e9:.0f} ns, bare {op_best['bare'] * 1e9:.0f} ns: "
          f"{diff * 1e9:+.0f} ns per op (A/A noise floor: "
          f"{(op_best['A/A'] - op_best['hooked']) * 1e9:+.0f} ns)")
    print(f"{n_ops} forward ops per step x {diff * 1e9:+.0f} ns = {n_ops * diff * 1e6:+.2f} us "
          f"per step = {100 * n_ops * diff / med['bare']:+.3f}% of a step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
