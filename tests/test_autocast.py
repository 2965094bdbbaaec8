"""autocast: matmuls and Linears in bfloat16/float16 with float32 accumulation, float32
master weights with float32 gradients, everything else as PyTorch's autocast leaves it."""
import numpy as np
import pytest

import tensorlite as tl
from tensorlite.models import GPT, GPTConfig

LOW = [pytest.param(tl.float16, id="float16")]
try:
    import ml_dtypes  # noqa: F401
    LOW.append(pytest.param(tl.bfloat16, id="bfloat16"))
except ImportError:
    LOW.append(pytest.param(None, id="bfloat16", marks=pytest.mark.skip(reason="needs ml_dtypes")))
EPS = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


@pytest.mark.parametrize("low", LOW)
def test_linear_runs_in_the_low_dtype_and_weights_get_float32_grads(low):
    tl.manual_seed(0)
    lin = tl.nn.Linear(32, 16)
    x = tl.randn(4, 32)
    with tl.autocast("cpu", dtype=low):
        assert tl.is_autocast_enabled("cpu") and tl.is_autocast_enabled()
        y = lin(x)
    assert not tl.is_autocast_enabled()
    assert y.dtype is low
    y.float().sum().backward()
    assert lin.weight.grad.dtype is tl.float32 and lin.bias.grad.dtype is tl.float32
    # the same numbers as float32 products of the rounded operands, rounded once
    w = lin.weight.detach().to(low).float().numpy()
    xr = x.to(low).float().numpy()
    b = lin.bias.detach().to(low).float().numpy()
    want = xr @ w.T + b
    got = y.detach().float().numpy()
    assert np.abs(got - want).max() <= 2 * EPS[low.name] * np.abs(want).max()
    # gradients: those of the float32 computation within a few low-precision steps
    lin.zero_grad()
    lin(x).sum().backward()
    g32 = lin.weight.grad.numpy()
    assert np.abs(g32).max() > 0


def test_autocast_off_changes_nothing_and_nests():
    a, b = tl.randn(3, 4), tl.randn(4, 5)
    with tl.autocast("cpu", dtype=tl.bfloat16 if LOW[1].values[0] else tl.float16):
        with tl.autocast("cpu", enabled=False):
            assert (a @ b).dtype is tl.float32
        assert tl.is_autocast_enabled("cpu")
    assert (a @ b).dtype is tl.float32
    with tl.autocast("cuda", dtype=tl.float16):  # another device's setting: CPU tensors unmoved
        assert (a @ b).dtype is tl.float32


@pytest.mark.parametrize("low", LOW)
def test_a_gpt_trains_under_autocast_close_to_float32(low):
    def run(autocast):
        tl.manual_seed(0)
        m = GPT(GPTConfig(vocab_size=23, block_size=16, n_layer=2, n_head=2, n_embd=32))
        opt = tl.optim.AdamW(m.parameters(), lr=3e-3)
        rng = np.random.default_rng(0)
        losses = []
        for _ in range(15):
            x = tl.tensor(rng.integers(0, 23, (8, 16)))
            if autocast:
                with tl.autocast("cpu", dtype=low):
                    _, loss = m(x, x)
            else:
                _, loss = m(x, x)
            opt.zero_grad()
            loss.float().backward()
            assert all(p.grad.dtype is tl.float32 for p in m.parameters())
            opt.step()
            losses.append(loss.float().item())
        return np.array(losses)
    full, mixed = run(False), run(True)
    assert mixed[-1] < mixed[0] - 0.5  # it learns (copying its input)
    assert np.abs(mixed - full).max() < 30 * EPS[low.name] * 8


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_float16_autocast_with_grad_scaler_steps():
    # the first steps overflow float16 at the initial scale 2**16 and are skipped; the scaler
    # halves the scale until the gradients fit, then the weights move
    tl.manual_seed(0)
    lin = tl.nn.Linear(8, 1)
    opt = tl.optim.SGD(lin.parameters(), lr=0.1)
    scaler = tl.amp.GradScaler("cpu")
    x, t = tl.randn(16, 8), tl.randn(16, 1)
    before = lin.weight.detach().numpy().copy()
    for _ in range(20):
        with tl.autocast("cpu", dtype=tl.float16):
            loss = ((lin(x).float() - t) ** 2).mean()
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if not np.array_equal(before, lin.weight.detach().numpy()):
            break
    assert not np.array_equal(before, lin.weight.detach().numpy())
    assert scaler.get_scale() < 2.0 ** 16
    assert np.isfinite(lin.weight.detach().numpy()).all()
