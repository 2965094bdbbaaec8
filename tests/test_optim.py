"""tensorlite.optim: each optimizer against its textbook formula in NumPy over several steps,
exact resumption from state dicts, learning-rate schedules and gradient clipping."""
import copy
import math
import pickle

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn, optim
from tensorlite.optim import lr_scheduler

from _nn_helpers import kernels, np_, numpy_kernels, require_provider  # noqa: F401

STEPS = 5


def _params(rng, shapes, dtype=np.float64):
    return [nn.Parameter(tl.tensor(rng.standard_normal(s).astype(dtype))) for s in shapes]


def _run(opt, params, grads_per_step):
    """Feed fixed gradients (one list per step; None = no gradient that step)."""
    for grads in grads_per_step:
        for p, g in zip(params, grads):
            p.grad = None if g is None else tl.tensor(g)
        opt.step()
    return [np_(p) for p in params]


def _grads(rng, shapes, steps=STEPS):
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


# ---- SGD ------------------------------------------------------------------------------------
def sgd_textbook(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p = p.copy()
    buf = None
    for g in grads:
        g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


@pytest.mark.parametrize("kw", [
    dict(),
    dict(momentum=0.9),
    dict(momentum=0.9, dampening=0.3),
    dict(momentum=0.8, nesterov=True),
    dict(momentum=0.9, weight_decay=0.1),
    dict(momentum=0.9, nesterov=True, weight_decay=0.05),
    dict(weight_decay=0.2),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "plain")
def test_sgd_matches_textbook(rng, kw):
    shapes = [(3, 4), (4,)]
    ps = _params(rng, shapes)
    p0 = [np_(p) for p in ps]
    gs = _grads(rng, shapes)
    got = _run(optim.SGD(ps, lr=0.1, **kw), ps, gs)
    for i in range(len(ps)):
        expect = sgd_textbook(p0[i], [g[i] for g in gs], 0.1, **kw)
        np.testing.assert_allclose(got[i], expect, rtol=1e-12, atol=1e-14)


def test_sgd_rejects_bad_nesterov():
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD([nn.Parameter(tl.zeros(2))], lr=0.1, nesterov=True)


# ---- Adam and AdamW ----------------------------------------------------------------------
def adam_textbook(p, grads, lr, b1, b2, eps, weight_decay, decoupled, steps=None):
    """steps: the 1-based step count used at each update (defaults to 1, 2, ...)."""
    p = p.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    t = 0
    for g in grads:
        if g is None:
            continue
        t += 1
        if decoupled:
            p = p - lr * weight_decay * p
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat = m / (1 - b1 ** t)
        vhat = v / (1 - b2 ** t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_textbook(rng, wd):
    shapes = [(5, 3), (3,)]
    ps = _params(rng, shapes)
    p0 = [np_(p) for p in ps]
    gs = _grads(rng, shapes)
    got = _run(optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=wd), ps, gs)
    for i in range(len(ps)):
        expect = adam_textbook(p0[i], [g[i] for g in gs], 0.01, 0.8, 0.95, 1e-6, wd, decoupled=False)
        np.testing.assert_allclose(got[i], expect, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("provider", ["numpy", "cpp", "triton"])
def test_adamw_param_groups_match_textbook(rng, provider):
    require_provider(provider)
    shapes = [(4, 6), (6,), (6,), (2, 3)]
    ps = _params(rng, shapes)
    p0 = [np_(p) for p in ps]
    gs = _grads(rng, shapes)
    # the third parameter misses a gradient at step 2: its step count falls behind the others
    gs[1][2] = None
    groups = [
        {"params": [ps[0], ps[3]], "weight_decay": 0.1},              # decayed (matrices)
        {"params": [ps[1], ps[2]], "weight_decay": 0.0, "lr": 0.02},  # not decayed (biases, norms)
    ]
    opt = optim.AdamW(groups, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[1]["lr"] == 0.02
    with kernels(provider):
        got = _run(opt, ps, gs)
    setting = {0: (0.01, 0.1), 3: (0.01, 0.1), 1: (0.02, 0.0), 2: (0.02, 0.0)}
    for i, (lr, wd) in setting.items():
        expect = adam_textbook(p0[i], [g[i] for g in gs], lr, 0.9, 0.99, 1e-8, wd, decoupled=True)
        np.testing.assert_allclose(got[i], expect, rtol=1e-12, atol=1e-14, err_msg=f"param {i}")
    assert opt.state[id(ps[2])]["step"] == STEPS - 1 and opt.state[id(ps[0])]["step"] == STEPS


@pytest.mark.parametrize("provider", ["numpy", "cpp", "triton"])
def test_adamw_float32(rng, provider):
    require_provider(provider)
    ps = _params(rng, [(64,)], dtype=np.float32)
    p0 = np_(ps[0]).astype(np.float64)
    gs = _grads(rng, [(64,)])
    gs = [[g[0].astype(np.float32)] for g in gs]
    with kernels(provider):
        got = _run(optim.AdamW(ps, lr=0.01, weight_decay=0.1), ps, gs)[0]
    assert got.dtype == np.float32
    expect = adam_textbook(p0, [g[0].astype(np.float64) for g in gs], 0.01, 0.9, 0.999, 1e-8, 0.1, True)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_params_without_grad_are_skipped(rng):
    ps = _params(rng, [(3,), (3,)])
    before = np_(ps[1])
    for opt in (optim.SGD(ps, lr=0.1, momentum=0.9), optim.Adam(ps), optim.AdamW(ps)):
        ps[0].grad = tl.tensor(np.ones(3))
        ps[1].grad = None
        opt.step()
        np.testing.assert_array_equal(np_(ps[1]), before)
        assert id(ps[1]) not in opt.state


def test_optimizer_construction_errors():
    p = nn.Parameter(tl.zeros(2))
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    frozen = nn.Parameter(tl.zeros(2), requires_grad=False)
    with pytest.raises(ValueError, match="require grad"):
        optim.AdamW([frozen])


def test_optimizer_zero_grad_and_repr():
    lin = nn.Linear(2, 2)
    opt = optim.AdamW(lin.parameters(), lr=0.1)
    lin(tl.randn(3, 2)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert not np_(lin.weight.grad).any()
    opt.zero_grad()
    assert lin.weight.grad is None
    r = repr(opt)
    assert r.startswith("AdamW (") and "lr: 0.1" in r and "weight_decay: 0.01" in r


# ---- resuming from state dicts ------------------------------------------------------------------
def _make_model(seed):
    tl.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))


def _make_opt(kind, model):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    if kind == "sgd":
        return optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)
    if kind == "adam":
        return optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    return optim.AdamW([{"params": decay, "weight_decay": 0.1},
                        {"params": no_decay, "weight_decay": 0.0}], lr=0.01)


def _train(model, opt, sched, steps, start):
    for s in range(start, start + steps):
        rng = np.random.default_rng(s)  # the batch depends only on the step number
        x = tl.tensor(rng.standard_normal((16, 4)), dtype=tl.float32)
        y = tl.tensor(rng.standard_normal((16, 3)), dtype=tl.float32)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_state_dict_resume_is_bitwise_exact(kind):
    model = _make_model(0)
    opt = _make_opt(kind, model)
    sched = lr_scheduler.WarmupCosineLR(opt, warmup_steps=2, max_steps=6)
    _train(model, opt, sched, 6, 0)
    uninterrupted = [np_(p) for p in model.parameters()]

    model = _make_model(0)
    opt = _make_opt(kind, model)
    sched = lr_scheduler.WarmupCosineLR(opt, warmup_steps=2, max_steps=6)
    _train(model, opt, sched, 3, 0)
    # a checkpoint survives pickling and later changes to the live objects
    ckpt = pickle.loads(pickle.dumps({"model": {k: np_(v) for k, v in model.state_dict().items()},
                                      "opt": opt.state_dict(), "sched": sched.state_dict()}))
    _train(model, opt, sched, 1, 3)  # the old run goes on; the checkpoint must not change

    model2 = _make_model(1)  # different initial weights: all must come from the checkpoint
    model2.load_state_dict(ckpt["model"])
    opt2 = _make_opt(kind, model2)
    sched2 = lr_scheduler.WarmupCosineLR(opt2, warmup_steps=2, max_steps=6)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    _train(model2, opt2, sched2, 3, 3)
    for a, b in zip(uninterrupted, model2.parameters()):
        np.testing.assert_array_equal(a, np_(b))


def test_optimizer_state_dict_layout_and_errors():
    model = _make_model(0)
    opt = _make_opt("adamw", model)
    _train(model, opt, lr_scheduler.ConstantLR(opt), 1, 0)
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0, 1], [2, 3]]
    assert sorted(sd["state"]) == [0, 1, 2, 3]
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq"} and sd["state"][0]["step"] == 1
    assert isinstance(sd["state"][0]["exp_avg"], np.ndarray)
    other = optim.AdamW(model.parameters())
    with pytest.raises(ValueError, match="groups"):
        other.load_state_dict(sd)
    bad = copy.deepcopy(sd)
    bad["state"][0]["exp_avg"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="shape"):
        _make_opt("adamw", model).load_state_dict(bad)
    # hyperparameters come back with the state
    sd["param_groups"][1]["lr"] = 0.5
    opt3 = _make_opt("adamw", model)
    opt3.load_state_dict(sd)
    assert opt3.param_groups[1]["lr"] == 0.5


# ---- learning-rate schedules ----------------------------------------------------------------
def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr())
        sched.step()
    return np.array(out)


def _opt_two_groups():
    a, b = nn.Parameter(tl.zeros(1)), nn.Parameter(tl.zeros(1))
    return optim.AdamW([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}])


def test_warmup_cosine_to_floor():
    opt = _opt_two_groups()
    warmup, max_steps, floor = 10, 100, 0.1
    lrs = _lrs(lr_scheduler.WarmupCosineLR(opt, warmup, max_steps, min_lr_ratio=floor), 130)
    np.testing.assert_allclose(lrs[:, 1], 0.1 * lrs[:, 0], rtol=1e-12)  # groups keep their ratio
    lr = lrs[:, 0]
    # warmup: linear up from a small positive value
    np.testing.assert_allclose(lr[:warmup], (np.arange(warmup) + 1) / (warmup + 1), rtol=1e-12)
    assert lr[0] > 0 and np.all(np.diff(lr[:warmup + 1]) > 0)
    assert lr[warmup] == pytest.approx(1.0)
    # then cosine down to the floor, reached at max_steps and kept after
    s = np.arange(warmup, max_steps + 1)
    cos = floor + 0.5 * (1 + np.cos(np.pi * (s - warmup) / (max_steps - warmup))) * (1 - floor)
    np.testing.assert_allclose(lr[warmup:max_steps + 1], cos, rtol=1e-12)
    assert lr[(warmup + max_steps) // 2] == pytest.approx(floor + 0.5 * (1 - floor))
    assert np.all(np.diff(lr[warmup:max_steps + 1]) < 0)
    np.testing.assert_allclose(lr[max_steps:], floor, rtol=1e-12)


def test_step_constant_and_lambda_schedules():
    opt = _opt_two_groups()
    lrs = _lrs(lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), 9)
    np.testing.assert_allclose(lrs[:, 0], [1, 1, 1, .5, .5, .5, .25, .25, .25])
    np.testing.assert_allclose(lrs[:, 1], 0.1 * lrs[:, 0])
    opt = _opt_two_groups()
    np.testing.assert_allclose(_lrs(lr_scheduler.ConstantLR(opt), 5), [[1.0, 0.1]] * 5)
    opt = _opt_two_groups()
    lrs = _lrs(lr_scheduler.LambdaLR(opt, lambda s: 1 / (s + 1)), 4)
    np.testing.assert_allclose(lrs[:, 0], [1, 1 / 2, 1 / 3, 1 / 4])


def test_scheduler_drives_the_optimizer_and_resumes():
    p = nn.Parameter(tl.zeros(1, dtype=tl.float64))
    opt = optim.SGD([p], lr=2.0)
    sched = lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    for _ in range(3):
        p.grad = tl.tensor([1.0], dtype=tl.float64)
        opt.step()
        sched.step()
    assert np_(p)[0] == pytest.approx(-(2.0 + 2.0 + 0.2))
    state = sched.state_dict()
    # a fresh optimizer (at its base lr) and scheduler pick up where this one was
    opt2 = optim.SGD([nn.Parameter(tl.zeros(1))], lr=2.0)
    sched2 = lr_scheduler.StepLR(opt2, step_size=2, gamma=0.1)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == sched.last_epoch
    assert sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    assert _lrs(sched2, 4)[:, 0] == pytest.approx(_lrs(sched, 4)[:, 0])


def test_warmup_cosine_without_warmup():
    opt = _opt_two_groups()
    lr = _lrs(lr_scheduler.WarmupCosineLR(opt, 0, 10, min_lr_ratio=0.0), 12)[:, 0]
    assert lr[0] == pytest.approx(1.0) and lr[10] == pytest.approx(0.0, abs=1e-12)
    assert lr[5] == pytest.approx(0.5)


# ---- clipping inside a training step ----------------------------------------------------------
def test_clip_grad_norm_in_a_step():
    tl.manual_seed(0)
    lin = nn.Linear(3, 2).double()
    (lin(tl.randn(8, 3, dtype=tl.float64)) * 100).sum().backward()
    grads = [np_(p.grad) for p in lin.parameters()]
    norm = math.sqrt(sum((g ** 2).sum() for g in grads))
    assert optim.clip_grad_norm_(lin.parameters(), 0.5) == pytest.approx(norm, rel=1e-12)
    for p, g in zip(lin.parameters(), grads):
        np.testing.assert_allclose(np_(p.grad), g * 0.5 / (norm + 1e-6), rtol=1e-12)
