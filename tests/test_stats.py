"""Training statistics (--log-stats) and `tensorlite plot`."""
import json
import math
import os

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.cli import main
from tensorlite.models.gpt import GPT, GPTConfig
from tensorlite.optim import SGD
from tensorlite.stats import TrainingStats, layer_groups

from _study_helpers import run, synthetic_text, tiny_config


def test_layer_groups_of_a_gpt():
    model = GPT(GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=8))
    groups = layer_groups(model)
    assert list(groups) == ["transformer.wte", "transformer.wpe", "transformer.h.0",
                            "transformer.h.1", "transformer.ln_f"]
    assert sum(len(v) for v in groups.values()) == len(list(model.parameters()))
    assert all(n.startswith("transformer.h.1.") for n, _ in groups["transformer.h.1"])
    assert list(layer_groups(nn.Linear(2, 2))) == ["(root)"]


def test_statistics_match_a_hand_computation():
    tl.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    opt = SGD(net.parameters(), lr=0.1)
    stats = TrainingStats(net, every=2)
    x = tl.randn(5, 3, dtype=tl.float64)
    assert stats.begin(1) is False and stats.begin(2) is True
    out = net(x)
    h = np.asarray(net[0](x).detach())
    out.sum().backward()
    stats.grads()
    w_before = [np.asarray(p.detach()).copy() for p in net[2].parameters()]
    g = [np.asarray(p.grad) for p in net[2].parameters()]
    stats.snapshot()
    opt.step()
    rec = stats.end()
    assert list(rec) == ["0", "2"]  # Tanh has no parameters: it is no layer
    assert rec["0"]["act_mean"] == pytest.approx(h.mean()) and rec["0"]["act_std"] == pytest.approx(h.std())
    gnorm = math.sqrt(sum((a ** 2).sum() for a in g))
    wnorm = math.sqrt(sum((a ** 2).sum() for a in w_before))
    assert rec["2"]["grad_norm"] == pytest.approx(gnorm)
    assert rec["2"]["weight_norm"] == pytest.approx(wnorm)
    assert rec["2"]["update_ratio"] == pytest.approx(0.1 * gnorm / wnorm)  # plain SGD: lr * g
    # the forward hooks are gone: later forwards are not recorded
    assert all(not m._forward_hooks for m in net.modules())


@pytest.fixture(scope="module")
def stats_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats")
    (d / "t.txt").write_text(synthetic_text(0, 40))
    out = str(d / "run")
    run(tiny_config(data=str(d / "t.txt"), out=out, iters=6, eval_every=3, eval_iters=1,
                    log_stats=True, stats_every=2))
    return out


def test_stats_appear_in_the_log_every_n_steps(stats_run):
    recs = [json.loads(line) for line in open(os.path.join(stats_run, "log.jsonl"))]
    assert [r["step"] for r in recs if "stats" in r] == [2, 4, 6]
    s = recs[1]["stats"]
    assert list(s) == ["transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.ln_f"]
    for group, vals in s.items():
        assert set(vals) == {"act_mean", "act_std", "grad_norm", "weight_norm", "update_ratio"}, group
        assert vals["grad_norm"] > 0 and vals["weight_norm"] > 0 and 0 < vals["update_ratio"] < 1
        assert vals["act_std"] > 0


def test_plot_command_draws_loss_and_stats(stats_run, capsys):
    for name in ("loss.png", "stats.png"):
        p = os.path.join(stats_run, name)
        if os.path.exists(p):
            os.unlink(p)
    assert main(["plot", "--out", stats_run]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [os.path.join(stats_run, "loss.png"), os.path.join(stats_run, "stats.png")]
    for p in printed:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_without_stats_or_without_a_run(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n")
    assert main(["plot", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "loss.png")]
    assert main(["plot", "--out", str(tmp_path / "nothing")]) == 2
    assert "no training log" in capsys.readouterr().err
