"""loss.png of a run: what `tensorlite train` draws at the end and `tensorlite plot` redraws.

    plot_losses("runs/default")               # train (raw and EMA-smoothed), val, accuracy
    plot_losses("runs/default", smooth=0.0)   # the raw per-step curve only

Smoothing is an exponential moving average (TensorBoard's, bias-corrected), weakened on a
short run so that its lag stays under a tenth of the steps; the legend shows the factor used.

The title names the run folder and its config (read from config.json when it is there).
The y axis is linear while the losses span less than a factor of 8; beyond that it is
logarithmic with a labelled tick at every 1, 2 and 5 (a log axis with only its powers of
ten labelled tells nothing about a curve that lives between 0.05 and 3).

This module imports nothing of tensorlite's: it reads log.jsonl and config.json.
"""
import json
import math
import os
import warnings

DEFAULT_SMOOTH = 0.9
_LOG_AXIS_RATIO = 8.0


def ema(values, beta):
    """Exponential moving average with TensorBoard's bias correction, so the first points
    are not dragged towards zero. beta in [0, 1): 0 returns the values unchanged."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {beta}")
    out, s = [], 0.0
    for t, v in enumerate(values, 1):
        s = beta * s + (1.0 - beta) * v
        out.append(s / (1.0 - beta ** t))
    return out


def read_log(out):
    """{"step", "loss", "eval_step", "val_loss", "train_loss", "accuracy"}: lists from log.jsonl."""
    cols = {k: [] for k in ("step", "loss", "eval_step", "val_loss", "train_loss", "accuracy")}
    with open(os.path.join(out, "log.jsonl")) as f:
        for line in f:
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                # a run killed while writing its log leaves a torn last line; --resume cuts it
                warnings.warn(f"{out}/log.jsonl: skipping a torn line", RuntimeWarning, stacklevel=2)
                continue
            if _finite(r.get("loss")):
                cols["step"].append(r["step"])
                cols["loss"].append(r["loss"])
            if any(k in r for k in ("val_loss", "train_loss", "accuracy")):
                cols["eval_step"].append(r["step"])
                for k in ("val_loss", "train_loss", "accuracy"):
                    cols[k].append(r[k] if _finite(r.get(k)) else None)
    return cols


def run_title(out):
    """Two lines: the run folder, then its data and model/training config."""
    try:
        with open(os.path.join(out, "config.json")) as f:
            cfg = json.load(f)
        m, t = cfg.get("model", {}), cfg.get("train", {})
    except (OSError, ValueError, AttributeError):
        return out
    what = os.path.basename(t["data"]) if t.get("data") else f"{t.get('task', '?')} task"
    parts = [what]
    if m:
        parts.append(f"{m.get('n_layer')} layers \u00d7 {m.get('n_head')} heads \u00d7 "
                     f"{m.get('n_embd')} dims, block {m.get('block_size')}")
    for key, label in (("batch_size", "batch"), ("lr", "lr"), ("iters", "iters")):
        if t.get(key) is not None:
            v = t[key]
            parts.append(f"{label} {v:.0e}" if key == "lr" else
                         (f"{v:,} {label}" if key == "iters" else f"{label} {v}"))
    return f"{out}\n" + " \u00b7 ".join(parts)


def plot_losses(out, smooth=DEFAULT_SMOOTH, path=None):
    """Draw OUT/loss.png (or path) from OUT/log.jsonl; returns its path, or None when
    matplotlib is missing or the log holds no step."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib import ticker
    except ImportError:
        return None
    cols = read_log(out)
    steps, losses = cols["step"], cols["loss"]
    if not steps:
        return None
    # an EMA lags its data by about 1 / (1 - beta) steps: keep that under a tenth of the run,
    # or a short run's smoothed curve trails far behind its real loss
    smooth = max(0.0, min(smooth or 0.0, 1.0 - 10.0 / len(losses)))
    fig, ax = plt.subplots(figsize=(8, 4.8))
    shown = list(losses)
    if smooth > 0:
        ax.plot(steps, losses, lw=0.6, alpha=0.3, color="C0", label="train, per step")
        ax.plot(steps, ema(losses, smooth), lw=1.6, color="C0", label=f"train, EMA {smooth:.2g}")
    else:
        ax.plot(steps, losses, lw=1.0, color="C0", marker="." if len(steps) < 30 else None,
                label="train, per step")
    for key, label, style in (("train_loss", "train (eval batches)", "s--"),
                              ("val_loss", "val (held out)", "o-")):
        pts = [(s, v) for s, v in zip(cols["eval_step"], cols[key]) if v is not None]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, style, ms=4, lw=1.2, color="C3" if key == "val_loss" else "C1",
                    label=label)
            shown.extend(ys)
    _loss_axis(ax, shown, ticker)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (cross-entropy, nats/token)")
    ax.set_xlim(0, max(steps))
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="major")
    handles, labels = ax.get_legend_handles_labels()
    acc = [(s, v) for s, v in zip(cols["eval_step"], cols["accuracy"]) if v is not None]
    if acc:
        ax2 = ax.twinx()
        xs, ys = zip(*acc)
        ax2.plot(xs, ys, "d:", ms=4, color="C2", label="held-out accuracy (right)")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("exact-match accuracy")
        ax2.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    # below the axes: inside, it hides the start of the loss or the top of the accuracy
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    ax.set_title(run_title(out), fontsize=9, loc="left")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, plt, path or os.path.join(out, "loss.png"))


def _loss_axis(ax, values, ticker):
    lo, hi = min(values), max(values)
    if lo > 0 and hi / lo > _LOG_AXIS_RATIO:
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.15, hi * 1.15)
        ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=30))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(ticker.LogLocator(base=10, subs=range(1, 10), numticks=30))
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    else:
        pad = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.1
        ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        ax.yaxis.set_major_locator(ticker.MaxNLocator(nbins=8))


def _save(fig, plt, path):
    # a picture half-written when the run is killed must never replace the last good one
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _finite(v):
    return isinstance(v, (int, float)) and math.isfinite(v)
