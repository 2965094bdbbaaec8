"""Training runs that survive kill -9, Ctrl-C and SIGTERM at any moment: checkpoints are
published whole or not at all, the newest complete one is never lost, a killed run's temp
files are gone once the next one starts, and the resumed run ends bit-identical to a run
that was never interrupted (weights and every logged loss).

The kill moments come from a seeded RNG, so a failure replays. The subprocess tests run
each `tensorlite train` in a child forked from tests/_crash_worker.py (one import for all);
TENSORLITE_TEST_PAUSE_IN_SAVE (a test hook in checkpoint.py) stretches every save so that
some kills land inside one."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tensorlite import checkpoint as ckpt
from tensorlite.serialization import TEMP_PREFIX, load_file
from tensorlite.train import TrainConfig, latest_checkpoint, train

HERE = os.path.dirname(os.path.abspath(__file__))
TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n") * 20
ITERS = 80
N_KILLS, N_IN_SAVE = 20, 5


def cli_args(data, out, iters=ITERS, save_every=1):
    return ["train", "--data", data, "--out", out, "--n-layer", "1", "--n-head", "2",
            "--n-embd", "16", "--block-size", "8", "--batch-size", "4", "--iters", str(iters),
            "--save-every", str(save_every), "--eval-every", "7", "--eval-iters", "1",
            "--dropout", "0.1", "--lr", "3e-3", "--warmup", "5", "--threads", "1",
            "--keep-last", "2", "--no-progress"]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("crash_data") / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


class Worker:
    def __init__(self):
        env = dict(os.environ)
        env.pop(ckpt.PAUSE_ENV, None)
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "_crash_worker.py")],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def _ask(self, req):
        self.p.stdin.write(json.dumps(req) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        assert line, "the crash worker died"
        return json.loads(line)

    def start(self, argv, log, env=None):
        return self._ask({"run": argv, "log": log, "env": env or {}})["pid"]

    def wait(self, pid):
        return self._ask({"wait": pid})["code"]

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def final_weights(out):
    with open(os.path.join(latest_checkpoint(out), ckpt.MODEL), "rb") as f:
        return f.read()


def log_records(out):
    recs = []
    with open(os.path.join(out, ckpt.LOG)) as f:
        for line in f:
            try:
                recs.append(json.loads(line))
            except ValueError:  # a line being written right now
                pass
    return recs


def logged_step(out):
    try:
        recs = log_records(out)
    except FileNotFoundError:
        return 0
    return recs[-1]["step"] if recs else 0


@pytest.fixture(scope="module")
def reference(worker, data_file, tmp_path_factory):
    """The uninterrupted run (rare saves: saving must not change what is computed)."""
    d = tmp_path_factory.mktemp("crash_ref")
    out = str(d / "run")
    pid = worker.start(cli_args(data_file, out, save_every=1000), str(d / "ref.txt"))
    assert worker.wait(pid) == 0, open(d / "ref.txt").read()
    return final_weights(out), [r["loss"] for r in log_records(out)]


def temp_entries(out):
    found = set()
    for d in (out, os.path.join(out, ckpt.CHECKPOINTS)):
        if os.path.isdir(d):
            found |= {os.path.join(d, n) for n in os.listdir(d) if n.startswith(TEMP_PREFIX)}
    return found


def check_complete_checkpoints(out):
    """Every complete checkpoint is consistent; returns the newest step (or -1)."""
    found = ckpt.list_checkpoints(out)
    for step, d in found:
        state = json.load(open(os.path.join(d, ckpt.STATE)))
        for name in (ckpt.MODEL, ckpt.OPTIM):
            _, meta = load_file(os.path.join(d, name))
            assert meta["step"] == str(step) == str(state["step"]), (d, name)
    return found[-1][0] if found else -1


def wait_until(pred, what, timeout=60.0, every=0.002):
    t = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < t, f"timed out waiting for {what}"
        time.sleep(every)


def started(log):
    def pred():
        try:
            text = open(log).read()
        except FileNotFoundError:
            return False
        assert "Traceback" not in text and "error:" not in text, text
        return "model:" in text
    return pred


def finish(worker, pid, log, out, reference):
    assert worker.wait(pid) == 0, open(log).read()
    weights, losses = reference
    recs = log_records(out)
    assert [r["step"] for r in recs] == list(range(1, ITERS + 1))
    assert [r["loss"] for r in recs] == losses  # to the last bit
    assert final_weights(out) == weights
    assert not temp_entries(out)
    assert len(ckpt.list_checkpoints(out)) <= 2  # --keep-last 2


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_resumes_bit_exactly(worker, reference,
                                                                        data_file, tmp_path):
    rng = random.Random(1234)
    out = str(tmp_path / "run")
    kills = in_save = 0
    leftovers = set()
    for seg in range(N_KILLS + 1):
        # every third run is slowed down inside its saves, and killed while one is under way
        aim_at_save = seg % 3 == 1
        env = {ckpt.PAUSE_ENV: "0.02"} if aim_at_save else {}
        log = str(tmp_path / f"seg{seg:02d}.txt")
        argv = cli_args(data_file, out) + (["--resume"] if seg else [])
        pid = worker.start(argv, log, env)
        wait_until(started(log), f"run {seg} to start")
        assert not leftovers & temp_entries(out), "a killed run's temp files outlived the next start"
        if seg == N_KILLS:
            break
        newest = check_complete_checkpoints(out)
        if aim_at_save:
            root = os.path.join(out, ckpt.CHECKPOINTS)
            wait_until(lambda: any(n.startswith(TEMP_PREFIX + "step-") for n in
                                   (os.listdir(root) if os.path.isdir(root) else ())),
                       "a save to begin")
            time.sleep(rng.uniform(0.0, 0.08))
        else:
            target = min(ITERS - 5, max(newest, 0) + rng.randint(0, 2))
            wait_until(lambda: logged_step(out) >= target, f"step {target}")
            time.sleep(rng.uniform(0.0, 0.05))
        assert "{\"out\"" not in open(log).read(), "the run finished before its kill"
        os.kill(pid, signal.SIGKILL)
        assert worker.wait(pid) == -signal.SIGKILL
        kills += 1
        leftovers = temp_entries(out)
        in_save += bool(leftovers)
        after = check_complete_checkpoints(out)
        assert after >= newest, f"kill {kills}: checkpoint {newest} lost (newest now {after})"
        if newest >= 0:
            assert after >= 0
    print(f"KILLS {kills} IN_SAVE {in_save}")
    assert kills >= N_KILLS and in_save >= N_IN_SAVE, (kills, in_save)
    finish(worker, pid, log, out, reference)


@pytest.mark.slow
def test_sigint_and_sigterm_save_the_step_and_resume_bit_exactly(worker, reference, data_file,
                                                               tmp_path):
    rng = random.Random(99)
    out = str(tmp_path / "run")
    sigs = [signal.SIGINT, signal.SIGTERM] * 3
    for seg in range(len(sigs) + 1):
        log = str(tmp_path / f"seg{seg}.txt")
        argv = cli_args(data_file, out, save_every=3) + (["--resume"] if seg else [])
        pid = worker.start(argv, log)
        wait_until(started(log), f"run {seg} to start")
        if seg == len(sigs):
            break
        start = logged_step(out)
        target = min(ITERS - 5, start + 1 + rng.randint(0, 8))
        wait_until(lambda: logged_step(out) >= target, f"step {target}")
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(pid, sigs[seg])
        assert worker.wait(pid) == 130, open(log).read()
        # the step it stopped at is logged and saved, and nothing is left half-written
        newest = check_complete_checkpoints(out)
        # a signal during a step's evaluation saves that step with its record still pending
        # (the evaluation reruns on resume), so the log then ends one step earlier
        pending = "pending" in json.load(open(os.path.join(ckpt.list_checkpoints(out)[-1][1],
                                                           ckpt.STATE)))
        assert newest == logged_step(out) + pending >= target
        assert not temp_entries(out)
    finish(worker, pid, log, out, reference)


# ---- in-process: the exact moments the random kills rarely hit --------------------------

def small_cfg(data, out, **kw):
    base = dict(data=data, out=out, n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4,
                iters=16, save_every=5, eval_every=4, eval_iters=1, dropout=0.1, lr=3e-3,
                warmup=3, threads=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def run_quiet(cfg):
    return train(cfg, log=lambda *a: None)


@pytest.fixture(scope="module")
def small_reference(data_file, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("small_ref") / "run")
    run_quiet(small_cfg(data_file, out))
    return final_weights(out), [r["loss"] for r in log_records(out)]


def assert_same_as(out, reference):
    weights, losses = reference
    recs = log_records(out)
    assert [r["step"] for r in recs] == list(range(1, len(losses) + 1))
    assert [r["loss"] for r in recs] == losses
    assert final_weights(out) == weights


def test_an_interrupt_during_an_evaluation_finishes_it_on_resume(data_file, tmp_path,
                                                                 small_reference, monkeypatch):
    import tensorlite.train as T
    real = T._Run.evaluate

    def interrupted_at_8(self):
        if self.step == 8:
            raise KeyboardInterrupt
        return real(self)
    out = str(tmp_path / "run")
    monkeypatch.setattr(T._Run, "evaluate", interrupted_at_8)
    with pytest.raises(KeyboardInterrupt):
        run_quiet(small_cfg(data_file, out))
    monkeypatch.setattr(T._Run, "evaluate", real)
    state = json.load(open(os.path.join(latest_checkpoint(out), ckpt.STATE)))
    assert state["step"] == 8 and state["pending"]["eval"] is True
    assert logged_step(out) == 7  # step 8's record waits for its evaluation
    run_quiet(small_cfg(data_file, out, resume=True))
    assert_same_as(out, small_reference)
    assert "val_loss" in log_records(out)[7]


@pytest.mark.parametrize("times", [1, 2])
def test_a_signal_inside_a_step_lets_it_finish_a_second_one_saves_nothing(data_file, tmp_path,
                                                                          small_reference,
                                                                          monkeypatch, times):
    import tensorlite.train as T
    real = T.train_step

    def step_with_signals(model, *a, **kw):
        if T_state["calls"] == 6:  # step 7, between its forward and its update
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGTERM if times == 1 else signal.SIGINT)
        T_state["calls"] += 1
        return real(model, *a, **kw)
    T_state = {"calls": 0}
    out = str(tmp_path / "run")
    monkeypatch.setattr(T, "train_step", step_with_signals)
    with pytest.raises(KeyboardInterrupt):
        run_quiet(small_cfg(data_file, out))
    monkeypatch.setattr(T, "train_step", real)
    if times == 1:  # the step was completed, logged and saved
        assert logged_step(out) == 7 and latest_checkpoint(out).endswith("step-000007")
    else:  # stopped halfway: the newest checkpoint (step 5) stands, the log is cut back on resume
        assert latest_checkpoint(out).endswith("step-000005")
    run_quiet(small_cfg(data_file, out, resume=True))
    assert_same_as(out, small_reference)


def test_a_torn_last_log_line_is_dropped_with_a_warning(data_file, tmp_path, small_reference):
    out = str(tmp_path / "run")
    run_quiet(small_cfg(data_file, out, stop_after=10))
    with open(os.path.join(out, ckpt.LOG), "a") as f:
        f.write('{"step": 11, "loss": 3.1')  # what kill -9 in the middle of a write leaves
    said = []
    train(small_cfg(data_file, out, resume=True), log=said.append)
    assert any("dropped a torn last line" in s for s in said), said
    assert_same_as(out, small_reference)


def test_stale_temp_files_are_removed_and_only_ours(data_file, tmp_path, small_reference):
    out = tmp_path / "run"
    run_quiet(small_cfg(data_file, str(out), stop_after=6))
    ours = [out / f"{TEMP_PREFIX}config.json.123.abcd", out / ".model.safetensors.k2j4_x9a.tmp",
            out / "checkpoints" / f"{TEMP_PREFIX}step-000009.77.beef"]
    theirs = [out / "notes.txt", out / ".model.safetensors.tmp", out / "checkpoints" / "mine"]
    for p in ours[:2] + theirs[:2]:
        p.write_bytes(b"x" * 100)
    ours[2].mkdir()
    (ours[2] / ckpt.MODEL).write_bytes(b"half")
    theirs[2].mkdir()
    run_quiet(small_cfg(data_file, str(out), resume=True))
    assert not any(p.exists() for p in ours)
    assert all(p.exists() for p in theirs)
    assert_same_as(str(out), small_reference)


def test_keep_last_keeps_that_many_complete_checkpoints(data_file, tmp_path):
    out = str(tmp_path / "run")
    run_quiet(small_cfg(data_file, out, save_every=1, keep_last=3))
    steps = [s for s, _ in ckpt.list_checkpoints(out)]
    assert steps == [14, 15, 16]
    assert open(os.path.join(out, "checkpoints", "latest")).read() == "step-000016\n"


def test_the_folders_not_the_pointer_decide_the_newest(data_file, tmp_path):
    out = str(tmp_path / "run")
    run_quiet(small_cfg(data_file, out, stop_after=10))
    # as if killed between the rename of step 10 and the pointer's update
    with open(os.path.join(out, "checkpoints", "latest"), "w") as f:
        f.write("step-000005\n")
    assert latest_checkpoint(out).endswith("step-000010")


def test_a_run_in_the_old_flat_layout_loads_and_resumes(data_file, tmp_path, small_reference):
    from tensorlite.generate import load_run
    out = tmp_path / "run"
    run_quiet(small_cfg(data_file, str(out), stop_after=10))
    # rewrite it as the previous version left runs: the three files in OUT itself
    src = latest_checkpoint(str(out))
    for name in (ckpt.MODEL, ckpt.OPTIM, ckpt.STATE):
        os.replace(os.path.join(src, name), out / name)
    import shutil
    shutil.rmtree(out / "checkpoints")
    assert latest_checkpoint(str(out)) == str(out)
    model, _, _ = load_run(str(out))
    assert model.config.n_layer == 1
    run_quiet(small_cfg(data_file, str(out), resume=True))
    assert_same_as(str(out), small_reference)


def test_a_run_killed_before_its_first_checkpoint_resumes_from_the_start(data_file, tmp_path,
                                                                         small_reference):
    out = tmp_path / "run"
    run_quiet(small_cfg(data_file, str(out), stop_after=3))
    import shutil
    shutil.rmtree(out / "checkpoints")  # only config, tokenizer and log made it to disk
    run_quiet(small_cfg(data_file, str(out), resume=True))
    assert_same_as(str(out), small_reference)
