"""tensorlite.profiler: what a tiny GPT step records, the table, the Chrome trace, and that
nothing is recorded (or run) while no profile is active."""
import json

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import profiler
from tensorlite.autograd import function as autograd_function
from tensorlite.backend.registry import provider_name
from tensorlite.models.gpt import GPT, GPTConfig

CFG = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=16)
B, T = 4, 8


@pytest.fixture(scope="module")
def step_profile():
    threads = tl.get_num_threads()
    tl.set_num_threads(1)  # OpenMP barriers on a shared 2-core box cost more than these tiny ops
    try:
        tl.manual_seed(0)
        model = GPT(CFG)
        x = tl.tensor(np.random.default_rng(0).integers(0, 16, (B, T)))
        with profiler.profile() as prof:
            _, loss = model(x, x)
            loss.backward()
    finally:
        tl.set_num_threads(threads)
    return model, prof


def rows(prof):
    return {(r.name, r.kind): r for r in prof.key_averages()}


def test_every_forward_and_backward_op_is_recorded(step_profile):
    model, prof = step_profile
    r = rows(prof)
    n_linear = 4 * CFG.n_layer + 1  # c_attn, attn.c_proj, c_fc, mlp.c_proj per block + lm_head
    assert r[("Linear", "forward")].calls == n_linear  # one node each (ops/linear.py)
    assert r[("Linear", "backward")].calls == n_linear
    assert r[("FusedLayerNorm", "forward")].calls == 2 * CFG.n_layer + 1
    # the blocks' self-attention: one fused op from the packed q/k/v projection
    assert r[("FusedPackedSelfAttention", "backward")].calls == CFG.n_layer
    assert r[("FusedCrossEntropy", "forward")].calls == 1
    fused = provider_name("cpu")
    assert r[("FusedLayerNorm", "forward")].provider == fused
    assert r[("FusedLayerNorm", "backward")].provider == fused
    assert r[("Linear", "forward")].provider == "-"
    assert all(e.dur_ns >= 0 and e.start_ns >= 0 for e in prof.events)


def test_flop_and_byte_estimates(step_profile):
    model, prof = step_profile
    r = rows(prof)
    # every Linear: 2 * tokens * in * out, + tokens * out for its bias; the tied lm_head is
    # the wte matrix
    params = dict(model.named_parameters())
    weights = [(n, p) for n, p in params.items() if n.endswith("weight") and p.ndim == 2
               and "wpe" not in n]
    expected = sum((2 * w.shape[1] + (n[:-len("weight")] + "bias" in params)) * B * T * w.shape[0]
                   for n, w in weights)
    assert r[("Linear", "forward")].flops == expected
    assert r[("Linear", "backward")].flops == 2 * expected
    e = next(e for e in prof.events if e.name == "Linear" and e.kind == "forward"
             and len(e.input_shapes) == 3 and e.input_shapes[2])
    a, w, b = e.input_shapes
    out = a[:-1] + [w[0]]
    assert e.bytes == 4 * (np.prod(a) + np.prod(w) + np.prod(b) + np.prod(out))
    assert r[("Reshape", "forward")].flops == 0


def test_table_lists_ops_sorted_and_limited(step_profile):
    _, prof = step_profile
    text = prof.table(sort_by="total", row_limit=5)
    lines = text.splitlines()
    header = lines[1].split()
    assert header[:4] == ["Name", "Pass", "Provider", "Calls"]
    assert "GFLOP/s" in header and "GB/s" in header
    body = lines[3:8]
    totals = [float(line.split()[4]) for line in body]
    assert totals == sorted(totals, reverse=True)
    assert "more rows not shown" in lines[-1]
    by_calls = prof.table(sort_by="calls").splitlines()[3:-2]
    calls = [int(line.split()[3]) for line in by_calls]
    assert calls == sorted(calls, reverse=True)
    assert any(line.split()[:3] == ["Linear", "backward", "-"] for line in by_calls)
    with pytest.raises(ValueError, match="sort_by"):
        prof.table(sort_by="speed")


def test_chrome_trace_is_valid_json_with_forward_and_backward_events(step_profile, tmp_path):
    _, prof = step_profile
    path = prof.export_chrome_trace(str(tmp_path / "trace.json"))
    with open(path) as f:
        trace = json.load(f)
    ops = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert len(ops) == len(prof.events)
    for e in ops:
        assert {"name", "ph", "ts", "dur", "pid", "tid", "args"} <= set(e)
        assert e["dur"] >= 0
    names = {e["name"] for e in ops}
    assert {"Linear", "LinearBackward", "FusedLayerNorm", "FusedLayerNormBackward"} <= names
    assert {e["cat"] for e in ops} == {"forward", "backward"}
    ts = [e["ts"] for e in ops]
    assert ts == sorted(ts)


def test_off_records_nothing_and_profiles_do_not_nest():
    assert autograd_function._profiler is None
    x = tl.randn(3, 3, requires_grad=True)
    with profiler.profile() as prof:
        (x @ x).sum().backward()
        with pytest.raises(RuntimeError, match="already active"):
            with profiler.profile():
                pass
    n = len(prof.events)
    assert n == 4  # matmul and sum, forward and backward
    assert autograd_function._profiler is None
    (x @ x).sum().backward()
    assert len(prof.events) == n


def test_backward_of_a_graph_built_before_profiling():
    x = tl.randn(4, 5, requires_grad=True)
    y = (x * 2).sum()
    with profiler.profile() as prof:
        y.backward()
    kinds = [(e.name, e.kind) for e in prof.events]
    assert kinds == [("Sum", "backward"), ("Mul", "backward")]
    assert prof.events[1].flops == 20  # no forward estimate: one per gradient element


def test_overhead_benchmark_runs_and_restores_the_hooked_functions(capsys):
    # also guards the benchmark's patterns: it exits if the hook code no longer matches them
    import importlib.util
    import pathlib
    from tensorlite.autograd import engine
    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "profiler_overhead.py"
    spec = importlib.util.spec_from_file_location("profiler_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    apply_before, backward_before = tl.autograd.Function.__dict__["apply"], engine.run_backward
    threads = tl.get_num_threads()
    try:
        bench.main(["--rounds", "2", "--steps", "1", "--op-rounds", "2", "--op-reps", "10",
                    "--layers", "1", "--embd", "16", "--block", "8", "--batch", "2"])
    finally:
        tl.set_num_threads(threads)
    assert "ratio hooked/bare = " in capsys.readouterr().out
    assert tl.autograd.Function.__dict__["apply"] is apply_before
    assert engine.run_backward is backward_before and tl.autograd.run_backward is backward_before
