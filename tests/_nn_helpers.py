"""Shared pieces of the nn / optim / GPT tests: provider selection (with skip reasons
for providers that are not built yet) and small NumPy re-implementations of the layers,
written from the formulas, that the modules are compared with."""
import contextlib
import importlib
import math

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.reference.layer_norm import layer_norm_forward

# the functions every provider must expose (backend/registry.py)
from tensorlite.backend.registry import FUSED_OPS as PROVIDER_FUNCTIONS


def provider_skip_reason(name):
    """None if provider `name` can run fused ops on the CPU now, else why not."""
    if name == "numpy":
        return None
    if name == "cpp":
        try:
            importlib.import_module("tensorlite._C")
        except ImportError as e:
            return f"tensorlite._C is not built ({e})"
        modname = "tensorlite._C"
    elif name == "triton":
        try:
            importlib.import_module("triton")
        except ImportError as e:
            return f"triton is not installed ({e})"
        modname = "tensorlite.kernels.provider"
    else:
        raise ValueError(name)
    try:
        mod = importlib.import_module(modname)
    except Exception as e:  # a provider being written may fail in many ways
        return f"{modname} is not importable yet ({type(e).__name__}: {e})"
    missing = [f for f in PROVIDER_FUNCTIONS if not callable(getattr(mod, f, None))]
    if missing:
        return f"{modname} is incomplete: missing {', '.join(missing)}"
    return None


def require_provider(name):
    reason = provider_skip_reason(name)
    if reason is not None:
        pytest.skip(f"provider {name!r} unavailable: {reason}")


@contextlib.contextmanager
def kernels(name):
    """Run the block with fused ops forced to provider `name`."""
    old = tl.get_kernels()
    tl.set_kernels(name)
    try:
        yield
    finally:
        tl.set_kernels(old)


@pytest.fixture(autouse=True)
def numpy_kernels():
    """Every test runs on the NumPy reference unless it asks for another provider."""
    with kernels("numpy"):
        yield


def np_(t):
    """A NumPy copy of a tensor (any device, grad or not) or array."""
    return np.array(np.asarray(t))


def t64(a, requires_grad=False):
    return tl.tensor(np.asarray(a, dtype=np.float64), dtype=tl.float64, requires_grad=requires_grad)


# ---- the layers, from their formulas, in NumPy float64 ---------------------------------------
def np_linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def np_layer_norm(x, w=None, b=None, eps=1e-5):
    """The reference layer norm's output alone (the one NumPy layer norm)."""
    return layer_norm_forward(x, w, b, eps)[0]


def np_gelu(x, approximate="none"):
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def np_softmax(s):
    s = s - s.max(-1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(-1, keepdims=True)


def np_attention(x, w_attn, b_attn, w_proj, b_proj, n_head, causal, key_mask=None):
    """Multi-head self-attention with explicit loops over batch and head.
    key_mask: (B, T) bool, True where a key is a real token."""
    B, T, C = x.shape
    hs = C // n_head
    qkv = np_linear(x, w_attn, b_attn)
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    y = np.zeros((B, T, C))
    for b in range(B):
        for h in range(n_head):
            sl = slice(h * hs, (h + 1) * hs)
            s = q[b, :, sl] @ k[b, :, sl].T / math.sqrt(hs)
            allowed = np.ones((T, T), dtype=bool)
            if causal:
                allowed &= np.tril(np.ones((T, T), dtype=bool))
            if key_mask is not None:
                allowed &= key_mask[b][None, :]
            s = np.where(allowed, s, -np.inf)
            y[b, :, sl] = np_softmax(s) @ v[b, :, sl]
    return np_linear(y, w_proj, b_proj)


def params_np(module):
    return {k: np_(v).astype(np.float64) for k, v in module.state_dict().items()}


def np_block(x, P, n_head, causal=True, prenorm=True, key_mask=None, approximate="tanh", prefix=""):
    """The transformer Block, from the formulas, with parameters read from a state dict."""
    g = lambda n: P.get(prefix + n)  # noqa: E731 - absent biases read as None

    def attn(z):
        return np_attention(z, g("attn.c_attn.weight"), g("attn.c_attn.bias"), g("attn.c_proj.weight"),
                            g("attn.c_proj.bias"), n_head, causal, key_mask)

    def mlp(z):
        h = np_gelu(np_linear(z, g("mlp.c_fc.weight"), g("mlp.c_fc.bias")), approximate)
        return np_linear(h, g("mlp.c_proj.weight"), g("mlp.c_proj.bias"))

    ln1 = lambda z: np_layer_norm(z, g("ln_1.weight"), g("ln_1.bias"))  # noqa: E731
    ln2 = lambda z: np_layer_norm(z, g("ln_2.weight"), g("ln_2.bias"))  # noqa: E731
    if prenorm:
        x = x + attn(ln1(x))
        return x + mlp(ln2(x))
    x = ln1(x + attn(x))
    return ln2(x + mlp(x))
