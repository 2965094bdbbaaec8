"""softmax and log_softmax over the last dim, every provider (tests/_fused_helpers.py).

The reference against the formula and finite differences; "cpp" and "triton" against
the reference (float64 ~1e-10 / 1e-12, float32 ~1e-5); Triton's loop kernel (rows wider
than one tile) and float16; the op boundary's messages under every provider; the C++
extension's own guards."""
import numpy as np
import pytest
from hypothesis import given, settings

import tensorlite as tl
import tensorlite.reference as R
from tensorlite.ops.fused import FusedLogSoftmax, FusedSoftmax

from _fused_helpers import (FLOATS, ROWS, assert_defines, assert_grad, cases, check, close,
                            dtype_message, f64, load, needs_cpp, needs_triton, numeric_grad,
                            providers, rel_err, t)
from _fused_helpers import each_provider_fixture  # noqa: F401 (the fixture each_provider)

WHICH = ["softmax", "log_softmax"]


def ops(mod, which):
    return getattr(mod, f"{which}_forward"), getattr(mod, f"{which}_backward")


# ---------------------------------------------------------------- the reference

def test_reference_matches_formula_and_is_shift_invariant(rng):
    x = rng.standard_normal((3, 4, 7))
    want = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(R.softmax_forward(x), want, rtol=1e-13)
    np.testing.assert_allclose(R.softmax_forward(x + 1000.0), want, rtol=1e-12)
    np.testing.assert_allclose(R.log_softmax_forward(x), np.log(want), rtol=1e-12, atol=1e-14)
    assert np.isfinite(R.log_softmax_forward(x * 1e4)).all()


@pytest.mark.parametrize("which", WHICH)
def test_reference_backward_matches_finite_differences(rng, which):
    fwd, bwd = ops(R, which)
    x = rng.standard_normal((2, 5))
    w = rng.standard_normal((2, 5))
    num = numeric_grad(lambda: (fwd(x) * w).sum(), x)
    assert_grad(bwd(fwd(x), w), num)


def test_reference_keeps_float32():
    assert R.softmax_forward(np.ones((2, 3), np.float32)).dtype == np.float32
    assert R.log_softmax_forward(np.ones((2, 3), np.float32)).dtype == np.float32


# ---------------------------------------------------------------- providers vs the reference

@pytest.mark.parametrize("provider", providers())
def test_every_provider_defines_the_op(provider):
    assert_defines(provider, "softmax_forward", "softmax_backward", "log_softmax_forward",
                   "log_softmax_backward")



# (provider, shape, loop_block): loop_block forces Triton's loop kernel with that column
# block, so a row spans several blocks with a tail
FORWARD_BACKWARD = (
    cases("cpp", *[(s, None) for s in [(1, 7), (3, 5, 33), (2, 1), (0, 10), (17,), (4, 1000),
                                       (2, 0, 3)]])
    + cases("triton", ((3, 5, 37), None), ((4, 50), 16), ((2, 1), None)))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("provider,shape,loop_block", FORWARD_BACKWARD)
@pytest.mark.parametrize("which", WHICH)
def test_forward_backward_match_reference(rng, provider, shape, loop_block, dtype, which):
    fwd, bwd = ops(load(provider), which)
    if loop_block is not None:
        from tensorlite.kernels import softmax as KS
        log = which == "log_softmax"
        fwd = lambda x: KS._forward(x, log, loop_block=loop_block)  # noqa: E731
        bwd = lambda y, dy: KS._backward(y, dy, log, loop_block=loop_block)  # noqa: E731
    rfwd, rbwd = ops(R, which)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y = fwd(x)
    assert y.shape == x.shape
    check(provider, y, rfwd(f64(x)), dtype, "forward", scale=10)
    # the backward is checked on the kernel's own output, as autograd uses it
    check(provider, bwd(y, dy), rbwd(f64(y), f64(dy)), dtype, "backward", scale=10)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_extreme_logits_stay_finite(provider, dtype):
    mod = load(provider)
    x = np.array([[1e4, -1e4, 0.0, 9999.0], [-1e4, -1e4, -1e4, -1e4]], dtype)
    check(provider, mod.softmax_forward(x), R.softmax_forward(f64(x)), dtype)
    ly = mod.log_softmax_forward(x)
    assert np.isfinite(ly).all()
    np.testing.assert_allclose(ly, R.log_softmax_forward(f64(x)), rtol=1e-6, atol=2e-3)


@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_non_contiguous_inputs(rng, provider):
    mod = load(provider)
    base = rng.standard_normal((6, 40))
    for x in (base[:, ::3], base.T, base[::2]):
        check(provider, mod.softmax_forward(x), R.softmax_forward(x), np.float64)
        y = R.softmax_forward(x)
        dy = np.asfortranarray(rng.standard_normal(x.shape))
        check(provider, mod.softmax_backward(y, dy), R.softmax_backward(y, dy), np.float64)


@pytest.mark.parametrize("provider", providers("cpp", "triton"))
def test_edge_shapes_and_masked_logits(rng, provider):
    mod = load(provider)
    x = rng.standard_normal((3, 7)).astype(np.float32)
    check(provider, mod.softmax_forward(x), R.softmax_forward(f64(x)), np.float32)
    check(provider, mod.log_softmax_forward(x), R.log_softmax_forward(f64(x)), np.float32)
    xt = rng.standard_normal((7, 3)).astype(np.float32).T  # not contiguous
    check(provider, mod.softmax_forward(xt), R.softmax_forward(f64(xt)), np.float32)
    # a 0-size leading dim, and an empty last dim (which the Tensor layer never sends)
    assert mod.softmax_forward(np.zeros((0, 5), np.float32)).shape == (0, 5)
    assert mod.softmax_forward(np.zeros((3, 0), np.float32)).shape == (3, 0)
    xm = x.copy()
    xm[:, ::2] = -np.inf  # masked logits
    y = mod.softmax_forward(xm)
    assert np.all(y[:, ::2] == 0) and np.allclose(y.sum(-1), 1, atol=1e-6)


@needs_triton
def test_triton_float16_accumulates_in_float32(rng):
    """The GPU half-precision path (fp16 storage, fp32 math), as far as NumPy can carry it."""
    mod = load("triton")
    x = (rng.standard_normal((6, 70)) * 2).astype(np.float16)
    y = mod.softmax_forward(x)
    assert y.dtype == np.float16 and rel_err(y, R.softmax_forward(x.astype(np.float64))) < 2e-3


@needs_cpp
@settings(max_examples=15, deadline=None)
@given(**ROWS)
def test_cpp_hypothesis_shapes(lead, C_, dtype, seed):
    C = load("cpp")
    r = np.random.default_rng(seed)
    x = (r.standard_normal((*lead, C_)) * 3).astype(dtype)
    close(C.softmax_forward(x), R.softmax_forward(f64(x)), dtype, scale=10)
    close(C.log_softmax_forward(x), R.log_softmax_forward(f64(x)), dtype, scale=10)


@pytest.mark.parametrize("which", WHICH)
def test_through_autograd_matches_reference(rng, each_provider, which):
    """The op as a user calls it (Tensor method, any dim): forward and gradient from the
    provider in use, against the reference."""
    x, w = rng.standard_normal((3, 5, 7)), rng.standard_normal((3, 5, 7))
    xt = t(x, requires_grad=True)
    assert getattr(xt, which)(-1).grad_fn.provider == each_provider
    y = getattr(xt, which)(1)  # not the last dim: the Tensor layer transposes around the op
    (y * t(w)).sum().backward()
    fwd, bwd = ops(R, which)
    ry = fwd(x.swapaxes(1, 2)).swapaxes(1, 2)
    rdx = bwd(ry.swapaxes(1, 2), w.swapaxes(1, 2)).swapaxes(1, 2)
    check(each_provider, np.asarray(y.detach()), ry, np.float64, "forward")
    check(each_provider, np.asarray(xt.grad), rdx, np.float64, "gradient")


# ---------------------------------------------------------------- bad input

def test_op_boundary_rejects_bad_input(each_provider):
    p = each_provider
    with pytest.raises(TypeError, match=dtype_message("softmax", "x", "int64", p)):
        FusedSoftmax.apply(t(np.ones((2, 3), np.int64)))
    with pytest.raises(TypeError, match=dtype_message("log_softmax", "x", "int64", p)):
        FusedLogSoftmax.apply(t(np.ones((2, 3), np.int64)))
    # float16 is taken by every provider (numpy/cpp widen it to float32) and kept
    assert t(np.ones((2, 3), np.float16)).log_softmax(-1).dtype == tl.float16
    with pytest.raises(ValueError, match=r"softmax: expected an array with at least 1 dim, "
                                         r"got shape \(\)"):
        FusedSoftmax.apply(t(np.array(1.0)))
    # a dy of the wrong shape never reaches a provider: the autograd engine refuses it
    y = t(np.ones((2, 3)), requires_grad=True).softmax(-1)
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3, 2\) but the output has "
                                           r"shape \(2, 3\)"):
        y.backward(t(np.ones((3, 2))))
    # and good input keeps its dtype
    assert t(np.ones((2, 3), np.float32)).softmax(-1).dtype == tl.float32


@needs_cpp
def test_cpp_guards_name_the_kernel():
    """tensorlite._C's own checks, which keep memory safe when it is called directly."""
    C = load("cpp")
    with pytest.raises(TypeError, match="softmax_forward.*int64"):
        C.softmax_forward(np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match="log_softmax_forward.*float16"):
        C.log_softmax_forward(np.ones((2, 3), np.float16))
    with pytest.raises(TypeError, match="softmax_backward.*dy"):
        C.softmax_backward(np.ones((2, 3), np.float32), np.ones((2, 3), np.float64))
    with pytest.raises(ValueError, match=r"softmax_backward.*\(2, 3\).*\(3, 2\)"):
        C.softmax_backward(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="softmax_forward"):
        C.softmax_forward(np.array(1.0))


@needs_cpp
@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4, 3e4])
def test_cpp_log_softmax_of_offset_logits_is_as_accurate_as_numpy(offset):
    # computing x - (max + log(sum)) rounds the shift to max's ulp (1e-3 at 1e4 in float32);
    # the kernel subtracts the two separately, as the reference does
    C = load("cpp")
    x = (np.random.default_rng(0).standard_normal((32, 500)) * 3 + offset).astype(np.float32)
    truth = R.log_softmax_forward(x.astype(np.float64))
    err_cpp = np.abs(C.log_softmax_forward(x) - truth).max()
    err_ref = np.abs(R.log_softmax_forward(x) - truth).max()
    assert err_cpp <= 2 * err_ref + 1e-7, (err_cpp, err_ref)
