"""Training statistics per layer (`tensorlite train --log-stats`): activation mean/std,
gradient norm and update/weight ratio, every N steps, into log.jsonl's "stats" field;
plot_stats draws them (stats.png).

A layer is a group of parameters: everything under one numbered module of a list
(transformer.h.0, transformer.h.1, ...), else the module that owns the parameter
(transformer.wte, transformer.ln_f). Per group, on a tracked step:
    act_mean, act_std   of the group module's output (forward hook, that step only)
    grad_norm           ||g|| over the group's gradients, before clipping
    weight_norm         ||w|| before the optimizer step
    update_ratio        ||w_after - w_before|| / ||w_before||: how far the step moved the
                        layer (Karpathy's rule of thumb: around 1e-3 is healthy for Adam)
"""
import json
import math
import os
from collections import OrderedDict

import numpy as np

from .backend.device import xp_of


def layer_groups(model):
    """OrderedDict group name -> [(param name, param)], in parameter order."""
    groups = OrderedDict()
    for name, p in model.named_parameters():
        parts = name.split(".")
        cut = next((i + 1 for i, s in enumerate(parts[:-1]) if s.isdigit()), len(parts) - 1)
        groups.setdefault(".".join(parts[:cut]) or "(root)", []).append((name, p))
    return groups


class TrainingStats:
    """The train loop calls begin() before the forward of a step it wants tracked, grads()
    after backward, snapshot() just before optimizer.step() and end() after it."""

    def __init__(self, model, every=10):
        if every < 1:
            raise ValueError(f"stats_every must be >= 1, got {every}")
        self.model, self.every = model, every
        self.groups = layer_groups(model)
        modules = dict(model.named_modules())
        self.modules = {g: modules[g] for g in self.groups if g in modules}
        self._handles, self._rec = [], None

    def begin(self, step):
        """Start tracking if step (1-based, the step about to run) is due; returns whether."""
        if step % self.every:
            return False
        self._rec = OrderedDict((g, {}) for g in self.groups)
        for g, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._activation_hook(g)))
        return True

    def _activation_hook(self, group):
        def hook(module, args, out):
            out = out[0] if isinstance(out, tuple) else out
            a = out._data
            xp = xp_of(a)
            if a.dtype.kind == "f" and a.size:
                a64 = a.astype(np.float64)
                self._rec[group]["act_mean"] = float(xp.mean(a64))
                self._rec[group]["act_std"] = float(xp.std(a64))
        return hook

    def grads(self):
        for h in self._handles:  # the forward is over: later forwards (eval) are not this step
            h.remove()
        self._handles = []
        for g, params in self.groups.items():
            sq = sum(_sqnorm(p.grad._data) for _, p in params if p.grad is not None)
            self._rec[g]["grad_norm"] = math.sqrt(sq)

    def snapshot(self):
        self._before = {g: [p._data.copy() for _, p in params] for g, params in self.groups.items()}

    def end(self):
        rec = self._rec
        for g, params in self.groups.items():
            before = self._before[g]
            w = math.sqrt(sum(_sqnorm(b) for b in before))
            d = math.sqrt(sum(_sqnorm(p._data - b) for (_, p), b in zip(params, before)))
            rec[g]["weight_norm"] = w
            rec[g]["update_ratio"] = d / w if w > 0 else None
        self._rec, self._before = None, None
        return rec


def _sqnorm(a):
    return float(xp_of(a).sum(a.astype(np.float64) ** 2))


# ---- plotting ---------------------------------------------------------------------------------

def read_stats(out):
    """(steps, {group: {key: [values]}}) from a run's log.jsonl."""
    steps, recs = [], []
    with open(os.path.join(out, "log.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if "stats" in r:
                steps.append(r["step"])
                recs.append(r["stats"])
    series = OrderedDict()
    for rec in recs:
        for g, vals in rec.items():
            for k in vals:
                series.setdefault(g, OrderedDict())[k] = None
    for g, keys in series.items():
        for k in keys:
            keys[k] = [rec.get(g, {}).get(k) for rec in recs]
    return steps, series


def plot_stats(out):
    """stats.png next to loss.png: one panel per statistic, one line per layer. Returns
    the path, or None when the log holds no stats (the run had no --log-stats)."""
    steps, series = read_stats(out)
    if not steps:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [("act_std", "activation std", False), ("act_mean", "activation mean", False),
              ("grad_norm", "gradient norm (before clipping)", True),
              ("update_ratio", "update / weight  ||dw|| / ||w||", True)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    cmap = plt.get_cmap("viridis")
    names = list(series)
    prefix = os.path.commonprefix([n + "." for n in names]) if len(names) > 1 else ""
    prefix = prefix[:prefix.rfind(".") + 1]
    for ax, (key, title, log) in zip(axes.flat, panels):
        for i, g in enumerate(names):
            ys = series[g].get(key)
            if not ys or all(v is None for v in ys):
                continue
            pts = [(s, v) for s, v in zip(steps, ys) if v is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=1,
                    color=cmap(i / max(1, len(names) - 1)), label=g[len(prefix):])
        if key == "update_ratio":
            ax.axhline(1e-3, color="grey", ls="--", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[2].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, title=prefix.rstrip(".") or None)
    fig.tight_layout(rect=(0, 0, 0.85, 1))
    path = os.path.join(out, "stats.png")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
