"""A training run's directory: weights, optimizer, RNG and config, each file written
atomically (temp file + rename). trainer_state.json is written last and names the step,
so a run interrupted mid-save still resumes from a consistent earlier state... or fails
loudly if the files disagree.

    DIR/model.safetensors       model weights (nanoGPT key names)
    DIR/optimizer.safetensors   AdamW moments, "state.{i}.{exp_avg|exp_avg_sq}"
    DIR/trainer_state.json      step, optimizer hyper-parameters and steps, RNG states
    DIR/config.json             model and training configuration
    DIR/tokenizer.json          the tokenizer
    DIR/log.jsonl, DIR/loss.png the training log and its plot
"""
import json
import os

import numpy as np

from .backend.device import to_numpy
from .serialization import CheckpointError, atomic_write_bytes, load_file, save_file

MODEL, OPTIM, STATE, CONFIG, TOKENIZER = ("model.safetensors", "optimizer.safetensors",
                                          "trainer_state.json", "config.json", "tokenizer.json")


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


def save_model(model, path, step=None):
    arrays = {k: to_numpy(v._data) for k, v in model.state_dict().items()}
    save_file(arrays, path, metadata={"format": "tensorlite", "step": "" if step is None else str(step)})


def load_model_arrays(path):
    arrays, meta = load_file(path)
    return arrays, meta


def save_checkpoint(out_dir, model, optimizer, trainer_state):
    step = trainer_state["step"]
    save_model(model, os.path.join(out_dir, MODEL), step)
    sd = optimizer.state_dict()
    arrays, scalars = {}, {}
    for i, s in sd["state"].items():
        for k, v in s.items():
            if isinstance(v, np.ndarray):
                arrays[f"state.{i}.{k}"] = v
            else:
                scalars.setdefault(str(i), {})[k] = v
    save_file(arrays, os.path.join(out_dir, OPTIM), metadata={"step": str(step)})
    state = dict(trainer_state)
    state["optimizer"] = {"param_groups": sd["param_groups"], "scalars": scalars}
    write_json(os.path.join(out_dir, STATE), state)


def load_checkpoint(out_dir, model, optimizer):
    """Restore model and optimizer in place; return the trainer state dict."""
    state = read_json(os.path.join(out_dir, STATE), "trainer state")
    arrays, meta = load_file(os.path.join(out_dir, MODEL))
    if meta.get("step") != str(state["step"]):
        raise CheckpointError(f"{out_dir}: model.safetensors is from step {meta.get('step')} but "
                              f"trainer_state.json from step {state['step']} (interrupted save?)")
    model.load_state_dict(arrays)
    opt_arrays, ometa = load_file(os.path.join(out_dir, OPTIM))
    if ometa.get("step") != str(state["step"]):
        raise CheckpointError(f"{out_dir}: optimizer.safetensors is from step {ometa.get('step')} "
                              f"but trainer_state.json from step {state['step']}")
    st = {}
    for key, a in opt_arrays.items():
        _, i, name = key.split(".", 2)
        st.setdefault(int(i), {})[name] = a
    for i, sc in state["optimizer"]["scalars"].items():
        st.setdefault(int(i), {}).update(sc)
    optimizer.load_state_dict({"state": st, "param_groups": state["optimizer"]["param_groups"]})
    return state
