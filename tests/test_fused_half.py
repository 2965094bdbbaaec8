"""float16 and bfloat16 inputs to every fused op: on the CPU providers (numpy, cpp), which
compute in float32 and round back (ops/fused.py's _widen/_narrow), and on the Triton provider
(here through Triton's interpreter), whose kernels take half inputs and accumulate in float32:
outputs and gradients come back in the input dtype, within a couple of that dtype's rounding
steps of the float64 truth computed from the same (rounded) inputs."""
import numpy as np
import pytest

import tensorlite as tl
import tensorlite.nn.functional as F

from _fused_helpers import providers

HALF = [pytest.param("float16", id="float16")]
try:
    import ml_dtypes  # noqa: F401
    HALF.append(pytest.param("bfloat16", id="bfloat16"))
except ImportError:
    HALF.append(pytest.param("bfloat16", id="bfloat16",
                             marks=pytest.mark.skip(reason="bfloat16 needs ml_dtypes")))

# one rounding step (unit roundoff) of each dtype; results may be off by the float32 compute
# plus one final rounding, so two steps relative to the output's scale, plus the inputs'
# rounding seen through the backward
EPS = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
CPU = [p for p in providers() if p.values[0] in ("numpy", "cpp")]
TRITON = [p for p in providers() if p.values[0] == "triton"]

# Triton's interpreter keeps bfloat16 tensors as their uint16 bit patterns and its tl.dot
# multiplies those as integers; kernels/attention.py therefore widens bfloat16 inputs to
# float32 under the interpreter (only there: a GPU keeps its bf16 dots). The bfloat16
# attention case below is the regression test for that.


def _triton_half(*ops):
    out = []
    for op in ops:
        for d in HALF:
            marks = list(d.marks) + list(TRITON[0].marks if TRITON else [])
            out.append(pytest.param(op, d.values[0], marks=marks, id=f"{op}-{d.values[0]}-triton"))
    return out


def _dt(name):
    return tl.float16 if name == "float16" else tl.bfloat16


def _run(fn, arrays, dtype, provider):
    """fn's output and its inputs' gradients of sum(out * w): in `dtype` through tensorlite,
    and in float64 from the same rounded inputs (the truth)."""
    tl.set_kernels(provider)
    try:
        res = []
        for dt in (_dt(dtype), tl.float64):
            ts = [tl.tensor(a).to(_dt(dtype)).to(dt).requires_grad_() for a in arrays]
            out = fn(*ts)
            w = tl.tensor(np.random.default_rng(3).standard_normal(out.shape)).to(dt)
            (out * w).sum().backward()
            assert out.dtype == dt and all(t.grad.dtype == dt for t in ts)
            res.append([out.detach().float().numpy().astype(np.float64)] +
                       [t.grad.float().numpy().astype(np.float64) for t in ts])
        return res
    finally:
        tl.set_kernels(None)


def _close(got, want, eps, what, steps=2.0):
    scale = max(np.abs(want).max(), 1e-3)
    err = np.abs(got - want).max()
    assert err <= steps * eps * scale, f"{what}: error {err:.3g} > {steps} x {eps:.3g} x {scale:.3g}"


OPS = {
    "softmax": (lambda x: x.softmax(-1), [(4, 33)]),
    "log_softmax": (lambda x: x.log_softmax(-1), [(4, 33)]),
    "gelu": (lambda x: x.gelu("tanh"), [(5, 17)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (24,), w, b), [(6, 24), (24,), (24,)]),
    "attention": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  [(2, 2, 9, 8)] * 3),
}


@pytest.mark.parametrize("provider", CPU)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("op", sorted(OPS))
def test_half_inputs_compute_in_float32(op, dtype, provider):
    fn, shapes = OPS[op]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    (out, *grads), (out64, *grads64) = _run(fn, arrays, dtype, provider)
    _close(out, out64, EPS[dtype], f"{op} output")
    for i, (g, g64) in enumerate(zip(grads, grads64)):
        # the backward rounds its incoming gradient and its result once each
        _close(g, g64, EPS[dtype], f"{op} grad {i}", steps=4.0)


@pytest.mark.parametrize("op,dtype", _triton_half(*sorted(OPS)))
def test_half_inputs_on_triton(op, dtype):
    """The same check on the Triton provider, which takes float16/bfloat16 arrays itself."""
    test_half_inputs_compute_in_float32(op, dtype, "triton")


@pytest.mark.parametrize("provider", CPU + TRITON)
@pytest.mark.parametrize("dtype", HALF)
def test_half_cross_entropy(dtype, provider):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((7, 11)) * 3
    target = tl.tensor(rng.integers(0, 11, 7))
    res = _run(lambda x: F.cross_entropy(x, target, reduction="none"), [logits], dtype, provider)
    (loss, g), (loss64, g64) = res
    _close(loss, loss64, EPS[dtype], "cross_entropy loss")
    _close(g, g64, EPS[dtype], "cross_entropy grad", steps=4.0)


@pytest.mark.parametrize("op,dtype", _triton_half("adamw"))
def test_half_adamw_on_triton(op, dtype):
    """One fused AdamW step on half parameters and state (the Triton provider takes them; the
    CPU providers take float32/float64 only): each array moves as the float64 step from the
    same rounded values says, within a couple of rounding steps of its own scale."""
    from tensorlite.backend import registry
    from _fused_helpers import load
    load("triton")
    np_dt = _dt(dtype).np
    rng = np.random.default_rng(4)
    arrs = [rng.standard_normal(40).astype(np_dt) for _ in range(3)]
    arrs[2] = np.abs(arrs[2])  # exp_avg_sq >= 0
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, step=7)
    p, g, m, v = (a.astype(np.float64) for a in (arrs[0], arrs[1], arrs[0] * 0.5, arrs[2]))
    ins = [a.astype(np_dt) for a in (p, g, m, v)]
    p, g, m, v = (a.astype(np.float64) for a in ins)
    want = [a.copy() for a in (p, g, m, v)]
    registry.load("numpy").adamw_step([want[0]], [want[1]], [want[2]], [want[3]], **hp)
    registry.load("triton").adamw_step([ins[0]], [ins[1]], [ins[2]], [ins[3]], **hp)
    for name, got, w in (("param", ins[0], want[0]), ("exp_avg", ins[2], want[2]),
                         ("exp_avg_sq", ins[3], want[3])):
        assert got.dtype == np_dt
        _close(got.astype(np.float64), w, EPS[dtype], f"adamw {name}")


def test_a_half_gpt_trains_on_the_cpu():
    tl.manual_seed(0)
    from tensorlite.models import GPT, GPTConfig
    m = GPT(GPTConfig(vocab_size=17, block_size=8, n_layer=1, n_head=2, n_embd=16)).to(tl.float16)
    x = tl.randint(0, 17, (4, 8))
    logits, loss = m(x, x)
    assert logits.dtype == tl.float16 and np.isfinite(loss.item())
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == tl.float16 for p in m.parameters())
