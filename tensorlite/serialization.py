"""Tensors to and from the safetensors format, written here in a few lines of NumPy.

The format: 8 bytes (little-endian u64) = length N of a JSON header; the header maps
each name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the byte
buffer that follows), plus an optional "__metadata__" of strings. No pickle anywhere:
loading a file can only ever produce arrays. Files are written to a temporary file and
renamed into place, so a crash never leaves a half-written checkpoint.
"""
import json
import os
import struct
import tempfile

import numpy as np

_TO_ST = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16",
          np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.uint8): "U8",
          np.dtype(np.bool_): "BOOL", np.dtype(np.uint16): "U16", np.dtype(np.uint32): "U32"}
_FROM_ST = {v: k for k, v in _TO_ST.items()}


class CheckpointError(ValueError):
    """A file that is not a valid safetensors file (truncated, corrupted, wrong layout)."""


def save_file(tensors, path, metadata=None):
    """tensors: {name: array or Tensor}. metadata: {str: str}."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = tensors[name]
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            a = a.copy(order="C")
        if a.dtype not in _TO_ST:
            raise TypeError(f"save_file: tensor {name!r} has unsupported dtype {a.dtype}")
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _TO_ST[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the format pads the header to 8-byte alignment
    atomic_write_bytes(path, [struct.pack("<Q", len(h)), h] + blobs)


def atomic_write_bytes(path, chunks):
    """Write chunks to a temp file in the same folder, fsync, then rename over path."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_file(path):
    """-> ({name: numpy array}, metadata dict). Raises CheckpointError naming the file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} does not exist") from None
    if len(data) < 8:
        raise CheckpointError(f"{path}: truncated (only {len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise CheckpointError(f"{path}: header length {n} exceeds the file size {len(data)} "
                              "(truncated or not a safetensors file)")
    try:
        header = json.loads(data[8:8 + n].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted header ({e})") from None
    meta = header.pop("__metadata__", {}) or {}
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        try:
            dtype = _FROM_ST[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: bad header entry for {name!r}") from None
        count = int(np.prod(shape)) if shape else 1
        if end > len(body) or begin < 0 or end - begin != count * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor {name!r} needs bytes [{begin}, {end}) but the "
                                  f"data section has {len(body)} bytes (truncated or corrupted)")
        out[name] = np.frombuffer(body[begin:end], dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)
    return out, meta


def save(tensors, path, metadata=None):
    """tensorlite.save: a dict of tensors to a .safetensors file."""
    save_file({k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in tensors.items()},
              path, metadata)


def load(path, device=None):
    """tensorlite.load: a .safetensors file to a dict of tensors."""
    from .factories import tensor
    arrays, _ = load_file(path)
    return {k: tensor(v, device=device) for k, v in arrays.items()}
