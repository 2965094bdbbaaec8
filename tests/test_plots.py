"""The pictures: loss.png, stats.png and attention.png are written, are real PNGs with
something drawn on them, and carry what a reader needs (labelled ticks, a legend, a title
naming the run, a colorbar, token labels)."""
import json
import math
import os

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from tensorlite import plots, viz  # noqa: E402
from tensorlite.cli import main  # noqa: E402
from tensorlite.stats import plot_stats  # noqa: E402


def assert_real_png(path, min_bytes=5000):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    assert len(data) >= min_bytes, (path, len(data))
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01, f"{path} is blank"


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting code closes, kept open to look at."""
    kept = []
    real_close = plt.close

    def close(fig=None):
        if fig is not None and not isinstance(fig, str):
            kept.append(fig)
        else:
            real_close(fig)
    monkeypatch.setattr(plt, "close", close)
    yield kept
    for f in kept:
        real_close(f)


def write_run(d, n=400, stats=False, accuracy=False):
    """A log.jsonl whose loss falls from ~3 to ~0.02 (two decades), with evals every 100."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "log.jsonl", "w") as f:
        for s in range(1, n + 1):
            loss = 3.0 * math.exp(-s / 60) + 0.02 + 0.01 * abs(rng.normal())
            r = {"step": s, "loss": loss, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 1e4}
            if s % 100 == 0:
                r.update(val_loss=loss * 1.2, train_loss=loss)
                if accuracy:
                    r["accuracy"] = s / n
            if stats and s % 20 == 0:
                r["stats"] = {g: {"act_mean": 0.01 * i, "act_std": 1.0 + 0.1 * i + s / n,
                                  "grad_norm": 0.5 / s, "weight_norm": 3.0, "update_ratio": 1e-3 * s / n}
                              for i, g in enumerate(["transformer.wte", "transformer.h.0", "transformer.ln_f"])}
            f.write(json.dumps(r) + "\n")
    (d / "config.json").write_text(json.dumps({
        "model": {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32},
        "train": {"data": "/somewhere/input.txt", "iters": n, "batch_size": 12, "lr": 1e-3}}))
    return str(d)


def labelled_ticks(fig, ax, axis="y"):
    fig.canvas.draw()
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    ticks = ax.yaxis.get_major_ticks() if axis == "y" else ax.xaxis.get_major_ticks()
    return [t.label1.get_text() for t in ticks
            if t.label1.get_text() and lo <= t.get_loc() <= hi]


def test_loss_png_has_ticks_legend_and_a_title_naming_the_run(tmp_path, figures):
    out = write_run(tmp_path / "runs" / "mine")
    path = plots.plot_losses(out)
    assert path == os.path.join(out, "loss.png")
    assert_real_png(path)
    fig = figures[-1]
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # two decades of loss
    assert len(labelled_ticks(fig, ax)) >= 4, labelled_ticks(fig, ax)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "val (held out)" in labels and "train, EMA 0.9" in labels, labels
    title = ax.get_title(loc="left")
    assert out in title and "2 layers" in title and "4 heads" in title and "64 dims" in title
    assert "block 32" in title and "400 iters" in title and "input.txt" in title


def test_a_narrow_loss_range_gets_a_linear_axis(tmp_path, figures):
    d = tmp_path / "flat"
    d.mkdir()
    (d / "log.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 100}) + "\n"
                                         for s in range(1, 51)))
    assert_real_png(plots.plot_losses(str(d)))
    fig = figures[-1]
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    assert len(labelled_ticks(fig, ax)) >= 4
    lo, hi = ax.get_ylim()
    assert lo <= 1.5 and hi >= 1.99 and hi - lo < 1.0  # the data's range, not 0..max


def test_accuracy_gets_its_own_axis(tmp_path, figures):
    assert_real_png(plots.plot_losses(write_run(tmp_path / "task", accuracy=True)))
    fig = figures[-1]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylim()[1] >= 1.0
    assert any("accuracy" in t.get_text() for t in fig.legends[0].get_texts())


def test_smoothing(tmp_path, figures):
    assert plots.ema([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # bias-corrected
    assert plots.ema([1.0, 3.0], 0.0) == [1.0, 3.0]
    assert plots.ema([1.0, 3.0], 0.5) == pytest.approx([1.0, (0.25 + 1.5) / 0.75])
    with pytest.raises(ValueError):
        plots.ema([1.0], 1.0)
    out = write_run(tmp_path / "s")
    plots.plot_losses(out, smooth=0.0)
    labels = [t.get_text() for t in figures[-1].legends[0].get_texts()]
    assert not any("EMA" in lab for lab in labels)


def test_a_short_run_is_smoothed_less(tmp_path, figures):
    out = write_run(tmp_path / "short", n=20)
    plots.plot_losses(out, smooth=0.9)
    labels = [t.get_text() for t in figures[-1].legends[0].get_texts()]
    assert "train, EMA 0.5" in labels, labels


def test_plot_command_smooth_flag(tmp_path, capsys):
    out = write_run(tmp_path / "cmd", stats=True)
    assert main(["plot", "--out", out, "--smooth", "0.5"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [os.path.join(out, "loss.png"), os.path.join(out, "stats.png")]
    for p in printed:
        assert_real_png(p)
    assert main(["plot", "--out", out, "--smooth", "1.5"]) == 2
    assert "--smooth" in capsys.readouterr().err


def test_stats_png(tmp_path):
    assert_real_png(plot_stats(write_run(tmp_path / "stats", stats=True)))


def test_attention_png_has_a_colorbar_and_token_labels_on_both_axes(tmp_path, figures):
    rng = np.random.default_rng(1)
    L, H, T = 2, 3, 7
    maps = np.tril(rng.random((L, 1, H, T, T)))
    maps /= maps.sum(-1, keepdims=True)
    tokens = list("17+25=2")
    path = viz.plot_attention(maps, tokens, str(tmp_path / "att.png"), title="attention of runs/x")
    assert_real_png(path)
    fig = figures[-1]
    panels, others = fig.axes[:L * H], fig.axes[L * H:]
    assert len(others) == 1 and others[0].get_ylabel() == "attention probability"  # the colorbar
    fig.canvas.draw()
    bottom_left = panels[(L - 1) * H]
    assert [t.get_text() for t in bottom_left.get_xticklabels()] == tokens
    assert [t.get_text() for t in bottom_left.get_yticklabels()] == tokens
    assert [p.get_title() for p in panels[:H]] == [f"head {h}" for h in range(H)]
    assert fig.get_suptitle() == "attention of runs/x"
    # the panel titles sit below the figure title, not on it
    renderer = fig.canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(renderer)
    for p in panels[:H]:
        assert p.title.get_window_extent(renderer).y1 <= sup.y0 + 1
