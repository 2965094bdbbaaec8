"""tensorlite.viz: the autograd graph as DOT, its rendering, attention maps and
`tensorlite inspect attention`."""
import math
import os
import re
import stat
import sys

import numpy as np
import pytest

import tensorlite as tl
from tensorlite import nn, viz
from tensorlite.cli import main
from tensorlite.models.gpt import GPT, GPTConfig

from _study_helpers import run, synthetic_text, tiny_config


def parse_dot(source):
    """({node id: label}, [(from label, to label)]) of a DOT text written by viz.graph."""
    labels = dict(re.findall(r'^\s*(\w+) \[label="([^"]*)"', source, re.M))
    edges = [(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\w+) -> (\w+);", source, re.M)]
    return labels, edges


def first_line(label):
    return label.split("\\n")[0]


def test_graph_of_a_small_expression():
    a = tl.tensor([1.0, 2.0], requires_grad=True)
    b = tl.tensor([3.0, 4.0], requires_grad=True)
    c = (a * b + a).sum()
    g = viz.graph(c, params={"a": a, "b": b})
    assert str(g) == g.source and g.source.startswith("digraph")
    labels, edges = parse_dot(g.source)
    names = sorted(first_line(v) for v in labels.values())
    assert names == ["Add", "Mul", "Sum", "a", "b", "output"]
    flow = sorted((first_line(x), first_line(y)) for x, y in edges)
    assert flow == [("Add", "Sum"), ("Mul", "Add"), ("Sum", "output"), ("a", "Add"), ("a", "Mul"),
                    ("b", "Mul")]
    assert 'label="a\\n(2,)"' in g.source  # leaves show their shape
    assert 'label="Sum\\n()"' in g.source  # ops their output shape


def test_graph_of_a_linear_layer_names_parameters_and_shows_providers():
    lin = nn.Linear(3, 2)
    y = lin(tl.randn(4, 3)).softmax(-1).sum()
    labels, edges = parse_dot(viz.graph(y, params=dict(lin.named_parameters())).source)
    flow = {(first_line(x), first_line(y)) for x, y in edges}
    # y = x W^T + b: one Linear node (ops/linear.py) fed by the weight and the bias
    assert {("weight", "Linear"), ("bias", "Linear"), ("Linear", "FusedSoftmax"),
            ("FusedSoftmax", "Sum")} <= flow
    softmax = next(v for v in labels.values() if v.startswith("FusedSoftmax"))
    assert softmax == f"FusedSoftmax\\n[{tl.get_kernels() or _default_provider()}]\\n(4, 2)"
    weight = next(v for v in labels.values() if v.startswith("weight"))
    assert weight == "weight\\n(2, 3)"
    # a Module works as params too; unnamed leaves are "leaf"
    x = tl.randn(4, 3, requires_grad=True)
    src = viz.graph(lin(x).sum(), params=lin).source
    assert 'label="leaf\\n(4, 3)"' in src and 'label="bias\\n(2,)"' in src


def _default_provider():
    from tensorlite.backend.registry import provider_name
    return provider_name("cpu")


def test_render_without_graphviz_names_the_missing_program(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `dot` anywhere
    g = viz.graph((tl.ones(2, requires_grad=True) * 2).sum())
    with pytest.raises(viz.ExecutableNotFound, match=r"`dot` \(from Graphviz\)"):
        g.render(str(tmp_path / "graph.svg"))
    assert not (tmp_path / "graph.svg").exists()


def test_render_runs_dot_with_the_format_of_the_extension(monkeypatch, tmp_path):
    # a stand-in `dot` that records its arguments and copies the DOT text to the -o file
    fake = tmp_path / "dot"
    fake.write_text(f"#!{sys.executable}\nimport pathlib, sys\n"
                    "here = pathlib.Path(sys.argv[0]).parent\n"
                    "(here / 'args').write_text(' '.join(sys.argv[1:]))\n"
                    "pathlib.Path(sys.argv[3]).write_text(sys.stdin.read())\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    g = viz.graph((tl.ones(2, requires_grad=True) * 2).sum())
    out = g.render(str(tmp_path / "graph.png"))
    assert (tmp_path / "args").read_text().split()[0] == "-Tpng"
    assert open(out).read() == g.source


# ---- attention maps ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt():
    tl.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)).double()


def test_attention_maps_are_causal_distributions(gpt):
    idx = np.array([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1]])
    maps = viz.attention_maps(gpt, idx)
    assert maps.shape == (2, 2, 2, 6, 6)  # (n_layer, B, H, T, T)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.triu(np.ones((6, 6)), 1)[None, None, None] * maps == 0)
    assert not any(m.record_attention for m in gpt.modules() if hasattr(m, "record_attention"))


def test_attention_maps_equal_a_manual_recomputation(gpt):
    idx = np.array([[3, 1, 4, 1, 5, 9, 2]])
    maps = viz.attention_maps(gpt, tl.tensor(idx))
    T, C, H = idx.shape[1], 16, 2
    tr = gpt.transformer
    with tl.no_grad():
        x = tr.wte(tl.tensor(idx)) + tr.wpe(tl.arange(T))
        for layer, block in enumerate(tr.h):
            h = np.asarray(block.ln_1(x))
            w, b = np.asarray(block.attn.c_attn.weight), np.asarray(block.attn.c_attn.bias)
            q, k, _ = np.split(h @ w.T + b, 3, axis=-1)
            for head in range(H):
                sl = slice(head * C // H, (head + 1) * C // H)
                s = q[0, :, sl] @ k[0, :, sl].T / math.sqrt(C // H)
                s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
                p = np.exp(s - s.max(-1, keepdims=True))
                p /= p.sum(-1, keepdims=True)
                np.testing.assert_allclose(maps[layer, 0, head], p, rtol=1e-10, atol=1e-14)
            x = block(x)


def test_attention_maps_need_attention_layers():
    with pytest.raises(ValueError, match="no MultiHeadAttention"):
        viz.attention_maps(nn.Linear(2, 2), [[1, 2]])


def test_inspect_attention_command_writes_a_png(tmp_path, capsys):
    data = tmp_path / "text.txt"
    data.write_text(synthetic_text(0, 40))
    out = str(tmp_path / "run")
    run(tiny_config(data=str(data), out=out, iters=2, eval_every=2, eval_iters=1))
    png = tmp_path / "att.png"
    assert main(["inspect", "attention", "--out", out, "--prompt", "the cat sat", "--png",
                 str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", "attention", "--out", out, "--prompt", "the dog"]) == 0
    assert os.path.isfile(os.path.join(out, "attention.png"))
    assert main(["inspect", "attention", "--out", out, "--prompt", "QQ"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err
