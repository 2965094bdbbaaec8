"""Check and time the Triton kernels (the "triton" provider) in one command.

    python benchmarks/gpu_check.py            # on a CUDA machine (CuPy + Triton), < 5 min
    python benchmarks/gpu_check.py --tiny     # anywhere: Triton's interpreter, NumPy, tiny sizes
    python benchmarks/gpu_check.py --compile-only   # no GPU needed: compile every kernel
                                                    # for sm_90 and print its resources

1. Checks: every op, forward and backward, against the NumPy reference
   (tensorlite/reference, which also runs on CuPy arrays) at realistic sizes. A result
   passes when its error against the float64 reference is at most twice the float32
   reference's own error plus a small tolerance (FlashAttention's rule); half-precision
   attention is held to a fixed tolerance against float64.
2. Timings, each against PyTorch when it is installed: softmax and layer_norm at
   M=4096 x N in {1024, 4096, 8192}, attention at B=4, H=16, T in {1024, 4096},
   D in {64, 128} in bfloat16 (causal and not), cross_entropy at (8192, 50257).
   GPU times come from CuPy events (triton.testing.do_bench needs torch); the
   device-to-device copy bandwidth measured with CuPy is printed as the roofline.

--tiny runs the same code at tiny sizes on NumPy arrays through Triton's interpreter
(times are host wall-clock, PyTorch on the CPU when installed); it needs neither CuPy
nor PyTorch. Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="interpreter mode: NumPy arrays, tiny sizes, no GPU")
    ap.add_argument("--compile-only", action="store_true",
                    help="compile every kernel for a CUDA target without a GPU and print "
                         "shared memory / registers / spills (slow: minutes)")
    ap.add_argument("--arch", type=int, default=90, help="compute capability for --compile-only")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--skip-timings", action="store_true")
    return ap.parse_args()


ARGS = _parse()
# Triton decides per kernel, when its module is imported, whether to interpret it.
if ARGS.tiny:
    os.environ["TRITON_INTERPRET"] = "1"
elif os.environ.pop("TRITON_INTERPRET", None) not in (None, "0"):
    print("note: TRITON_INTERPRET unset for this run (GPU mode); use --tiny for the interpreter")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

import tensorlite  # noqa: E402,F401  (maps kernels/ to tensorlite.kernels from a checkout)
from tensorlite import reference as R  # noqa: E402

if ARGS.tiny or ARGS.compile_only:
    xp = np
else:
    import cupy as xp  # noqa: E402

if not ARGS.compile_only:
    from tensorlite.kernels import provider as P  # noqa: E402

torch = None
if not ARGS.no_torch and not ARGS.compile_only:
    try:
        import torch  # noqa: E402
        import torch.nn.functional as F  # noqa: E402
    except ImportError:
        torch = None

TDEV = "cpu" if ARGS.tiny else "cuda"
FAILED = []


# ---------------------------------------------------------------------------- helpers

def randn(rng, shape, dtype=np.float32, scale=1.0):
    return xp.asarray((rng.standard_normal(shape) * scale).astype(dtype))


def err(a, ref):
    """max |a - ref| / max |ref| (ref's scale), in float64, on the arrays' device
    (the GPU-sized outputs, e.g. 8192 x 50257 dlogits, stay off the host)."""
    a = a.astype(np.float64)
    ref = ref.astype(np.float64)
    fin = xp.isfinite(ref)
    if not bool(xp.array_equal(fin, xp.isfinite(a))):
        return float("inf")
    if not bool(fin.all()) and not bool(xp.array_equal(ref[~fin], a[~fin])):
        return float("inf")
    if not bool(fin.any()):
        return 0.0
    scale = max(float(xp.abs(ref[fin]).max()), 1e-30)
    return float(xp.abs(a[fin] - ref[fin]).max()) / scale


def check(name, ours, ref32, ref64, atol=1e-6):
    """FlashAttention's rule: err(ours) <= 2 * err(fp32 reference) + atol."""
    ok_all = True
    for i, (o, r32, r64) in enumerate(zip(ours, ref32, ref64)):
        if r64 is None:
            continue
        e, e32 = err(o, r64), err(r32, r64)
        ok = e <= 2 * e32 + atol
        ok_all &= ok
        print(f"  check {name}[{i}]: err {e:.2e}  (fp32 reference {e32:.2e})  "
              f"{'ok' if ok else 'FAIL'}")
    if not ok_all:
        FAILED.append(name)


def check_fixed(name, ours, ref64, tol):
    ok_all = True
    for i, (o, r) in enumerate(zip(ours, ref64)):
        e = err(o, r)
        ok = e <= tol
        ok_all &= ok
        print(f"  check {name}[{i}]: err {e:.2e}  (tolerance {tol:.0e})  {'ok' if ok else 'FAIL'}")
    if not ok_all:
        FAILED.append(name)


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def sync():
    if not ARGS.tiny:
        xp.cuda.Device().synchronize()


def bench(fn):
    """Seconds per call: CuPy events on a GPU, host clock in the interpreter."""
    fn()  # compiles / warms up
    if ARGS.tiny:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    sync()
    start, end = xp.cuda.Event(), xp.cuda.Event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    once = xp.cuda.get_elapsed_time(start, end) / 1e3
    reps = int(min(100, max(3, 0.2 / max(once, 1e-6))))
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return xp.cuda.get_elapsed_time(start, end) / 1e3 / reps


def to_torch(a, requires_grad=False):
    t = torch.from_numpy(a) if ARGS.tiny else torch.from_dlpack(a)
    t = t.detach().clone()
    return t.requires_grad_(requires_grad)


def report(name, t_ours, t_torch, amount, unit):
    """amount: bytes (unit 'GB/s') or flops (unit 'TFLOP/s') per call."""
    div = 1e9 if unit == "GB/s" else 1e12
    line = f"  time {name:<44} ours {t_ours * 1e3:9.3f} ms {amount / t_ours / div:9.1f} {unit}"
    if t_torch is not None:
        line += (f" | torch {t_torch * 1e3:9.3f} ms {amount / t_torch / div:9.1f} {unit}"
                 f" | torch/ours {t_torch / t_ours:5.2f}")
    print(line)


def half_dtype():
    """bfloat16 where the array library has it; else float16 (same tensor-core speed)."""
    if ARGS.tiny:
        return np.float16, "float16 (NumPy has no bfloat16)"
    try:
        import ml_dtypes
        xp.zeros(1, dtype=ml_dtypes.bfloat16)
        return np.dtype(ml_dtypes.bfloat16), "bfloat16"
    except (ImportError, TypeError, ValueError) as e:
        return np.float16, f"float16 (CuPy bfloat16 unavailable: {type(e).__name__})"


# ---------------------------------------------------------------------------- checks

def run_checks(rng):
    print("checks: triton provider vs the NumPy reference" + (" (tiny)" if ARGS.tiny else ""))
    tiny = ARGS.tiny
    # softmax / log_softmax, including a row wider than one tile (loop kernels) on a GPU
    shapes = [(6, 37)] if tiny else [(4096, 4096), (64, 50257)]
    for shape in shapes:
        x = randn(rng, shape, scale=3)
        dy = randn(rng, shape)
        for log in (False, True):
            fwd = R.log_softmax_forward if log else R.softmax_forward
            bwd = R.log_softmax_backward if log else R.softmax_backward
            pf = P.log_softmax_forward if log else P.softmax_forward
            pb = P.log_softmax_backward if log else P.softmax_backward
            nm = f"{'log_' if log else ''}softmax {shape}"
            y = pf(x)
            check(nm + " fwd", [y], [fwd(x)], [fwd(*f64(x))])
            yr = fwd(x)
            check(nm + " bwd", [pb(yr, dy)], [bwd(yr, dy)], [bwd(*f64(yr, dy))])
    # layer_norm
    shape = (5, 3, 40) if tiny else (4096, 4096)
    c = shape[-1]
    x, dy = randn(rng, shape, scale=2) + 1, randn(rng, shape)
    w, b = randn(rng, (c,)), randn(rng, (c,))
    check(f"layer_norm {shape} fwd", P.layer_norm_forward(x, w, b, 1e-5),
          R.layer_norm_forward(x, w, b, 1e-5), R.layer_norm_forward(*f64(x, w, b), 1e-5))
    _, mu, rs = R.layer_norm_forward(x, w, b, 1e-5)
    check(f"layer_norm {shape} bwd", P.layer_norm_backward(dy, x, w, mu, rs),
          R.layer_norm_backward(dy, x, w, mu, rs), R.layer_norm_backward(*f64(dy, x, w, mu, rs)))
    # gelu
    shape = (7, 33) if tiny else (4096, 4096)
    x, dy = randn(rng, shape, scale=3), randn(rng, shape)
    for mode in ("none", "tanh"):
        check(f"gelu {mode} {shape} fwd", [P.gelu_forward(x, mode)], [R.gelu_forward(x, mode)],
              [R.gelu_forward(*f64(x), mode)])
        check(f"gelu {mode} {shape} bwd", [P.gelu_backward(x, dy, mode)],
              [R.gelu_backward(x, dy, mode)], [R.gelu_backward(*f64(x, dy), mode)])
    # cross_entropy
    n, v = (9, 50) if tiny else (8192, 50257)
    x = randn(rng, (n, v), scale=2)
    t = xp.asarray(rng.integers(0, v, n))
    t[::7] = -100
    dl = randn(rng, (n,))
    for e in (0.0, 0.1):
        check(f"cross_entropy ({n}, {v}) smoothing {e} fwd",
              P.cross_entropy_forward(x, t, -100, e), R.cross_entropy_forward(x, t, -100, e),
              R.cross_entropy_forward(*f64(x), t, -100, e))
        _, lse = R.cross_entropy_forward(x, t, -100, e)
        check(f"cross_entropy ({n}, {v}) smoothing {e} bwd",
              [P.cross_entropy_backward(x, t, lse, dl, -100, e)],
              [R.cross_entropy_backward(x, t, lse, dl, -100, e)],
              [R.cross_entropy_backward(*f64(x), t, *f64(lse, dl), -100, e)])
    # adamw: three steps on a few arrays
    shapes = [(5, 7), (30,)] if tiny else [(4096, 4096), (50257, 768), (768,)]
    ps = [randn(rng, s) for s in shapes]
    gs = [randn(rng, s) for s in shapes]
    states = {name: ([p.copy() for p in ps], [xp.zeros_like(p) for p in ps],
                     [xp.zeros_like(p) for p in ps]) for name in ("ours", "r32")}
    states["r64"] = ([p.astype(np.float64) for p in ps], [xp.zeros(p.shape) for p in ps],
                     [xp.zeros(p.shape) for p in ps])
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    for step in (1, 2, 3):
        P.adamw_step(states["ours"][0], gs, *states["ours"][1:], step=step, **hp)
        R.adamw_step(states["r32"][0], gs, *states["r32"][1:], step=step, **hp)
        R.adamw_step(states["r64"][0], [g.astype(np.float64) for g in gs], *states["r64"][1:],
                     step=step, **hp)
    for i in range(3):
        check(f"adamw (state {i})", states["ours"][i], states["r32"][i], states["r64"][i])
    # attention, float32: causal with Tq != Tk, an additive mask broadcast over B,
    # fully masked rows
    cfgs = ([(1, 2, 24, 40, 16, True, False), (2, 2, 33, 21, 32, False, True)] if tiny else
            [(2, 8, 1024, 1024, 64, True, False), (2, 4, 700, 1100, 64, True, False),
             (2, 8, 1024, 1024, 64, False, True)])
    for b, h, tq, tk, d, causal, with_mask in cfgs:
        q, k, vv = randn(rng, (b, h, tq, d)), randn(rng, (b, h, tk, d)), randn(rng, (b, h, tk, d))
        do = randn(rng, (b, h, tq, d))
        mask = None
        if with_mask:
            m = np.where(rng.random((1, h, tq, tk)) < 0.2, -np.inf, 0.0).astype(np.float32)
            m[:, :, 1, :] = -np.inf  # a query row that attends nothing
            mask = xp.asarray(m)
        sc = d ** -0.5
        nm = f"attention fp32 {(b, h, tq, tk, d)} causal={causal} mask={with_mask}"
        check(nm + " fwd", P.attention_forward(q, k, vv, mask, causal, sc),
              R.attention_forward(q, k, vv, mask, causal, sc),
              R.attention_forward(*f64(q, k, vv, mask), causal, sc))
        o, lse = R.attention_forward(q, k, vv, mask, causal, sc)
        check(nm + " bwd", P.attention_backward(q, k, vv, o, lse, do, mask, causal, sc),
              R.attention_backward(q, k, vv, o, lse, do, mask, causal, sc),
              R.attention_backward(*f64(q, k, vv, o, lse, do, mask), causal, sc))
    # attention in half precision (fp32 accumulation), against float64
    hdt, hname = half_dtype()
    b, h, t, d = (1, 2, 32, 16) if tiny else (2, 8, 1024, 128)
    q, k, vv, do = (randn(rng, (b, h, t, d)).astype(hdt) for _ in range(4))
    sc = d ** -0.5
    q64, k64, v64, do64 = (a.astype(np.float32).astype(np.float64) for a in (q, k, vv, do))
    o, lse = P.attention_forward(q, k, vv, None, True, sc)
    ro, rlse = R.attention_forward(q64, k64, v64, None, True, sc)
    check_fixed(f"attention {hname} {(b, h, t, d)} causal fwd",
                [o.astype(np.float32), lse], [ro, rlse], 2e-2)
    grads = P.attention_backward(q, k, vv, o, lse, do, None, True, sc)
    rgrads = R.attention_backward(q64, k64, v64, ro, rlse, do64, None, True, sc)
    check_fixed(f"attention {hname} {(b, h, t, d)} causal bwd",
                [g.astype(np.float32) for g in grads], rgrads, 5e-2)


# ---------------------------------------------------------------------------- timings

def run_timings(rng):
    print("timings" + (" (tiny: Triton interpreter vs PyTorch on the CPU, host clock)"
                       if ARGS.tiny else ""))
    tiny = ARGS.tiny
    if torch is None:
        print("  (PyTorch not available: ours only)")
    if not tiny:
        a = xp.zeros(1 << 28, np.float32)  # 1 GiB
        b = xp.empty_like(a)
        t = bench(lambda: b.data.copy_from_device_async(a.data, a.nbytes))
        print(f"  roofline: device-to-device copy {2 * a.nbytes / t / 1e9:.0f} GB/s")
        del a, b

    # softmax and layer_norm, float32
    for n in ((40,) if tiny else (1024, 4096, 8192)):
        m = 8 if tiny else 4096
        x, dy = randn(rng, (m, n)), randn(rng, (m, n))
        w, bb = randn(rng, (n,)), randn(rng, (n,))
        nb = x.nbytes
        y = P.softmax_forward(x)
        tt = tf = None
        if torch is not None:
            xt, dyt = to_torch(x), to_torch(dy)
            wt, bt = to_torch(w), to_torch(bb)
            yt = torch.softmax(xt, -1)
            tf = bench(lambda: torch.softmax(xt, -1))
            tt = bench(lambda: torch._softmax_backward_data(dyt, yt, -1, xt.dtype))
        report(f"softmax fwd ({m}, {n}) fp32", bench(lambda: P.softmax_forward(x)), tf, 2 * nb,
               "GB/s")
        report(f"softmax bwd ({m}, {n}) fp32", bench(lambda: P.softmax_backward(y, dy)), tt,
               3 * nb, "GB/s")
        _, mu, rs = P.layer_norm_forward(x, w, bb, 1e-5)
        if torch is not None:
            tf = bench(lambda: F.layer_norm(xt, (n,), wt, bt, 1e-5))
            xg = to_torch(x, True)
            wg, bg = to_torch(w, True), to_torch(bb, True)
            yg = F.layer_norm(xg, (n,), wg, bg, 1e-5)
            tt = bench(lambda: torch.autograd.grad(yg, (xg, wg, bg), dyt, retain_graph=True))
        report(f"layer_norm fwd ({m}, {n}) fp32",
               bench(lambda: P.layer_norm_forward(x, w, bb, 1e-5)), tf, 2 * nb, "GB/s")
        report(f"layer_norm bwd ({m}, {n}) fp32",
               bench(lambda: P.layer_norm_backward(dy, x, w, mu, rs)), tt, 3 * nb, "GB/s")

    # attention, bfloat16 (or float16)
    hdt, hname = half_dtype()
    b, h = (1, 2) if tiny else (4, 16)
    for t in ((32,) if tiny else (1024, 4096)):
        for d in ((16,) if tiny else (64, 128)):
            q, k, v, do = (randn(rng, (b, h, t, d)).astype(hdt) for _ in range(4))
            for causal in (False, True):
                sc = d ** -0.5
                flops = 4 * b * h * t * t * d * (0.5 if causal else 1.0)
                o, lse = P.attention_forward(q, k, v, None, causal, sc)
                tf = tt = None
                if torch is not None:
                    tdt = torch.bfloat16 if hname == "bfloat16" else torch.float16
                    qt, kt, vt, dot = (to_torch(a.astype(np.float32)).to(tdt)
                                       for a in (q, k, v, do))
                    qg, kg, vg = (a.clone().requires_grad_(True) for a in (qt, kt, vt))
                    og = F.scaled_dot_product_attention(qg, kg, vg, is_causal=causal, scale=sc)
                    tf = bench(lambda: F.scaled_dot_product_attention(qt, kt, vt,
                                                                      is_causal=causal, scale=sc))
                    tt = bench(lambda: torch.autograd.grad(og, (qg, kg, vg), dot,
                                                           retain_graph=True))
                nm = f"attention {hname} B={b} H={h} T={t} D={d} causal={causal}"
                report(nm + " fwd", bench(lambda: P.attention_forward(q, k, v, None, causal, sc)),
                       tf, flops, "TFLOP/s")
                report(nm + " bwd",
                       bench(lambda: P.attention_backward(q, k, v, o, lse, do, None, causal, sc)),
                       tt, 2.5 * flops, "TFLOP/s")

    # cross_entropy, float32
    n, v = (9, 50) if tiny else (8192, 50257)
    x = randn(rng, (n, v), scale=2)
    tg = xp.asarray(rng.integers(0, v, n))
    dl = randn(rng, (n,))
    loss, lse = P.cross_entropy_forward(x, tg, -100, 0.0)
    tf = tt = None
    if torch is not None:
        xt, tt_, dlt = to_torch(x), to_torch(tg), to_torch(dl)
        tf = bench(lambda: F.cross_entropy(xt, tt_, reduction="none"))
        xg = to_torch(x, True)
        lg = F.cross_entropy(xg, tt_, reduction="none")
        tt = bench(lambda: torch.autograd.grad(lg, (xg,), dlt, retain_graph=True))
    report(f"cross_entropy fwd ({n}, {v}) fp32",
           bench(lambda: P.cross_entropy_forward(x, tg, -100, 0.0)), tf, x.nbytes, "GB/s")
    report(f"cross_entropy bwd ({n}, {v}) fp32",
           bench(lambda: P.cross_entropy_backward(x, tg, lse, dl, -100, 0.0)), tt, 2 * x.nbytes,
           "GB/s")


# ---------------------------------------------------------------------------- compile-only

def compile_only(arch):
    """Compile every kernel (as the wrappers would launch it) for sm_<arch> on the host."""
    import re
    import subprocess
    import tempfile

    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tensorlite.kernels import _launch as L
    from tensorlite.kernels import adamw, attention, cross_entropy, gelu, layer_norm, softmax

    cuobjdump = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin",
                             "cuobjdump")
    names = {tl.float16: "fp16", tl.bfloat16: "bf16", tl.float32: "fp32", tl.float64: "fp64",
             tl.int64: "i64", tl.int32: "i32"}
    state = {"bf16": False, "seen": set()}

    def fake_launch(kernel, grid, *args, **meta):
        sig, consts = {}, {}
        bound = dict(zip(kernel.arg_names, args))
        for p in kernel.params:
            if p.is_constexpr:
                sig[p.name], consts[p.name] = "constexpr", meta[p.name]
                continue
            a = bound[p.name]
            if isinstance(a, np.ndarray):
                t = L.tl_dtype(a.dtype)
                if t == tl.float16 and state["bf16"]:
                    t = tl.bfloat16  # NumPy has no bfloat16: float16 arrays stand in for it
                sig[p.name] = "*" + names[t]
            elif isinstance(a, int):
                sig[p.name] = "i32" if -2**31 <= a < 2**31 else "i64"
            elif isinstance(a, float):
                sig[p.name] = "fp32"
            else:
                raise TypeError(f"{kernel.__name__}: argument {p.name} of type {type(a)}")
        key = (kernel.__name__, tuple(sorted(sig.items())), tuple(sorted(map(str, consts.items()))))
        if key in state["seen"]:
            return
        state["seen"].add(key)
        opts = {k: v for k, v in meta.items() if k in ("num_warps", "num_stages")}
        t0 = time.perf_counter()
        k = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=consts),
                           target=GPUTarget("cuda", arch, 32), options=opts)
        with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
            f.write(k.asm["cubin"])
            f.flush()
            res = subprocess.run([cuobjdump, "-res-usage", f.name], capture_output=True,
                                 text=True).stdout
        regs = re.search(r"REG:(\d+)", res)
        local = re.search(r"LOCAL:(\d+)", res)
        dt = next((v for v in sig.values() if v.startswith("*") and v[1] in "fb"), "?")
        bm = consts.get("BLOCK_M", "")
        bn = consts.get("BLOCK_N", consts.get("BLOCK_C", consts.get("BLOCK", "")))
        print(f"  {kernel.__name__:<16} {dt:<5} {bm!s:>4} {bn!s:>6} "
              f"D={consts.get('HEAD_D', '-')!s:<4} warps={opts.get('num_warps')} "
              f"shared={k.metadata.shared:>6} B regs={regs.group(1) if regs else '?':>3} "
              f"spill(local)={local.group(1) if local else '?'} B  "
              f"[{time.perf_counter() - t0:.1f} s]", flush=True)

    L.launch = fake_launch
    print(f"compiling every kernel for sm_{arch} (no GPU needed)")
    for dt, bf in ((np.float32, False), (np.float16, True), (np.float64, False)):
        state["bf16"] = bf
        x = np.zeros((64, 1024), dt)
        wide = np.zeros((2, 20000), dt)
        for a in (x, wide):
            y = softmax.softmax_forward(a)
            softmax.softmax_backward(y, a)
            softmax.log_softmax_forward(a)
            softmax.log_softmax_backward(y, a)
            w = np.zeros(a.shape[-1], dt)
            _, mu, rs = layer_norm.layer_norm_forward(a, w, w, 1e-5)
            layer_norm.layer_norm_backward(a, a, w, mu, rs)
        gelu.gelu_forward(x, "none")
        gelu.gelu_backward(x, x, "tanh")
        adamw.adamw_step([x], [x], [x], [x], lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=0.0, step=1)
        logits = np.zeros((4, 50257), dt)
        tg = np.zeros(4, np.int64)
        _, lse = cross_entropy.cross_entropy_forward(logits, tg, -100, 0.1)
        cross_entropy.cross_entropy_backward(logits, tg, lse, lse.astype(dt), -100, 0.1)
        for d, causal in ((64, True), (128, False)):
            if dt == np.float64 and d == 128:
                continue
            q = np.zeros((1, 1, 256, d), dt)
            mask = np.zeros((1, 1, 256, 256), dt)
            o, lse = attention.attention_forward(q, q, q, mask, causal, 0.1)
            attention.attention_backward(q, q, q, o, lse, q, mask, causal, 0.1)


def main():
    rng = np.random.default_rng(0)
    if ARGS.compile_only:
        compile_only(ARGS.arch)
        return 0
    t0 = time.perf_counter()
    mode = "Triton interpreter on NumPy arrays" if ARGS.tiny else "GPU (CuPy arrays)"
    print(f"gpu_check: {mode}; PyTorch {'present' if torch is not None else 'absent'}")
    if not ARGS.skip_checks:
        run_checks(rng)
    if not ARGS.skip_timings:
        run_timings(rng)
    print(f"done in {time.perf_counter() - t0:.1f} s; "
          + (f"FAILED: {', '.join(FAILED)}" if FAILED else "all checks passed"))
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
