"""Progress of a long loop (training steps, evaluation batches), shown to suit where it goes.

    bar   tqdm's bar (tqdm.auto's widget in a notebook): redraws one line in place, which
          only a terminal can show; written to a file it becomes one huge line of \\r refreshes
    log   plain lines, one every `every` steps or every `interval` seconds, whichever comes
          first, plus the first and the last: what a log file, CI or `| tee` wants
    none  nothing but the messages passed to write()
    auto  bar when the bar's stream (stderr) is a terminal or this is a notebook, else log

    p = make_progress("auto", total=1000, say=print)
    for step in range(1, 1001):
        p.update(step, loss=..., lr=..., tok_s=...)
    p.close()

This module imports nothing of tensorlite's; tqdm is optional (bar falls back to log).
"""
import math
import sys
import time

MODES = ("auto", "bar", "log", "none")
LOG_INTERVAL_S = 10.0


def resolve_mode(mode, stream=None):
    """The mode that `auto` (or True/False/None, the old bool setting) stands for here."""
    if mode is True or mode is None:
        mode = "auto"
    elif mode is False:
        mode = "none"
    if mode not in MODES:
        raise ValueError(f"unknown progress mode {mode!r}: choose one of {', '.join(MODES)}")
    if mode != "auto":
        return mode
    if _in_notebook():
        return "bar"
    stream = sys.stderr if stream is None else stream
    try:
        return "bar" if stream.isatty() else "log"
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return "log"


def make_progress(mode, total, initial=0, say=print, unit="step", every=None,
                  interval=LOG_INTERVAL_S, bar_stream=None, clock=time.monotonic):
    """A progress display for a loop of `total` units, `initial` of them already done.

    say: where log lines and write() messages go (a print-like callable). every: log lines
    at least every this many units (default: about 20 lines per run). bar_stream: the bar's
    stream (default stderr), which `auto` tests for a terminal."""
    mode = resolve_mode(mode, bar_stream)
    if mode == "bar":
        bar = _tqdm_bar(total, initial, unit, bar_stream)
        if bar is not None:
            return BarProgress(bar)
        mode = "log"  # no tqdm: plain lines still tell how far the run has got
    if mode == "log":
        return LogProgress(total, initial, say, unit, every, interval, clock)
    return NoProgress(say)


class NoProgress:
    kind = "none"

    def __init__(self, say):
        self.say = say

    def update(self, n, **fields):
        pass

    def write(self, msg):
        self.say(msg)

    def close(self):
        pass


class BarProgress:
    kind = "bar"

    def __init__(self, bar):
        self.bar = bar

    def update(self, n, **fields):
        # refresh=False: set_postfix would otherwise redraw on every call, many times a
        # second; update() redraws at most every mininterval
        if fields:
            self.bar.set_postfix({k: _short(k, v) for k, v in fields.items() if v is not None},
                                 refresh=False)
        self.bar.update(n - self.bar.n)

    def write(self, msg):
        self.bar.write(msg)

    def close(self):
        self.bar.close()


class LogProgress:
    """One plain line per report: "step 200/1000 loss 1.2340 lr 1.00e-03 tok/s 12,345 eta 1m02s".

    A reported number is the mean over the units since the previous line (one step's loss
    is noise); eta comes from this invocation's average pace, evaluation time included."""
    kind = "log"

    def __init__(self, total, initial, say, unit, every, interval, clock):
        self.total, self.start, self.say, self.unit = total, initial, say, unit
        self.every = every or max(1, (total - initial) // 20)
        self.interval, self.clock = interval, clock
        self.t0 = self.last_t = clock()
        self.last_n = initial
        self._sums, self._counts = {}, {}

    def update(self, n, **fields):
        for k, v in fields.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                self._sums[k] = self._sums.get(k, 0.0) + v
                self._counts[k] = self._counts.get(k, 0) + 1
        now = self.clock()
        due = (n == self.start + 1 or n >= self.total or n % self.every == 0
               or now - self.last_t >= self.interval)
        if due and n > self.last_n:
            self.say(self._line(n, now))
            self.last_n, self.last_t = n, now
            self._sums, self._counts = {}, {}

    def _line(self, n, now):
        parts = [f"{self.unit} {n}/{self.total}"]
        for k in self._sums:
            parts.append(f"{_label(k)} {_short(k, self._sums[k] / self._counts[k])}")
        done = n - self.start
        if done > 0 and n < self.total:
            parts.append(f"eta {format_duration((now - self.t0) / done * (self.total - n))}")
        elif n >= self.total:
            parts.append(f"took {format_duration(now - self.t0)}")
        return " ".join(parts)

    def write(self, msg):
        self.say(msg)

    def close(self):
        pass


def format_duration(seconds):
    """1m02s, 3h05m, 42s: the width of the number follows the size of the wait."""
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def _label(key):
    return {"tok_s": "tok/s"}.get(key, key)


def _short(key, v):
    if not isinstance(v, (int, float)):
        return str(v)
    if key == "lr":
        return f"{v:.2e}"
    if key == "tok_s":
        return f"{v:,.0f}"
    if key == "mfu":
        return f"{v:.2%}"
    return f"{v:.4f}"


def _in_notebook():
    ipython = sys.modules.get("IPython")
    if ipython is None:  # never import IPython ourselves: a plain script has no kernel
        return False
    try:
        shell = ipython.get_ipython()
    except AttributeError:
        return False
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def _tqdm_bar(total, initial, unit, stream):
    try:
        if _in_notebook():
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit=unit, dynamic_ncols=True,
                file=sys.stderr if stream is None else stream, mininterval=0.5)
