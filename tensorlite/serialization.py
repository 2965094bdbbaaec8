"""Tensors to and from the safetensors format, written here in NumPy, plus the crash-safe
file writes that checkpoints are built from.

The format: 8 bytes (little-endian u64) = length N of a JSON header; the header maps
each name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets into the byte
buffer that follows), plus an optional "__metadata__" of strings. No pickle anywhere:
loading a file can only ever produce arrays.

The reader is strict, because a checkpoint is read back into a model that trusts it: the
header must be one JSON object without duplicate keys, every entry must have exactly the
three fields with the right types, sizes must agree with dtype x shape, and the byte ranges
must tile the data section exactly (no gaps, overlaps or trailing bytes). Anything else is
refused with a CheckpointError naming the file and the tensor or field.

Writes go to a temp file beside the target (created with the permissions the final file
would get: 0o666 under the umask, or the mode of the file being replaced), are fsynced,
renamed over the target, and the folder is fsynced, so a crash leaves the old file or the
whole new one. Temp names start with TEMP_PREFIX so that the next run can tell its own
leftovers from anything else in the folder.
"""
import errno
import json
import math
import os
import secrets
import stat
import struct
import sys

import numpy as np

_TO_ST = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64", np.dtype(np.float16): "F16",
          np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
          np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL",
          np.dtype(np.uint16): "U16", np.dtype(np.uint32): "U32", np.dtype(np.uint64): "U64"}
# NumPy's own dtypes only (pretrained/folder.py asks these for .kind); BF16 comes from
# ml_dtypes when it is installed, see _bf16()
_FROM_ST = {v: k for k, v in _TO_ST.items()}
DTYPE_NAMES = sorted(_FROM_ST) + ["BF16"]

TEMP_PREFIX = ".tl-tmp-"
# the reference implementation's limit: a header is a table of contents, never data, and a
# corrupted length must not make us allocate gigabytes before we can tell
MAX_HEADER_BYTES = 100_000_000
_FIELDS = ("data_offsets", "dtype", "shape")
_LITTLE = sys.byteorder == "little"


class CheckpointError(ValueError):
    """A file that is not a valid safetensors file (truncated, corrupted, wrong layout)."""


def _bf16():
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(ml_dtypes.bfloat16)


def _st_name(dtype):
    if dtype in _TO_ST:
        return _TO_ST[dtype]
    if dtype == _bf16():
        return "BF16"
    return None


def _np_dtype(path, name, st):
    if st in _FROM_ST:
        return _FROM_ST[st]
    if st == "BF16":
        d = _bf16()
        if d is None:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype BF16, which needs the "
                                  "ml_dtypes package to be read: pip install ml_dtypes")
        return d
    raise CheckpointError(f"{path}: tensor {name!r} has dtype {st!r}, which tensorlite cannot "
                          f"read (known: {', '.join(DTYPE_NAMES)})")


# ---- writing -------------------------------------------------------------------------------

def save_file(tensors, path, metadata=None, fsync=True, atomic=True):
    """tensors: {name: array or Tensor}. metadata: {str: str}. atomic=False writes path
    directly (it must not exist yet): for a file inside a folder that is itself published
    by a rename."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        if not isinstance(name, str) or name == "__metadata__":
            raise TypeError(f"save_file: tensor names must be strings other than "
                            f"'__metadata__', got {name!r}")
        a = np.asarray(tensors[name])
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
            a = a.copy(order="C")
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        st = _st_name(a.dtype)
        if st is None:
            raise TypeError(f"save_file: tensor {name!r} has unsupported dtype {a.dtype}")
        b = (a if _LITTLE or a.dtype.itemsize == 1 else a.astype(a.dtype.newbyteorder("<"))).tobytes()
        header[name] = {"dtype": st, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the format pads the header to 8-byte alignment
    chunks = [struct.pack("<Q", len(h)), h] + blobs
    (atomic_write_bytes if atomic else write_file)(path, chunks, fsync=fsync)


def _create_mode(path):
    # the file we replace keeps its permissions; a new one gets 0o666 minus the umask,
    # which os.open applies itself (tempfile.mkstemp would force 0o600)
    try:
        st = os.lstat(path)
    except OSError:
        return 0o666
    return stat.S_IMODE(st.st_mode) if stat.S_ISREG(st.st_mode) else 0o666


def temp_name(path):
    """A fresh name beside path that marks the file as one of our temp files."""
    d, base = os.path.split(os.path.abspath(path))
    return os.path.join(d, f"{TEMP_PREFIX}{base}.{os.getpid()}.{secrets.token_hex(4)}")


def open_new(path, mode=0o666):
    """A binary file object on a new file at path; never follows a symlink."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
        getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, mode)
    if mode != 0o666:
        os.fchmod(fd, mode)  # an explicit mode is meant as given, not under the umask
    return os.fdopen(fd, "wb")


def write_file(path, chunks, fsync=True):
    """Write chunks to a new file at path (which must not exist), fsynced."""
    with open_new(path) as f:
        for c in chunks:
            f.write(c)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def fsync_dir(path):
    """Make the names in a folder (a rename, a new file) survive a power cut."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # e.g. Windows, where folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def atomic_write_bytes(path, chunks, fsync=True):
    """Write chunks to a temp file in the same folder, fsync, rename over path, fsync the
    folder. A symlink at path is replaced, never written through."""
    tmp = temp_name(path)
    mode = _create_mode(path)
    try:
        with open_new(tmp, mode) as f:
            for c in chunks:
                f.write(c)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        fsync_dir(os.path.dirname(os.path.abspath(path)))


# ---- reading -------------------------------------------------------------------------------

def _no_duplicates(path):
    def hook(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                raise CheckpointError(f"{path}: the header names {k!r} twice")
            seen.add(k)
        return dict(pairs)
    return hook


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def read_header(path, f, size):
    """(entries {name: (np dtype, shape, begin, end)} in file order, metadata, data start)."""
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{path}: truncated (only {len(head)} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{path}: header length {n} is over the format's limit of "
                              f"{MAX_HEADER_BYTES} bytes (corrupted or not a safetensors file)")
    if n > size - 8:
        raise CheckpointError(f"{path}: header length {n} exceeds the file size {size} "
                              "(truncated or not a safetensors file)")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: corrupted header ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupted header (nested too deeply)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the header must be a JSON object, got "
                              f"{type(header).__name__}")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise CheckpointError(f"{path}: __metadata__ must map strings to strings")
    entries = {name: _entry(path, name, info) for name, info in header.items()}
    return entries, meta, 8 + n


def _entry(path, name, info):
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict):
        raise CheckpointError(f"{where}: its header entry must be an object with "
                              f"{', '.join(_FIELDS)}, got {type(info).__name__}")
    missing = [k for k in _FIELDS if k not in info]
    extra = sorted(k for k in info if k not in _FIELDS)
    if missing or extra:
        what = f"no {missing[0]}" if missing else f"an unknown field {extra[0]!r}"
        raise CheckpointError(f"{where}: its header entry has {what} (fields: {', '.join(_FIELDS)})")
    st, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(st, str):
        raise CheckpointError(f"{where}: dtype must be a string, got {st!r}")
    dtype = _np_dtype(path, name, st)
    if not isinstance(shape, list) or not all(_is_int(s) for s in shape):
        raise CheckpointError(f"{where}: shape must be a list of integers, got {shape!r}")
    if any(s < 0 for s in shape):
        raise CheckpointError(f"{where}: shape {shape} has a negative dimension")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(x) for x in offsets)):
        raise CheckpointError(f"{where}: data_offsets must be [begin, end] integers, got {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise CheckpointError(f"{where}: data_offsets {offsets} are not 0 <= begin <= end")
    need = math.prod(shape) * dtype.itemsize
    if end - begin != need:
        raise CheckpointError(f"{where}: dtype {st} with shape {shape} needs {need} bytes, but "
                              f"data_offsets {offsets} hold {end - begin}")
    return dtype, tuple(shape), begin, end


def _check_tiling(path, entries, body):
    # the ranges, in order, must cover [0, body) exactly: an overlap would alias two
    # tensors, a gap or a tail is bytes the header does not account for
    pos, prev = 0, None
    for name, (_, _, begin, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if begin != pos:
            if begin < pos:
                raise CheckpointError(f"{path}: tensor {name!r} (bytes [{begin}, {end})) "
                                      f"overlaps tensor {prev!r}, which ends at {pos}")
            raise CheckpointError(f"{path}: bytes [{pos}, {begin}) before tensor {name!r} "
                                  "belong to no tensor")
        if end > body:
            raise CheckpointError(f"{path}: tensor {name!r} needs bytes [{begin}, {end}) but the "
                                  f"data section has {body} bytes (truncated or corrupted)")
        pos, prev = end, name
    if pos != body:
        raise CheckpointError(f"{path}: the data section has {body} bytes but its tensors end at "
                              f"{pos} (trailing bytes: corrupted)")


def load_file(path):
    """-> ({name: numpy array}, metadata dict). Raises CheckpointError naming the file."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint file {path} does not exist") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a folder, not a safetensors file") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        entries, meta, start = read_header(path, f, size)
        _check_tiling(path, entries, size - start)
        out = {}
        # the ranges tile the body, so one pass in offset order reads each byte once,
        # straight into its array (no second copy of the whole file)
        for name, (dtype, shape, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2]):
            a = np.empty(shape, dtype=dtype if _LITTLE or dtype.itemsize == 1 else dtype.newbyteorder("<"))
            if end > begin:
                f.seek(start + begin)
                got = f.readinto(memoryview(a.reshape(-1).view(np.uint8)))
                if got != end - begin:
                    raise CheckpointError(f"{path}: tensor {name!r} is cut short (truncated "
                                          "while being read?)")
            if dtype == np.bool_ and a.size and a.view(np.uint8).max() > 1:
                raise CheckpointError(f"{path}: tensor {name!r} is BOOL but holds bytes other "
                                      "than 0 and 1")
            out[name] = a if a.dtype == dtype else a.astype(dtype)
    return {k: out[k] for k in entries}, meta


def save(tensors, path, metadata=None):
    """tensorlite.save: a dict of tensors to a .safetensors file."""
    save_file({k: (v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in tensors.items()},
              path, metadata)


def load(path, device=None):
    """tensorlite.load: a .safetensors file to a dict of tensors."""
    from .factories import tensor
    arrays, _ = load_file(path)
    return {k: tensor(v, device=device) for k, v in arrays.items()}
