"""The cpp provider's attention layouts and tiles (docs/KERNELS.md): o in q's layout for a
packed q, one packed gradient for q | k | v thirds of one array, and the narrow query tiles
of short sequences, each giving the same bits as the plain layout or tile."""
import numpy as np
import pytest

from _fused_helpers import load, needs_cpp

pytestmark = needs_cpp


@pytest.mark.parametrize("T", [1, 5, 70])
def test_cpp_output_takes_the_packed_layout_of_q(rng, T):
    """cpp: for q seen through a packed (B, T, 3C) projection, o comes back as a transposed
    C-contiguous (B, T, H, D) array (heads merge without a copy); other layouts, a single
    head or a single query keep the C-contiguous (B, H, T, D) o. Values equal either way."""
    C = load("cpp")  # skips where the extension is not built
    B, H, D = 2, 3, 8
    qkv = rng.standard_normal((B, T, 3 * H * D)).astype(np.float32)
    q, k, v = (qkv.reshape(B, T, 3, H, D)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    o, lse = C.attention_forward(q, k, v, None, True, 0.3)
    oc, lsec = C.attention_forward(*(np.ascontiguousarray(a) for a in (q, k, v)), None, True, 0.3)
    assert oc.flags.c_contiguous
    assert o.transpose(0, 2, 1, 3).flags.c_contiguous
    assert o.flags.c_contiguous == (T == 1)  # (one query: both layouts are the same)
    np.testing.assert_array_equal(o, oc)
    np.testing.assert_array_equal(lse, lsec)
    o1, _ = C.attention_forward(q[:, :1], k[:, :1], v[:, :1], None, True, 0.3)  # one head
    assert o1.flags.c_contiguous
    # the backward writes dq | dk | dv into one packed array when q, k, v are its thirds
    do = rng.standard_normal(o.shape).astype(np.float32)
    grads = C.attention_backward(q, k, v, o, lse, do, None, True, 0.3)
    want = C.attention_backward(*(np.ascontiguousarray(a) for a in (q, k, v, o)), lse, do,
                                None, True, 0.3)
    for g, w in zip(grads, want):
        np.testing.assert_array_equal(g, w)
    base = grads[0].base
    packed = T > 1
    assert (base is not None and all(g.base is base for g in grads)
            and base.shape == (B, T, 3, H, D)) == packed
    if packed:
        np.testing.assert_array_equal(
            base.reshape(B, T, 3 * H * D),
            np.concatenate([g.transpose(0, 2, 1, 3).reshape(B, T, H * D) for g in want], -1))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_short_query_tiles_give_the_same_bits(rng, causal, dtype):
    """cpp: up to 32 queries take narrower query tiles (attention.h kShortBQ); each query's
    arithmetic is unchanged, so the first 32 queries of a 33-query call (64-wide tiles) give
    exactly the outputs of those 32 queries alone."""
    C = load("cpp")
    B, H, Tk, D = 2, 3, 45, 24
    q = rng.standard_normal((B, H, 33, D)).astype(dtype)
    k, v = (rng.standard_normal((B, H, Tk, D)).astype(dtype) for _ in range(2))
    mask = np.where(rng.random((B, 1, 1, Tk)) < 0.3, -np.inf, 0.0).astype(dtype)
    mask[..., 0] = 0
    o33, l33 = C.attention_forward(q, k, v, mask, causal, 0.4)
    o32, l32 = C.attention_forward(q[:, :, :32], k, v, mask, causal, 0.4)
    np.testing.assert_array_equal(o32, o33[:, :, :32])
    np.testing.assert_array_equal(l32, l33[:, :, :32])
