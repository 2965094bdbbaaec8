"""A training run's folder, and checkpoints that survive kill -9 at any moment.

    OUT/config.json              model and training configuration (+ the data file's sha256)
    OUT/tensorlite_tokenizer.json  the tokenizer, in tensorlite's own JSON (not Hugging Face's
                                 tokenizer.json format, hence not that name; runs written
                                 before this name, with OUT/tokenizer.json, still load)
    OUT/log.jsonl, OUT/loss.png  the training log and its plot
    OUT/checkpoints/step-000120/ one checkpoint, a unit:
        model.safetensors        model weights (nanoGPT key names)
        optimizer.safetensors    AdamW moments, "state.{i}.{exp_avg|exp_avg_sq}"
        trainer_state.json       step, optimizer hyper-parameters and steps, RNG states
    OUT/checkpoints/latest       the newest step folder's name, one line (for people and scripts)

A save writes the three files into a temp folder, fsyncs each and the folder, then renames
the folder to its step-N name: the rename is the commit, so a step-N folder is complete by
construction and the previous one is untouched until it is. The `latest` file is replaced
(temp + fsync + rename) after that, and older checkpoints beyond keep_last are deleted only
then. tensorlite itself trusts the folders, not the pointer: latest_checkpoint() takes the
highest complete step folder, so a crash between the rename and the pointer's update loses
nothing. Leftovers of a killed save carry serialization.TEMP_PREFIX in their name, and
clean_stale() removes them (and only them) when the next run starts.

Runs written before this layout (the three files directly in OUT) still load and resume;
their next checkpoint goes into OUT/checkpoints/.
"""
import json
import os
import re
import secrets
import shutil
import time

from .backend.device import to_numpy
from .errors import UsageError
from .serialization import (TEMP_PREFIX, CheckpointError, atomic_write_bytes, fsync_dir,
                            load_file, save_file, write_file)

MODEL, OPTIM, STATE, CONFIG, TOKENIZER = ("model.safetensors", "optimizer.safetensors",
                                          "trainer_state.json", "config.json",
                                          "tensorlite_tokenizer.json")
OLD_TOKENIZER = "tokenizer.json"  # what runs wrote before; Hugging Face's name for its format
LOG, CHECKPOINTS, LATEST, LOCK = "log.jsonl", "checkpoints", "latest", ".lock"
_STEP_DIR = re.compile(r"^step-(\d+)$")
# what earlier versions (tempfile.mkstemp: 8 random characters) and data/text.py's token
# cache leave behind when killed mid-write; nothing else in a run folder is named like this
_LEGACY_TEMP = re.compile(r"^\.(model\.safetensors|optimizer\.safetensors|trainer_state\.json|"
                          r"config\.json|tokenizer\.json|log\.jsonl)\.[a-z0-9_]{8}\.tmp$"
                          r"|^.+\.[0-9a-f]{16}\.tokens\.npy[a-z0-9_]{8}\.tmp$")
# the files and folders a run creates or truncates in OUT: none may be a symlink
RUN_NAMES = (CONFIG, TOKENIZER, OLD_TOKENIZER, LOG, "loss.png", "stats.png", CHECKPOINTS, "tensorboard", LOCK,
             MODEL, OPTIM, STATE)
PAUSE_ENV = "TENSORLITE_TEST_PAUSE_IN_SAVE"


def tokenizer_file(out):
    """The run's tokenizer file: OUT/tensorlite_tokenizer.json, or an older run's
    OUT/tokenizer.json."""
    path = os.path.join(out, TOKENIZER)
    old = os.path.join(out, OLD_TOKENIZER)
    return old if not os.path.isfile(path) and os.path.isfile(old) else path


def _test_pause():
    # test hook (tests/test_crash_safety.py): seconds to sleep between the phases of a save,
    # so that a kill lands inside one; unset in normal use
    s = os.environ.get(PAUSE_ENV)
    if s:
        time.sleep(float(s))


def write_json(path, obj):
    atomic_write_bytes(path, [json.dumps(obj, indent=2, sort_keys=True).encode()])


def read_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted {what} ({e})") from None


def step_dir_name(step):
    return f"step-{step:06d}"


# ---- finding checkpoints -------------------------------------------------------------------

def _is_complete(d):
    return (os.path.isdir(d) and not os.path.islink(d)
            and all(os.path.isfile(os.path.join(d, n)) for n in (MODEL, OPTIM, STATE)))


def list_checkpoints(out_dir):
    """[(step, folder)] of the complete checkpoints in OUT/checkpoints, oldest first."""
    root = os.path.join(out_dir, CHECKPOINTS)
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for n in names:
        m = _STEP_DIR.match(n)
        if m and _is_complete(os.path.join(root, n)):
            found.append((int(m.group(1)), os.path.join(root, n)))
    return sorted(found)


def latest_checkpoint(out_dir):
    """The folder of the newest complete checkpoint of the run in out_dir: a step folder
    in OUT/checkpoints, or OUT itself for a run written in the old flat layout; None when
    the run has none yet."""
    found = list_checkpoints(out_dir)
    if found:
        return found[-1][1]
    return out_dir if os.path.isfile(os.path.join(out_dir, STATE)) else None


def has_run(out_dir):
    """Whether out_dir holds a run: its config (written last when a run starts) or a checkpoint."""
    return os.path.isfile(os.path.join(out_dir, CONFIG)) or latest_checkpoint(out_dir) is not None


def model_file(out_dir):
    """The weights a loader should read for the run in out_dir (the newest checkpoint's)."""
    d = latest_checkpoint(out_dir)
    if d is None:
        raise FileNotFoundError(f"{out_dir} holds no checkpoint yet ({CHECKPOINTS}/step-N/{MODEL})")
    return os.path.join(d, MODEL)


# ---- saving --------------------------------------------------------------------------------

def save_model(model, path, step=None):
    arrays = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
    save_file(arrays, path, metadata={"format": "tensorlite", "step": "" if step is None else str(step)})


def load_model_arrays(path):
    arrays, meta = load_file(path)
    return arrays, meta


def _optimizer_payload(optimizer):
    sd = optimizer.state_dict()
    arrays, scalars = {}, {}
    for i, s in sd["state"].items():
        for k, v in s.items():
            if hasattr(v, "shape") and getattr(v, "ndim", 0) > 0:
                arrays[f"state.{i}.{k}"] = to_numpy(v)
            else:
                scalars.setdefault(str(i), {})[k] = v.item() if hasattr(v, "item") else v
    return arrays, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(out_dir, model, optimizer, trainer_state, keep_last=None):
    """Publish OUT/checkpoints/step-N (N = trainer_state["step"]) as one unit, point
    `latest` at it, then delete all but the newest keep_last (None: keep all). Returns the
    folder. A step already published is left as it is: a run reaches a step only one way."""
    step = trainer_state["step"]
    root = os.path.join(out_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        os.makedirs(root, exist_ok=True)
        fsync_dir(out_dir)
    name = step_dir_name(step)
    final = os.path.join(root, name)
    if not _is_complete(final):
        if os.path.lexists(final):  # tampered with, or not ours: out of the way, not into it
            _remove(final, root)
        _publish(root, final, name, model, optimizer, trainer_state)
    _test_pause()
    atomic_write_bytes(os.path.join(root, LATEST), [(name + "\n").encode()])
    if keep_last is not None:
        for _, old in list_checkpoints(out_dir)[:-keep_last]:
            if old != final:
                _remove(old, root)
    return final


def _publish(root, final, name, model, optimizer, trainer_state):
    tmp = os.path.join(root, f"{TEMP_PREFIX}{name}.{os.getpid()}.{secrets.token_hex(4)}")
    os.mkdir(tmp)
    try:
        step = str(trainer_state["step"])
        arrays = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
        save_file(arrays, os.path.join(tmp, MODEL), {"format": "tensorlite", "step": step}, atomic=False)
        _test_pause()
        opt_arrays, opt_json = _optimizer_payload(optimizer)
        save_file(opt_arrays, os.path.join(tmp, OPTIM), {"step": step}, atomic=False)
        _test_pause()
        state = dict(trainer_state, optimizer=opt_json)
        _write_new_json(os.path.join(tmp, STATE), state)
        fsync_dir(tmp)
        _test_pause()
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(root)


def _write_new_json(path, obj):
    write_file(path, [json.dumps(obj, indent=2, sort_keys=True).encode()])


def _remove(path, root):
    # renamed to a temp name first: a kill during the rmtree leaves a folder that the next
    # start removes, never a step-N folder with some of its files gone
    trash = os.path.join(root, f"{TEMP_PREFIX}del-{os.path.basename(path)}.{secrets.token_hex(4)}")
    os.rename(path, trash)
    _test_pause()
    if os.path.isdir(trash) and not os.path.islink(trash):
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.unlink(trash)


def clean_stale(out_dir):
    """Remove the temp files and half-written checkpoint folders that a killed run left in
    out_dir and out_dir/checkpoints (only names made by tensorlite); returns their names."""
    removed = []
    for d in (out_dir, os.path.join(out_dir, CHECKPOINTS)):
        try:
            names = os.listdir(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for n in names:
            if not (n.startswith(TEMP_PREFIX) or (d == out_dir and _LEGACY_TEMP.match(n))):
                continue
            p = os.path.join(d, n)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except FileNotFoundError:
                    pass
            removed.append(os.path.relpath(p, out_dir))
    return removed


# ---- loading -------------------------------------------------------------------------------

def load_model_state(model, arrays, path):
    """Copy arrays into model, refusing (naming the tensor) one whose dtype kind differs
    from its parameter's: an integer tensor is never silently cast into float weights."""
    own = model.state_dict()
    for k, a in arrays.items():
        if k in own and a.dtype.kind != own[k]._data.dtype.kind:
            raise CheckpointError(f"{path}: tensor {k!r} has dtype {a.dtype}, but the model's "
                                  f"{k} is {own[k]._data.dtype}")
    try:
        model.load_state_dict(arrays)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: {e}") from None


def load_checkpoint(ckpt_dir, model, optimizer):
    """Restore model and optimizer in place from a checkpoint folder (a step folder, or an
    old-layout run folder); return the trainer state dict."""
    spath = os.path.join(ckpt_dir, STATE)
    state = read_json(spath, "trainer state")
    try:
        step = state["step"]
        groups, scalars = state["optimizer"]["param_groups"], state["optimizer"]["scalars"]
        ok = isinstance(step, int) and step >= 0 and isinstance(groups, list) and \
            isinstance(scalars, dict) and isinstance(state.get("data_rng"), dict)
    except (KeyError, TypeError):
        ok = False
    if not ok:
        raise CheckpointError(f"{spath}: not a trainer state (step, optimizer, data_rng)")
    mpath = os.path.join(ckpt_dir, MODEL)
    arrays, meta = load_file(mpath)
    if meta.get("step") != str(step):
        raise CheckpointError(f"{ckpt_dir}: model.safetensors is from step {meta.get('step')} but "
                              f"trainer_state.json from step {step} (interrupted save?)")
    load_model_state(model, arrays, mpath)
    opath = os.path.join(ckpt_dir, OPTIM)
    opt_arrays, ometa = load_file(opath)
    if ometa.get("step") != str(step):
        raise CheckpointError(f"{ckpt_dir}: optimizer.safetensors is from step {ometa.get('step')} "
                              f"but trainer_state.json from step {step}")
    st = {}
    for key, a in opt_arrays.items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit() or a.dtype.kind != "f":
            raise CheckpointError(f"{opath}: unexpected tensor {key!r} ({a.dtype})")
        st.setdefault(int(parts[1]), {})[parts[2]] = a
    try:
        for i, sc in scalars.items():
            st.setdefault(int(i), {}).update(sc)
        optimizer.load_state_dict({"state": st, "param_groups": groups})
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{opath}: does not fit the optimizer ({e})") from None
    return state


# ---- files in a run folder -----------------------------------------------------------------

def refuse_links(out_dir):
    """A UsageError when a file or folder that a run creates or truncates in out_dir is a
    symlink: writing through it would change a file outside the run."""
    for n in RUN_NAMES:
        p = os.path.join(out_dir, n)
        if os.path.islink(p):
            raise UsageError(f"{p} is a symbolic link; tensorlite writes only regular files in a "
                             "run folder: remove the link or choose another --out")
    p = os.path.join(out_dir, CHECKPOINTS, LATEST)
    if os.path.islink(p):
        raise UsageError(f"{p} is a symbolic link; remove it")


def _open_flags(truncate):
    return (os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
            | getattr(os, "O_CLOEXEC", 0) | (os.O_TRUNC if truncate else 0))


def open_log(path, truncate=False):
    """The log for appending (emptied first when truncate); never follows a symlink."""
    try:
        fd = os.open(path, _open_flags(truncate), 0o666)
    except OSError as e:
        if os.path.islink(path):
            raise UsageError(f"{path} is a symbolic link; tensorlite does not write through "
                             "links in a run folder") from None
        raise UsageError(f"cannot open {path}: {e.strerror}") from None
    return os.fdopen(fd, "a", encoding="utf-8")


def lock_run(out_dir):
    """Hold OUT/.lock exclusively for as long as the returned file stays open, so that two
    runs never write (or clean up) one folder at once. The kernel drops the lock when the
    process dies, kill -9 included."""
    f = open_log(os.path.join(out_dir, LOCK))
    try:
        import fcntl
    except ImportError:  # no flock (Windows): unguarded, as before
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UsageError(f"{out_dir} is in use by another tensorlite train (it holds "
                         f"{LOCK}); wait for it to finish") from None
    return f


def truncate_log(path, step, warn=print):
    """Keep the records of steps <= step (those after the checkpoint will run again). A
    torn last line (the process was killed while writing it) is dropped with a warning."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    lines = data.split(b"\n")
    keep = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            s = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            torn = not any(ln.strip() for ln in lines[i + 1:])
            warn(f"warning: {path}: dropped " + ("a torn last line (the run was killed while "
                 "writing it)" if torn else f"unreadable line {i + 1}"))
            continue
        if isinstance(s, int) and s <= step:
            keep.append(line + b"\n")
    if b"".join(keep) != data:
        atomic_write_bytes(path, keep)
