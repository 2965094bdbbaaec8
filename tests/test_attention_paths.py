"""MultiHeadAttention's two paths -- the readable split-into-heads one and the packed
fast path that training takes -- compute the same outputs and the same gradients."""
import numpy as np
import pytest

import tensorlite as tl
from tensorlite.nn.attention import MultiHeadAttention

from _nn_helpers import kernels, require_provider


def _run(packed, causal, provider, seed=0, padded=False):
    tl.manual_seed(seed)
    attn = MultiHeadAttention(24, 4, causal=causal).to(dtype=tl.float64)
    attn.packed = packed
    x = tl.tensor(np.random.default_rng(1).standard_normal((2, 7, 24)), requires_grad=True)
    # a padded batch: the second sequence's last 3 keys are padding
    mask = tl.tensor(np.array([[1] * 7, [1] * 4 + [0] * 3]), dtype="bool") if padded else None
    with kernels(provider):
        y = attn(x, mask)
        (y * y).sum().backward()
    grads = {n: p.grad.numpy().copy() for n, p in attn.named_parameters()}
    return y.detach().numpy(), x.grad.numpy(), grads, attn


@pytest.mark.parametrize("provider", ["numpy", "cpp", "triton"])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("padded", [False, True], ids=["no-mask", "padding-mask"])
def test_packed_path_equals_plain_path(provider, causal, padded):
    require_provider(provider)
    y0, dx0, g0, _ = _run(False, causal, provider, padded=padded)
    y1, dx1, g1, _ = _run(True, causal, provider, padded=padded)
    np.testing.assert_allclose(y1, y0, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-10, atol=1e-12)
    assert g0.keys() == g1.keys()
    for n in g0:
        np.testing.assert_allclose(g1[n], g0[n], rtol=1e-10, atol=1e-12, err_msg=n)


def test_the_paths_really_differ_in_the_graph():
    # if both flags ran the same code the test above could not fail
    tl.manual_seed(0)
    attn = MultiHeadAttention(8, 2)
    x = tl.randn(1, 3, 8)
    names = []
    for packed in (False, True):
        attn.packed = packed
        with tl.profiler.profile() as prof:
            attn(x)
        names.append({e.name for e in prof.events})
    assert "FusedPackedSelfAttention" not in names[0] and "FusedAttention" in names[0]
    assert "FusedPackedSelfAttention" in names[1] and "FusedAttention" not in names[1]


def test_packed_path_refuses_a_mask_of_the_wrong_shape():
    attn = MultiHeadAttention(8, 2, causal=False)
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(B, Tk\) = \(1, 3\)"):
        attn(tl.randn(1, 3, 8), tl.ones(1, 4, dtype="bool"))


def test_packed_padding_mask_is_remade_when_the_mask_changes():
    """The packed path reuses the kernel mask it made for the same attention_mask object
    (the encoder's layers share one); another mask, or the same one changed in place, is
    made anew."""
    tl.manual_seed(0)
    attn = MultiHeadAttention(24, 4, causal=False).to(dtype=tl.float64)
    x = tl.tensor(np.random.default_rng(1).standard_normal((2, 7, 24)))
    m1 = tl.tensor(np.array([[1] * 7, [1] * 4 + [0] * 3]), dtype="bool")
    m2 = tl.tensor(np.array([[1] * 5 + [0] * 2, [1] * 7]), dtype="bool")

    def both(mask):
        attn.packed = True
        fast = attn(x, mask).numpy()
        attn.packed = False
        return fast, attn(x, mask).numpy()

    with tl.no_grad():
        for mask in (m1, m1, m2, m1):
            fast, plain = both(mask)
            np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=1e-12)
        m1[1, 4] = True  # in place: the cached kernel mask of m1 is stale now
        fast, plain = both(m1)
        np.testing.assert_allclose(fast, plain, rtol=1e-10, atol=1e-12)
