"""nn and optim pieces a PyTorch port needs: RMSNorm / F.rms_norm, F.normalize, the cosine
and other schedulers, AdamW's fused= keyword, and load_state_dict of a state dict whose
tied weight was de-duplicated (safetensors' save_model drops one of the two names)."""
import inspect
import logging
import math

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.autograd import gradcheck
from tensorlite.nn import functional as F
from tensorlite.optim import lr_scheduler

from _core_helpers import close, leaf, needs_torch, numpy_kernels, rand, torch  # noqa: F401


# ---- RMSNorm --------------------------------------------------------------------------------

def _rms_ref(a, w, eps, nd=1):
    axes = tuple(range(a.ndim - nd, a.ndim))
    return a / np.sqrt((a * a).mean(axis=axes, keepdims=True) + eps) * w


def test_rms_norm_forward_and_gradient():
    a, w = rand((2, 3, 4), seed=1), rand((4,), seed=2)
    close(F.rms_norm(tl.tensor(a), (4,), tl.tensor(w), eps=1e-6), _rms_ref(a, w, 1e-6), rtol=1e-10)
    close(F.rms_norm(tl.tensor(a), (3, 4)), _rms_ref(a, 1.0, np.finfo(np.float64).eps, nd=2),
          rtol=1e-10)
    assert gradcheck(lambda x, g: F.rms_norm(x, 4, g, 1e-5), [leaf(a), leaf(w)])
    with pytest.raises(ValueError, match="normalized_shape"):
        F.rms_norm(tl.ones(2, 3), (4,))
    with pytest.raises(ValueError, match="weight has shape"):
        F.rms_norm(tl.ones(2, 3), (3,), tl.ones(2))


def test_rms_norm_module():
    m = nn.RMSNorm(4)
    assert [n for n, _ in m.named_parameters()] == ["weight"] and m.weight.tolist() == [1.0] * 4
    assert nn.RMSNorm([2, 4], elementwise_affine=False).weight is None
    x = tl.randn(3, 4)
    close(m(x), _rms_ref(np.asarray(x), 1.0, np.finfo(np.float32).eps), rtol=1e-5)
    assert "eps=None" in repr(m)


@needs_torch
def test_rms_norm_matches_torch():
    a, w = rand((3, 5), seed=3), rand((5,), seed=4)
    ref = torch.nn.functional.rms_norm(torch.tensor(a), (5,), torch.tensor(w)).numpy()
    close(F.rms_norm(tl.tensor(a), (5,), tl.tensor(w)), ref, rtol=1e-10)
    ref32 = torch.nn.RMSNorm(5)(torch.tensor(a, dtype=torch.float32)).detach().numpy()
    close(nn.RMSNorm(5)(tl.tensor(a, dtype=tl.float32)), ref32, rtol=1e-5)


# ---- normalize ------------------------------------------------------------------------------

def test_normalize_forward_gradient_and_zero_rows():
    a = rand((3, 4), seed=5)
    close(F.normalize(tl.tensor(a)), a / np.linalg.norm(a, axis=1, keepdims=True), rtol=1e-10)
    close(F.normalize(tl.tensor(a), p=1, dim=0), a / np.abs(a).sum(0, keepdims=True), rtol=1e-10)
    z = F.normalize(tl.zeros(2, 3))
    assert z.tolist() == [[0.0] * 3] * 2  # eps keeps zero rows at zero, not NaN
    assert gradcheck(lambda x: F.normalize(x, dim=-1), [leaf(a)])


@needs_torch
def test_normalize_matches_torch():
    a = rand((2, 3, 4), seed=6)
    close(F.normalize(tl.tensor(a), dim=2), torch.nn.functional.normalize(torch.tensor(a), dim=2).numpy())


# ---- schedulers -----------------------------------------------------------------------------

def _opt(lrs=(1.0, 0.1)):
    ps = [nn.Parameter(tl.zeros(1)) for _ in lrs]
    return tl.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)], lr=lrs[0])


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr())
        sched.optimizer.step()
        sched.step()
    return np.array(out)


def test_cosine_annealing_closed_form():
    lrs = _lrs(lr_scheduler.CosineAnnealingLR(_opt(), T_max=4, eta_min=0.01), 9)
    ref = [[0.01 + (b - 0.01) * (1 + math.cos(math.pi * t / 4)) / 2 for b in (1.0, 0.1)] for t in range(9)]
    np.testing.assert_allclose(lrs, ref)
    assert lrs[4].tolist() == pytest.approx([0.01, 0.01])
    with pytest.raises(ValueError, match="T_max"):
        lr_scheduler.CosineAnnealingLR(_opt(), T_max=0)


SCHEDULES = [
    ("CosineAnnealingLR", dict(T_max=5, eta_min=0.001)),
    ("CosineAnnealingWarmRestarts", dict(T_0=3, T_mult=2, eta_min=0.01)),
    ("CosineAnnealingWarmRestarts", dict(T_0=4)),
    ("LinearLR", dict(start_factor=0.25, total_iters=4)),
    ("ExponentialLR", dict(gamma=0.9)),
    ("MultiStepLR", dict(milestones=[2, 5], gamma=0.5)),
    ("StepLR", dict(step_size=3, gamma=0.5)),
]


@needs_torch
@pytest.mark.parametrize("name, kw", SCHEDULES)
def test_schedules_match_torch(name, kw):
    ours = _lrs(getattr(lr_scheduler, name)(_opt(), **kw), 16)
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in range(2)]
    topt = torch.optim.SGD([{"params": [ps[0]], "lr": 1.0}, {"params": [ps[1]], "lr": 0.1}])
    ts = getattr(torch.optim.lr_scheduler, name)(topt, **kw)
    theirs = []
    for _ in range(16):
        theirs.append(ts.get_last_lr())
        topt.step()
        ts.step()
    np.testing.assert_allclose(ours, np.array(theirs), rtol=1e-9, atol=1e-12)


def test_scheduler_state_round_trip():
    s = lr_scheduler.CosineAnnealingLR(_opt(), T_max=10)
    for _ in range(3):
        s.step()
    s2 = lr_scheduler.CosineAnnealingLR(_opt(), T_max=10)
    s2.load_state_dict(s.state_dict())
    assert s2.get_last_lr() == s.get_last_lr()


# ---- AdamW(fused=...) -----------------------------------------------------------------------

def test_adamw_accepts_fused_and_foreach():
    assert "fused" in inspect.signature(tl.optim.AdamW).parameters
    p = nn.Parameter(tl.ones(2))
    opt = tl.optim.AdamW([p], lr=0.1, betas=(0.9, 0.95), fused=True, foreach=False)
    p.grad = tl.ones(2)
    opt.step()
    assert p.tolist()[0] < 1.0


# ---- load_state_dict with tied weights ------------------------------------------------------

class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(5, 3)
        self.lm_head = nn.Linear(3, 5, bias=False)
        self.wte.weight = self.lm_head.weight  # tied by assignment, as nanoGPT does


def test_load_state_dict_accepts_a_dropped_tied_key_and_reports_it(caplog):
    src, dst = Tied(), Tied()
    sd = src.state_dict()
    assert set(sd) == {"wte.weight", "lm_head.weight"}
    del sd["lm_head.weight"]  # what safetensors.torch.save_model writes
    with caplog.at_level(logging.INFO, logger="tensorlite.nn"):
        res = dst.load_state_dict(sd)
    # absent from the dict, so listed as missing (PyTorch's meaning), but loaded through its tie
    assert res.missing_keys == ["lm_head.weight"] and res.unexpected_keys == []
    assert res.tied_keys == {"lm_head.weight": "wte.weight"}
    assert "lm_head.weight loaded through its tied wte.weight" in caplog.text
    assert dst.lm_head.weight.allclose(src.lm_head.weight)
    assert dst.lm_head.weight is dst.wte.weight  # still tied
    missing, unexpected = dst.load_state_dict(src.state_dict())  # both keys: still fine
    assert missing == [] and unexpected == []


def test_load_state_dict_still_reports_a_missing_key_that_is_not_tied():
    m = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    sd = m.state_dict()
    del sd["1.bias"]
    with pytest.raises(RuntimeError, match=r"missing keys: 1\.bias"):
        m.load_state_dict(sd)
    res = m.load_state_dict(sd, strict=False)
    assert res.missing_keys == ["1.bias"] and res.tied_keys == {}


@needs_torch
def test_safetensors_save_model_file_loads_into_a_tied_model(tmp_path):
    st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")

    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(5, 3)
            self.lm_head = torch.nn.Linear(3, 5, bias=False)
            self.wte.weight = self.lm_head.weight

    tm = TorchTied()
    path = str(tmp_path / "model.safetensors")
    st.save_model(tm, path)
    flat = st.load_file(path)
    assert len(flat) == 1  # one of the two names was dropped
    ours = Tied()
    res = ours.load_state_dict({k: tl.tensor(v.numpy()) for k, v in flat.items()})
    assert len(res.missing_keys) == 1 and res.tied_keys == {res.missing_keys[0]: next(iter(flat))}
    np.testing.assert_allclose(np.asarray(ours.lm_head.weight.detach()), tm.lm_head.weight.detach().numpy())
