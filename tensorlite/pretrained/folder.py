"""A Hugging Face model folder on disk: finding it, reading config.json and the safetensors
weights (one file or a sharded index), checking the tensors against what a config needs,
and writing a folder back. Nothing here knows a particular architecture.

Every refusal is one line (PretrainedError) that names the folder, the tensor and what was
wrong, so that a user can act on it without reading a traceback."""
import json
import os
import re
import struct

import numpy as np

from ..serialization import (
    _FROM_ST,
    CheckpointError,
    atomic_write_bytes,
    load_file,
    save_file,
)

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
HF_METADATA = {"format": "pt"}  # transformers refuses safetensors files without a known format


class PretrainedError(ValueError):
    """A folder tensorlite cannot load (or a model it cannot save in a folder's layout)."""


def resolve_folder(path):
    """The absolute path of a local model folder, or a PretrainedError saying how to get one."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return os.path.abspath(p)
    if os.path.isfile(p):
        raise PretrainedError(f"{p} is a file; pass the folder that holds config.json and "
                              f"{WEIGHTS}")
    repo = p if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", p) else "gpt2"  # a hub id, or an example
    raise PretrainedError(
        f"{p!r} is not a local folder, and tensorlite never downloads: on a machine with "
        f"internet run `huggingface-cli download {repo} --local-dir DIR` and pass DIR")


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PretrainedError(f"{path} does not exist: a Hugging Face model folder has one") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PretrainedError(f"{path} is not valid JSON ({e})") from None


def read_config(folder):
    cfg = read_json(os.path.join(folder, CONFIG))
    if not isinstance(cfg, dict):
        raise PretrainedError(f"{os.path.join(folder, CONFIG)}: expected a JSON object")
    return cfg


def model_type_of(folder, cfg):
    mt = cfg.get("model_type")
    if mt is None and isinstance(cfg.get("model"), dict):
        raise PretrainedError(f"{folder} looks like a `tensorlite train` run (its config.json has "
                              "no model_type); load it with tensorlite.checkpoint, not from_pretrained")
    return mt


# ---- reading weights -------------------------------------------------------------------------
def open_model(path, model_type, loader):
    """(folder, its config.json) for a folder of model_type, else one error naming loader
    (e.g. "GPT.from_pretrained loads GPT-2 folders") and the dispatching alternative."""
    folder = resolve_folder(path)
    hf = read_config(folder)
    mt = model_type_of(folder, hf)
    if mt != model_type:
        raise PretrainedError(f"{folder}: model_type {mt!r} is not {model_type!r} ({loader}; "
                              "tensorlite.from_pretrained dispatches by model_type)")
    return folder, hf


def _header(path):
    """{name: (dtype string, shape tuple)} from a safetensors header, without reading the data:
    every check below runs before the (possibly large) tensors are read."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise PretrainedError(f"{path}: truncated (only {len(head)} bytes)")
            (n,) = struct.unpack("<Q", head)
            raw = f.read(n)
    except FileNotFoundError:
        raise PretrainedError(f"{path} does not exist") from None
    try:
        header = json.loads(raw.decode())
        header.pop("__metadata__", None)
        return {k: (str(v["dtype"]), tuple(int(s) for s in v["shape"])) for k, v in header.items()}
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        raise PretrainedError(f"{path}: not a safetensors file (unreadable header)") from None


def weight_files(folder):
    """{tensor name: file name} for the folder's weights, single-file or sharded."""
    if os.path.isfile(os.path.join(folder, WEIGHTS)):
        return {k: WEIGHTS for k in _header(os.path.join(folder, WEIGHTS))}
    index_path = os.path.join(folder, INDEX)
    if os.path.isfile(index_path):
        wm = read_json(index_path).get("weight_map")
        if not isinstance(wm, dict):
            raise PretrainedError(f"{index_path}: no \"weight_map\" object")
        for fname in sorted(set(wm.values())):
            names = _header(os.path.join(folder, fname))
            for k, f in wm.items():
                if f == fname and k not in names:
                    raise PretrainedError(f"{index_path} puts tensor {k!r} in {fname}, which does "
                                          "not hold it")
        return dict(wm)
    if any(os.path.isfile(os.path.join(folder, f)) for f in ("pytorch_model.bin", "tf_model.h5")):
        raise PretrainedError(
            f"{folder} has only pickled/TF weights; tensorlite reads safetensors only (no pickle). "
            "Convert once with transformers: AutoModel.from_pretrained(DIR).save_pretrained(DIR)")
    raise PretrainedError(f"{folder} has neither {WEIGHTS} nor {INDEX}")


def tensor_infos(folder, files):
    """{name: (dtype, shape, file)} for every tensor listed in files."""
    out = {}
    for fname in sorted(set(files.values())):
        for k, (dtype, shape) in _header(os.path.join(folder, fname)).items():
            if files.get(k) == fname:
                out[k] = (dtype, shape, fname)
    return out


def canonical_names(folder, infos, rename):
    """({canonical name: info}, {canonical name: stored name}) for the stored tensors;
    rename(stored) gives the model's name, or None for a tensor to skip (buffers, heads).
    Two stored tensors that rename to one name are refused, naming both."""
    found, stored = {}, {}
    for k, info in infos.items():
        c = rename(k)
        if c is None:
            continue
        if c in found:
            raise PretrainedError(f"{folder}: tensor {c!r} is stored twice (as {stored[c]!r} "
                                  f"and {k!r})")
        found[c], stored[c] = info, k
    return found, stored


def check_tensors(folder, found, expected, describe):
    """found: {name: (dtype, shape, file)} (names already in the expected spelling);
    expected: {name: shape}. Raises one line for the first problem (and counts the rest)."""
    problems = []
    for k, shape in expected.items():
        if k not in found:
            problems.append(f"tensor {k!r} {shape} is missing from the weights "
                            f"(the config asks for {describe})")
        elif found[k][1] != shape:
            problems.append(f"tensor {k!r} has shape {found[k][1]} in {found[k][2]}, but the "
                            f"config ({describe}) needs {shape}")
    for k in found:
        if k not in expected:
            problems.append(f"unexpected tensor {k!r} {found[k][1]} in {found[k][2]}: not part of "
                            f"a model with this config ({describe})")
    for k in expected:
        if k in found and not is_float(found[k][0]):
            problems.append(_dtype_problem(k, found[k][0], found[k][2]))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise PretrainedError(f"{folder}: {problems[0]}{more}")


def is_float(dtype):
    return dtype in _FROM_ST and _FROM_ST[dtype].kind == "f"


def _dtype_problem(name, dtype, fname):
    known = sorted(k for k in _FROM_ST if _FROM_ST[k].kind == "f")
    why = "which tensorlite's safetensors reader cannot read" if dtype not in _FROM_ST \
        else "which is not a floating-point type"
    return (f"tensor {name!r} in {fname} has dtype {dtype}, {why} (weights must be one of "
            f"{', '.join(known)}); convert the folder to float32 first")


def load_arrays(folder, files, wanted):
    """{name: float32 array} for wanted = {name: stored name}; files maps each stored name to
    the file holding it. Each file is read once."""
    out = {}
    for fname in sorted({files[s] for s in wanted.values()}):
        path = os.path.join(folder, fname)
        try:
            arrays, _ = load_file(path)
        except CheckpointError as e:
            raise PretrainedError(str(e)) from None
        for name, s in wanted.items():
            if files[s] == fname:
                out[name] = arrays[s].astype(np.float32, copy=False)
    return out


# ---- writing ---------------------------------------------------------------------------------
def write_folder(path, config, tensors):
    """config.json + model.safetensors in path (created if needed), each written to a temp file
    and renamed into place. The weights go first: a crash between the two leaves the new
    weights beside the old config, never a config describing weights that are not there."""
    os.makedirs(path, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    save_file(arrays, os.path.join(path, WEIGHTS), metadata=HF_METADATA)
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(os.path.join(path, CONFIG), [text.encode()])
