"""adamw_step (one fused AdamW update of many parameters, in place), every provider
(tests/_fused_helpers.py).

The reference against a textbook loop; "cpp" and "triton" against the reference over
three steps (empty and one-element parameters, float32 and float64 parameters in one
call); the op boundary's messages (ops.fused.adamw_step and optim.AdamW) under every
provider; the C++ extension's own guards."""
import math

import numpy as np
import pytest

import tensorlite as tl
import tensorlite.reference as R
from tensorlite.backend.registry import DTYPES
from tensorlite import nn, optim
from tensorlite.ops.fused import adamw_step

from _fused_helpers import (FLOATS, assert_defines, cases, check, dtype_message, f64, load,
                            needs_cpp, providers, t)
from _fused_helpers import each_provider_fixture  # noqa: F401 (the fixture each_provider)

HP = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


def test_reference_matches_a_textbook_loop_over_three_steps(rng):
    shapes = [(3, 4), (5,)]
    params = [rng.standard_normal(s) for s in shapes]
    ms = [np.zeros(s) for s in shapes]
    vs = [np.zeros(s) for s in shapes]
    want = [p.copy() for p in params]
    wm = [np.zeros(s) for s in shapes]
    wv = [np.zeros(s) for s in shapes]
    hp = HP
    for step in (1, 2, 3):
        grads = [rng.standard_normal(s) for s in shapes]
        R.adamw_step(params, grads, ms, vs, step=step, **hp)
        for p, g, m, v in zip(want, grads, wm, wv):
            for i in np.ndindex(p.shape):
                p[i] = p[i] - hp["lr"] * hp["weight_decay"] * p[i]
                m[i] = hp["beta1"] * m[i] + (1 - hp["beta1"]) * g[i]
                v[i] = hp["beta2"] * v[i] + (1 - hp["beta2"]) * g[i] ** 2
                mhat = m[i] / (1 - hp["beta1"] ** step)
                vhat = v[i] / (1 - hp["beta2"] ** step)
                p[i] = p[i] - hp["lr"] * mhat / (math.sqrt(vhat) + hp["eps"])
    for got, exp in zip(params + ms + vs, want + wm + wv):
        np.testing.assert_allclose(got, exp, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("provider", providers())
def test_every_provider_defines_the_op(provider):
    assert_defines(provider, "adamw_step")


# (provider, shapes, beta2, new_grads): whether each step gets new gradients
CASES = (cases("cpp", ([(3, 40000), (7,), (0,), (1,)], 0.95, True))
         + cases("triton", ([(3, 7), (1000,), (2, 3, 4), (0,)], 0.999, False)))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("provider,shapes,beta2,new_grads", CASES)
def test_matches_reference_over_three_steps(rng, provider, shapes, beta2, new_grads, dtype):
    mod = load(provider)
    hp = dict(HP, beta2=beta2)
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    ms, vs = [np.zeros(s, dtype) for s in shapes], [np.zeros(s, dtype) for s in shapes]
    rps, rms, rvs = [f64(p) for p in ps], [f64(m) for m in ms], [f64(v) for v in vs]
    gs = None
    for step in (1, 2, 3):
        if new_grads or gs is None:
            gs = [rng.standard_normal(s).astype(dtype) for s in shapes]
        assert mod.adamw_step(ps, gs, ms, vs, step=step, **hp) is None
        R.adamw_step(rps, [f64(g) for g in gs], rms, rvs, step=step, **hp)
    for what, got, want in zip(["param"] * len(ps) + ["exp_avg"] * len(ms)
                               + ["exp_avg_sq"] * len(vs), ps + ms + vs, rps + rms + rvs):
        check(provider, got, want, dtype, what, scale=10, rel=2)


@pytest.mark.parametrize("provider", providers())
def test_float32_and_float64_parameters_in_one_call(provider):
    mod = load(provider)
    p32, p64 = np.ones(5, np.float32), np.ones(5, np.float64)
    g32, g64 = np.full(5, 0.5, np.float32), np.full(5, 0.5)
    m, v = [np.zeros(5, np.float32), np.zeros(5)], [np.zeros(5, np.float32), np.zeros(5)]
    mod.adamw_step([p32, p64], [g32, g64], m, v, step=1, **HP)
    assert p32.dtype == np.float32 and p64.dtype == np.float64
    np.testing.assert_allclose(p32, p64, rtol=1e-6)
    assert p64[0] < 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_matches_reference(rng, each_provider, dtype):
    """optim.AdamW as a user calls it, two parameters over three steps (one of them skips
    a step: it has no gradient), against the reference."""
    shapes = [(4, 5), (7,)]
    ps = [nn.Parameter(t(rng.standard_normal(s).astype(dtype))) for s in shapes]
    ref = [f64(np.asarray(p.detach())) for p in ps]
    state = [(np.zeros(s), np.zeros(s), [0]) for s in shapes]
    opt = optim.AdamW(ps, lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for step in (1, 2, 3):
        for i, (p, s) in enumerate(zip(ps, shapes)):
            p.grad = None if (i == 1 and step == 2) else t(rng.standard_normal(s).astype(dtype))
        opt.step()
        for p, r, (m, v, n) in zip(ps, ref, state):
            if p.grad is None:
                continue
            n[0] += 1
            R.adamw_step([r], [f64(np.asarray(p.grad))], [m], [v], step=n[0], **HP)
    for i, (p, r) in enumerate(zip(ps, ref)):
        check(each_provider, np.asarray(p.detach()), r, dtype, f"parameter {i}", scale=10, rel=2)


# ---------------------------------------------------------------- bad input

def test_op_boundary_rejects_bad_input(each_provider):
    p = each_provider
    a = lambda: np.zeros((2, 3), np.float32)  # noqa: E731
    kw = dict(step=1, **HP)
    with pytest.raises(ValueError, match="adamw_step: lists differ in length: params 1, grads 0, "
                                         "exp_avgs 1, exp_avg_sqs 1"):
        adamw_step("cpu", [a()], [], [a()], [a()], **kw)
    with pytest.raises(ValueError, match=r"adamw_step: parameter 0 has shape \(2, 3\) but its "
                                         r"grad has shape \(3, 2\)"):
        adamw_step("cpu", [a()], [np.zeros((3, 2), np.float32)], [a()], [a()], **kw)
    with pytest.raises(ValueError, match="adamw_step: parameter 0's param must be a contiguous, "
                                         "writeable array"):
        adamw_step("cpu", [np.zeros((3, 2), np.float32).T], [a()], [a()], [a()], **kw)
    strided = np.zeros((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="adamw_step: parameter 0's param must be a contiguous"):
        adamw_step("cpu", [strided], [strided], [strided], [strided], **kw)
    ro = a()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="adamw_step: parameter 0's exp_avg must be a "
                                         "contiguous, writeable array"):
        adamw_step("cpu", [a()], [a()], [ro], [a()], **kw)
    with pytest.raises(TypeError, match=r"adamw_step \(parameter 0\): exp_avg_sq has dtype "
                                        r"float64 but param has float32"):
        adamw_step("cpu", [a()], [a()], [a()], [np.zeros((2, 3))], **kw)
    with pytest.raises(TypeError, match=dtype_message("adamw_step (parameter 0)", "param",
                                                      "int32", p)):
        adamw_step("cpu", *([np.zeros(3, np.int32)] for _ in range(4)), **kw)
    with pytest.raises(ValueError, match="adamw_step: step is 1-based, got 0"):
        adamw_step("cpu", [a()], [a()], [a()], [a()], **{**kw, "step": 0})
    with pytest.raises(TypeError):
        adamw_step("cpu", [a()], [a()], [a()], [a()], 1e-3, 0.9, 0.99, 1e-8, 0.0, 1)  # keyword-only
    with pytest.raises(ValueError, match="adamw_step: lr must be finite, got nan"):
        adamw_step("cpu", [a()], [a()], [a()], [a()], **{**kw, "lr": float("nan")})
    # through the optimizer (which checks its hyper-parameters itself, when it is made)
    with pytest.raises(ValueError, match="lr must be a finite number, got nan"):
        optim.AdamW([nn.Parameter(t(a()))], lr=float("nan")).step()
    if "float16" not in DTYPES[p]:
        w16 = nn.Parameter(t(np.zeros((2, 3), np.float16)))
        w16.grad = t(np.ones((2, 3), np.float16))
        with pytest.raises(TypeError, match=dtype_message("adamw_step (parameter 0)", "param",
                                                          "float16", p)):
            optim.AdamW([w16], lr=1e-2).step()
    w = nn.Parameter(t(a()))
    w.grad = t(np.ones((2, 3), np.float32))
    optim.AdamW([w], lr=1e-2).step()  # and good input is updated in place, in its dtype
    assert w.dtype == tl.float32 and np.all(np.asarray(w.detach()) < 0)


@needs_cpp
def test_cpp_guards_name_the_kernel():
    """tensorlite._C's own checks, which keep memory safe when it is called directly."""
    C = load("cpp")
    p, g, m, v = (np.zeros((2, 3), np.float32) for _ in range(4))
    kw = dict(step=1, **HP)
    with pytest.raises(ValueError, match="length"):
        C.adamw_step([p], [], [m], [v], **kw)
    with pytest.raises(ValueError, match=r"adamw_step.*\(2, 3\).*\(3, 2\)"):
        C.adamw_step([p], [np.zeros((3, 2), np.float32)], [m], [v], **kw)
    with pytest.raises(ValueError, match="contiguous"):
        C.adamw_step([np.zeros((3, 2), np.float32).T], [g], [m], [v], **kw)
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        C.adamw_step([p], [g], [ro], [v], **kw)
    with pytest.raises(TypeError, match="exp_avg_sq"):
        C.adamw_step([p], [g], [m], [np.zeros((2, 3))], **kw)
    with pytest.raises(TypeError, match="numpy array"):
        C.adamw_step([[0.0, 1.0]], [g], [m], [v], **kw)
    with pytest.raises(ValueError, match="step"):
        C.adamw_step([p], [g], [m], [v], **{**kw, "step": 0})
    with pytest.raises(TypeError):
        C.adamw_step([p], [g], [m], [v], 1e-3, 0.9, 0.99, 1e-8, 0.0, 1)  # keyword-only
