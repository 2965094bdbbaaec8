"""Pictures of what a model computes: the autograd graph behind a tensor (Graphviz DOT)
and the attention probabilities of a GPT, layer by layer and head by head.

    g = tensorlite.viz.graph(loss, params=dict(model.named_parameters()))
    print(g.source); g.render("graph.svg")          # render needs Graphviz's `dot`
    maps = tensorlite.viz.attention_maps(model, idx)  # (n_layer, B, H, T, T), rows sum to 1
"""
import os
import shutil
import subprocess

import numpy as np

from .autograd.function import AccumulateGrad
from .autograd.grad_mode import no_grad
from .backend.device import to_numpy


class ExecutableNotFound(RuntimeError):
    """The Graphviz program that renders DOT text is not installed (or not on PATH)."""


# ---- the autograd graph -------------------------------------------------------------------

class Graph:
    """DOT text of a graph (.source), rendered to a file by Graphviz's `dot` (.render)."""

    def __init__(self, source):
        self.source = source

    def __str__(self):
        return self.source

    def __repr__(self):
        return f"<tensorlite.viz.Graph: {self.source.count('->')} edges>"

    def render(self, path, format=None):  # noqa: A002 (the graphviz package's name)
        """Write the graph to path in format (default: path's extension: svg, png, pdf...)."""
        fmt = format or os.path.splitext(path)[1].lstrip(".") or "svg"
        dot = shutil.which("dot")
        if dot is None:
            raise ExecutableNotFound(
                "Graph.render: the program `dot` (from Graphviz) was not found on PATH; install "
                "Graphviz (apt install graphviz, brew install graphviz or conda install graphviz) "
                "or save Graph.source to a .dot file and render it elsewhere")
        r = subprocess.run([dot, f"-T{fmt}", "-o", path], input=self.source.encode(),
                           capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"Graph.render: dot failed ({r.returncode}): "
                               f"{r.stderr.decode(errors='replace').strip()}")
        return path


def graph(tensor, params=None):
    """The graph that computed tensor, in the direction data flows: parameters and other
    leaves at the top, one box per op (its Function, provider when a fused kernel ran
    it, output shape), the tensor at the bottom. params: {name: tensor} (for example
    dict(model.named_parameters())) or a Module, to name the leaves."""
    if params is not None and hasattr(params, "named_parameters"):
        params = dict(params.named_parameters())
    names = {id(t): n for n, t in (params or {}).items()}
    lines = ["digraph tensorlite {", "  rankdir=TB;",
             '  node [fontname="Helvetica", fontsize=10];']
    ids = {}

    def nid(node):
        if node not in ids:
            ids[node] = f"n{len(ids)}"
        return ids[node]

    root = tensor.grad_fn
    if root is None and tensor.requires_grad:
        from .autograd.function import edge_of
        root = edge_of(tensor)
    seen = set()
    stack = [root] if root is not None else []
    edges = []
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        lines.append(f"  {nid(node)} [{_node_attrs(node, names)}];")
        for nxt in node.next:
            if nxt is not None:
                edges.append(f"  {nid(nxt)} -> {nid(node)};")
                stack.append(nxt)
    out_label = "output" if tensor.grad_fn is not None or tensor.requires_grad else "output (no graph)"
    lines.append(f'  out [label="{out_label}\\n{_shape(tensor.shape)}", shape=ellipse, '
                 'style=filled, fillcolor="#c7e9c0"];')
    if root is not None:
        edges.append(f"  {nid(root)} -> out;")
    return Graph("\n".join(lines + list(dict.fromkeys(edges)) + ["}"]) + "\n")


def _node_attrs(node, names):
    if isinstance(node, AccumulateGrad):
        t = node.variable
        name = names.get(id(t)) or getattr(t, "_name", None) or "leaf"
        return (f'label="{_esc(name)}\\n{_shape(t.shape)}", shape=ellipse, style=filled, '
                'fillcolor="#c6dbef"')
    parts = [node.fn.__name__]
    if node.provider:
        parts.append(f"[{node.provider}]")
    if node.out_shape is not None:
        parts.append(_shape(node.out_shape))
    return f'label="{_esc(chr(10).join(parts))}", shape=box, style=filled, fillcolor="#f0f0f0"'


def _shape(shape):
    return str(tuple(int(s) for s in shape))


def _esc(s):
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# ---- attention maps -----------------------------------------------------------------------

def attention_maps(model, idx):
    """Attention probabilities of every MultiHeadAttention in model for the input idx,
    stacked as (n_layer, B, H, T, T) NumPy arrays. The fused kernel never stores them;
    each layer recomputes them from its q and k (record_attention) during one forward
    pass without gradients, in eval mode (no dropout)."""
    from .factories import tensor as make_tensor
    from .nn.attention import MultiHeadAttention
    from .tensor import Tensor
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"attention_maps: {type(model).__name__} has no MultiHeadAttention layers")
    if not isinstance(idx, Tensor):
        idx = make_tensor(np.asarray(idx, dtype=np.int64))
    if idx.ndim == 1:
        idx = idx.reshape(1, -1)
    was_training = model.training
    model.eval()
    for m in layers:
        m.record_attention = True
    try:
        with no_grad():
            model(idx)
        maps = [to_numpy(m.last_attention._data) for m in layers]
    finally:
        for m in layers:
            m.record_attention = False
            m.last_attention = None
        model.train(was_training)
    return np.stack(maps)


def token_labels(tokenizer, ids):
    """One printable label per token id (spaces and control characters made visible)."""
    out = []
    for i in ids:
        s = tokenizer.decode([int(i)])
        s = s.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t")
        out.append(s if s else "\u2205")
    return out


def plot_attention(maps, tokens, path, batch_index=0, title=None):
    """A PNG grid of attention maps (layers down, heads across) with one shared colorbar:
    row = the query token, column = the key token it attends to. Token labels run along
    the left column (queries) and the bottom row (keys), so the panels between stay clear."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    L, _, H, T, _ = maps.shape
    cell = min(4.0, max(1.8, 0.2 * T))
    step = max(1, -(-T // 40))  # past ~40 labels a side they overlap: label every k-th
    ticks = list(range(0, T, step))
    fig, axes = plt.subplots(L, H, figsize=(cell * H + 2.2, cell * L + 1.4), squeeze=False,
                             layout="constrained")
    for layer in range(L):
        for head in range(H):
            ax = axes[layer][head]
            im = ax.imshow(maps[layer, batch_index, head], vmin=0.0, vmax=1.0, cmap="viridis",
                           interpolation="nearest")
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.tick_params(length=2, labelsize=7)
            if layer == L - 1:
                ax.set_xticklabels([tokens[i] for i in ticks], rotation=90)
            else:
                ax.set_xticklabels([])
            if head == 0:
                ax.set_yticklabels([tokens[i] for i in ticks])
                ax.set_ylabel(f"layer {layer}", fontsize=9)
            else:
                ax.set_yticklabels([])
            if layer == 0:
                ax.set_title(f"head {head}", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=min(1.0, 0.9 / L ** 0.5 + 0.1), pad=0.02,
                 label="attention probability")
    fig.suptitle(title or "attention", fontsize=10)
    fig.supxlabel("key token (attended to)", fontsize=9)
    fig.supylabel("query token (attending)", fontsize=9)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def inspect_attention(out, prompt, png=None, device="cpu"):
    """`tensorlite inspect attention`: the attention maps of a trained run for a prompt, as a
    PNG (default OUT/attention.png). Returns the PNG's path."""
    from .generate import load_run
    model, tok, _ = load_run(out, device)
    return inspect_model_attention(model, tok, prompt, png or os.path.join(out, "attention.png"),
                                   device, title=f"attention of {out}")


def inspect_model_attention(model, tok, prompt, png, device="cpu", title="attention"):
    """The attention maps of any model made of MultiHeadAttention layers (a GPT, a BertModel
    from a pretrained folder) for a prompt, as a PNG. A tokenizer that adds special tokens
    (WordPiece's [CLS] ... [SEP]) keeps them: they are what the model sees."""
    if not prompt:
        raise ValueError("inspect attention: --prompt must not be empty")
    limit = getattr(model.config, "block_size", None) or model.config.max_position_embeddings
    ids = tok.encode(prompt)[-limit:]
    from .factories import tensor as make_tensor
    maps = attention_maps(model, make_tensor(np.asarray([ids], dtype=np.int64), device=device))
    return plot_attention(maps, token_labels(tok, ids), png,
                          title=f"{title} on {_clip(prompt)!r}")


def _clip(text, n=60):
    return text if len(text) <= n else text[:n - 3] + "..."
