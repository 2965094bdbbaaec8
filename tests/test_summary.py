"""tensorlite.summary: parameters, activation memory, FLOPs per token, MFU; train --mfu."""
import json
import os

import pytest

import tensorlite as tl
from tensorlite import nn
from tensorlite.cli import main
from tensorlite.models.gpt import GPT, GPTConfig

from _study_helpers import synthetic_text

CFG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)
B, T = 3, 8


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # OpenMP barriers on a shared 2-core machine cost more than these tiny kernels
    threads = tl.get_num_threads()
    tl.set_num_threads(1)
    yield
    tl.set_num_threads(threads)


@pytest.fixture(scope="module")
def gpt():
    tl.manual_seed(0)
    return GPT(CFG)


def test_summary_is_the_module_and_the_function():
    assert callable(tl.summary)
    assert tl.summary.summary is not None and callable(tl.summary.measure_peak_flops)


def test_gpt_summary_counts_parameters_activations_and_flops(gpt):
    s = tl.summary(gpt, (B, T))
    assert s.total_params == gpt.num_parameters() == s.trainable_params
    rows = {r["name"]: r for r in s.rows}
    assert rows[""]["type"] == "GPT" and rows[""]["params"] == s.total_params
    assert rows["transformer.wte"]["output_shape"] == (B, T, 16)
    assert rows["transformer.wpe"]["output_shape"] == (T, 16)
    assert rows["lm_head"]["tied"] and not rows["transformer.wte"]["tied"]
    block = sum(p.numel() for p in gpt.transformer.h[0].parameters())
    assert rows["transformer.h.0"]["params"] == block
    # outputs of every leaf module, float32: embeddings, dropout, per block ln_1, c_attn (3C),
    # attn c_proj, resid dropout, ln_2, c_fc (4C), gelu (4C), mlp c_proj, dropout; ln_f, lm_head
    C, V, N = 16, 13, B * T
    per_block = N * (C + 3 * C + C + C + C + 4 * C + 4 * C + C + C)
    expected = 4 * (N * C + T * C + N * C + CFG.n_layer * per_block + N * C + N * V)
    assert s.activation_bytes == expected
    assert s.flops_per_token == gpt.flops_per_token(T)
    assert s.tokens_per_step == B * T
    assert s.mfu is None
    text = str(s)
    assert "Total params: " + f"{s.total_params:,}" in text and "(tied)" in text
    assert "MFU" not in text


def test_mfu_from_a_given_step_time(gpt):
    s = tl.summary(gpt, (B, T), peak_flops=1e9, step_time=0.01)
    assert s.mfu == pytest.approx(gpt.flops_per_token(T) * B * T / 0.01 / 1e9)
    assert f"MFU: {100 * s.mfu:.2f}%" in str(s)


def test_mfu_with_a_measured_step_time(gpt):
    s = tl.summary(gpt, (B, T), peak_flops=1e12)
    assert s.step_time > 0 and 0 < s.mfu < 1
    assert all(p.grad is None for p in gpt.parameters())  # the timing leaves no gradients behind


def test_summary_of_a_float_model_uses_six_flops_per_parameter():
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 2))
    s = tl.summary(net, (4, 5))
    n = 5 * 7 + 7 + 7 * 2 + 2
    assert s.total_params == n and s.flops_per_token == 6 * n
    assert s.tokens_per_step == 4
    assert s.activation_bytes == 4 * 4 * (7 + 7 + 2)
    assert [r["output_shape"] for r in s.rows] == [(4, 2), (4, 7), (4, 7), (4, 2)]


def test_measure_peak_flops_is_a_plausible_rate():
    peak = tl.summary.measure_peak_flops(n=128, repeats=2)
    assert 1e7 < peak < 1e14


def test_train_mfu_prints_and_logs_it(tmp_path, capsys):
    data = tmp_path / "t.txt"
    data.write_text(synthetic_text(0, 40))
    out = tmp_path / "run"
    rc = main(["train", "--data", str(data), "--out", str(out), "--n-layer", "1", "--n-head", "2",
               "--n-embd", "16", "--block-size", "8", "--batch-size", "4", "--iters", "3",
               "--eval-every", "3", "--eval-iters", "1", "--threads", "1", "--no-progress", "--mfu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "GFLOP/s" in printed and "mfu " in printed
    recs = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    assert len(recs) == 3 and all(0 < r["mfu"] < 1 for r in recs)
