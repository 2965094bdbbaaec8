"""torch.amp / torch.cuda.amp / torch.backends / torch.cuda seeding, as training scripts
use them: GradScaler (disabled: a pass-through; enabled: real dynamic loss scaling),
autocast's float32-only stub, and flags that are stored but change nothing."""
import contextlib
import warnings

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn

from _core_helpers import needs_torch, numpy_kernels, torch  # noqa: F401


def _model_and_opt(seed=0):
    tl.manual_seed(seed)
    m = nn.Linear(3, 1)
    return m, tl.optim.SGD(m.parameters(), lr=0.1)


def _loss(m):
    return (m(tl.ones(4, 3)) ** 2).mean()


# ---- GradScaler -----------------------------------------------------------------------------

def test_disabled_scaler_is_a_pass_through():
    m, opt = _model_and_opt()
    scaler = tl.cuda.amp.GradScaler(enabled=False)
    loss = _loss(m)
    assert scaler.scale(loss) is loss
    scaler.scale(loss).backward()
    g = m.weight.grad.clone()
    scaler.unscale_(opt)
    assert m.weight.grad.allclose(g)
    w = m.weight.detach().clone()
    scaler.step(opt)
    scaler.update()
    assert m.weight.allclose(w - 0.1 * g)
    assert scaler.state_dict() == {} and scaler.get_scale() == 1.0 and not scaler.is_enabled()
    scaler.load_state_dict({})


def test_enabled_scaler_scales_unscales_steps_and_grows():
    m, opt = _model_and_opt()
    ref, ref_opt = _model_and_opt()
    scaler = tl.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2)
    for step in range(3):
        opt.zero_grad()
        scaler.scale(_loss(m)).backward()
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(m.parameters(), 1e9)
        scaler.step(opt)
        scaler.update()
        ref_opt.zero_grad()
        _loss(ref).backward()
        ref_opt.step()
        assert m.weight.allclose(ref.weight, atol=1e-6)  # the same steps as unscaled training
    assert scaler.get_scale() == 16.0  # grew once, after 2 clean steps
    sd = scaler.state_dict()
    assert sd == {"scale": 16.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2,
                  "_growth_tracker": 1}
    other = tl.amp.GradScaler("cpu")
    other.load_state_dict(sd)
    assert other.get_scale() == 16.0
    with pytest.raises(RuntimeError, match="empty"):
        other.load_state_dict({})


def test_enabled_scaler_skips_a_step_with_inf_gradients_and_backs_off():
    m, opt = _model_and_opt()
    scaler = tl.amp.GradScaler("cpu", init_scale=4.0)
    w = m.weight.detach().clone()
    scaler.scale(_loss(m)).backward()
    m.weight.grad._data[0, 0] = np.inf
    assert scaler.step(opt) is None
    scaler.update()
    assert m.weight.allclose(w) and scaler.get_scale() == 2.0
    with pytest.raises(RuntimeError, match="no inf checks"):
        scaler.update()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(opt)


@needs_torch
def test_scale_sequence_matches_torch_cpu_scaler():
    ours = tl.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=3)
    theirs = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=3)
    m, opt = _model_and_opt()
    tm = torch.nn.Linear(3, 1)
    topt = torch.optim.SGD(tm.parameters(), lr=0.1)
    for step in range(8):
        bad = step in (2, 6)
        opt.zero_grad()
        ours.scale(_loss(m)).backward()
        topt.zero_grad()
        theirs.scale((tm(torch.ones(4, 3)) ** 2).mean()).backward()
        if bad:
            m.weight.grad._data[0, 0] = np.nan
            tm.weight.grad[0, 0] = float("nan")
        ours.step(opt)
        theirs.step(topt)
        ours.update()
        theirs.update()
        assert ours.get_scale() == theirs.get_scale(), step


def test_cuda_scaler_without_a_gpu_disables_itself_with_a_warning(monkeypatch):
    if tl.cuda.is_available():
        pytest.skip("a GPU is usable here")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        s = tl.cuda.amp.GradScaler(enabled=True)
    assert not s.is_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tl.cuda.amp.GradScaler(enabled=False)  # no warning when disabled on purpose


def test_scaler_argument_checks():
    with pytest.raises(ValueError, match="growth_factor"):
        tl.amp.GradScaler("cpu", growth_factor=1.0)
    with pytest.raises(ValueError, match="device"):
        tl.amp.GradScaler("mps")
    s = tl.amp.GradScaler("cpu")
    assert [t.tolist() for t in s.scale([tl.ones(1), tl.ones(1) * 2])] == [[65536.0], [131072.0]]


# ---- autocast -------------------------------------------------------------------------------

def test_autocast_accepts_only_what_changes_nothing():
    with tl.autocast("cpu", dtype=tl.float32):
        y = tl.ones(2) * 2
    assert y.dtype is tl.float32
    with tl.amp.autocast(device_type="cuda", dtype=tl.float16, enabled=False):
        pass
    with tl.cuda.amp.autocast(enabled=False):
        pass

    @tl.autocast("cpu", enabled=False)
    def f():
        return 1
    assert f() == 1
    with pytest.raises(ValueError, match="dtype must be float16, bfloat16 or float32"):
        tl.amp.autocast("cpu", dtype=tl.float64)
    with pytest.raises(ValueError, match="device"):
        tl.autocast("tpu", enabled=False)
    assert tl.is_autocast_enabled() is False


def test_nanogpt_context_choice_never_builds_autocast_on_the_cpu():
    device_type = "cpu"
    ctx = contextlib.nullcontext() if device_type == "cpu" else \
        tl.amp.autocast(device_type=device_type, dtype=tl.bfloat16)
    with ctx:
        pass


# ---- backends -------------------------------------------------------------------------------

def test_backends_flags_are_stored():
    b = tl.backends
    old = (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.enabled)
    try:
        b.cuda.matmul.allow_tf32 = True
        b.cudnn.allow_tf32 = True
        b.cudnn.benchmark = True
        b.cudnn.enabled = False
        b.cudnn.deterministic = True
        assert b.cuda.matmul.allow_tf32 and b.cudnn.benchmark and not b.cudnn.enabled
        with pytest.raises(AttributeError):
            b.cuda.matmul.allow_tf23 = True  # a typo is not silently stored
    finally:
        (b.cuda.matmul.allow_tf32, b.cudnn.allow_tf32, b.cudnn.benchmark, b.cudnn.enabled) = old
        b.cudnn.deterministic = False
    assert b.mps.is_available() is False and b.mps.is_built() is False
    assert b.cudnn.is_available() is False
    assert isinstance(b.cuda.is_built(), bool)
    b.cuda.enable_flash_sdp(False)
    assert not b.cuda.flash_sdp_enabled()
    b.cuda.enable_flash_sdp(True)
    assert "allow_tf32" in repr(b.cuda)


def test_float32_matmul_precision():
    assert tl.get_float32_matmul_precision() == "highest"
    tl.set_float32_matmul_precision("high")
    try:
        assert tl.get_float32_matmul_precision() == "high"
    finally:
        tl.set_float32_matmul_precision("highest")
    with pytest.raises(ValueError, match="precision"):
        tl.set_float32_matmul_precision("low")


# ---- torch.cuda -----------------------------------------------------------------------------

def test_cuda_seeding_seeds_the_one_generator():
    tl.cuda.manual_seed(7)
    a = tl.randn(4)
    tl.manual_seed(7)
    b = tl.randn(4)
    tl.cuda.manual_seed_all(7)
    c = tl.randn(4)
    assert a.tolist() == b.tolist() == c.tolist()
    assert tl.cuda.initial_seed() == 7
    assert tl.cuda.is_bf16_supported() is False
    assert isinstance(tl.cuda.is_available(), bool)


def test_is_available_only_with_a_usable_gpu():
    from tensorlite.backend.device import cuda_unavailable_reason
    reason = cuda_unavailable_reason()
    assert tl.cuda.is_available() is (reason is None)
    if reason is not None:
        assert tl.cuda.device_count() == 0
