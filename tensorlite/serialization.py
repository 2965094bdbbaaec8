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
import io
import json
import math
import os
import secrets
import stat
import struct
import sys
from collections.abc import Mapping

import numpy as np

from .backend.device import as_device, device as _device

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
    chunks = _encode(tensors, metadata)
    (atomic_write_bytes if atomic else write_file)(path, chunks, fsync=fsync)


def _encode(tensors, metadata):
    """The file's bytes, as a list of chunks."""
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
    return [struct.pack("<Q", len(h)), h] + blobs


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


def _refuse_foreign(path, head):
    # only consulted once the bytes already fail as safetensors, so a valid file whose
    # header length happens to spell these magics is still read
    if head[:4] == b"PK\x03\x04" or (head[0] == 0x80 and 2 <= head[1] <= 5):
        raise CheckpointError(
            f"{path}: not a tensorlite/safetensors file (it looks like a torch.save zip/pickle "
            "file); tensorlite never unpickles. Re-save it from PyTorch with "
            "safetensors.torch.save_file(state_dict, path) to load it here")


def read_header(path, f, size):
    """(entries {name: (np dtype, shape, begin, end)} in file order, metadata, data start)."""
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"{path}: truncated (only {len(head)} bytes)")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER_BYTES or n > size - 8:
        _refuse_foreign(path, head)
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
        _refuse_foreign(path, head)
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
        return read_open(path, f, os.fstat(f.fileno()).st_size)


def read_open(path, f, size, base=0):
    """load_file on an open binary file whose safetensors bytes are [base, base + size);
    path names it in errors."""
    entries, meta, start = read_header(path, f, size)
    _check_tiling(path, entries, size - start)
    out = {}
    # the ranges tile the body, so one pass in offset order reads each byte once,
    # straight into its array (no second copy of the whole file)
    for name, (dtype, shape, begin, end) in sorted(entries.items(), key=lambda kv: kv[1][2]):
        a = np.empty(shape, dtype=dtype if _LITTLE or dtype.itemsize == 1 else dtype.newbyteorder("<"))
        if end > begin:
            f.seek(base + start + begin)
            got = f.readinto(memoryview(a.reshape(-1).view(np.uint8)))
            if got != end - begin:
                raise CheckpointError(f"{path}: tensor {name!r} is cut short (truncated "
                                      "while being read?)")
        if dtype == np.bool_ and a.size and a.view(np.uint8).max() > 1:
            raise CheckpointError(f"{path}: tensor {name!r} is BOOL but holds bytes other "
                                  "than 0 and 1")
        out[name] = a if a.dtype == dtype else a.astype(dtype)
    return {k: out[k] for k in entries}, meta


# ---- tensorlite.save / tensorlite.load: torch.save's habits, safetensors' safety ------------
#
# A flat {str: tensor} dict is written in the plain layout above (the safetensors package
# reads it, and writes files we read). Anything else (nesting, numbers, strings, a tensor
# under two names) is one safetensors file of the leaves, named by path ("optimizer/state/
# 0/exp_avg"), plus the object as JSON in __metadata__[STRUCTURE_KEY]. A JSON node is null,
# a bool, an int, a finite float, a string, or one tag: {"float": "nan"|"inf"|"-inf"},
# {"list": [...]}, {"tuple": [...]}, {"dict": [[key, node], ...]} (a key is a JSON string
# or integer: int keys come back as int), or {"tensor": name, "device": "cpu"|"cuda:0"}.

STRUCTURE_KEY = "tensorlite.structure"
_FORMAT = "tensorlite.save/1"
_STORES = ("tensorlite.save stores tensors, arrays, numbers, strings, bools, None, and "
           "lists/tuples/dicts of them")


def _where(path):
    return "obj" + "".join(f"[{k!r}]" for k in path)


def _what(v):
    import types
    if isinstance(v, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return "a function"
    name = f"class ({v.__name__})" if isinstance(v, type) else type(v).__name__
    return f"{'an' if name[0].lower() in 'aeiou' else 'a'} {name}"


def _is_key(k):
    return isinstance(k, str) or (isinstance(k, int) and not isinstance(k, bool))


def _dev_key(d):
    d = as_device(d)
    return d.type, d.index or 0


def _device_array(v):
    """(the array where it lives, its device's name) for a Tensor or an ndarray."""
    return (v, "cpu") if isinstance(v, np.ndarray) else (v._data, str(v.device))


def _share_key(v):
    # two Tensors over the same memory with the same layout (a tied weight: state_dict()
    # detaches each name into its own Tensor) are one tensor; empty arrays have no
    # meaningful address, so only the very same object counts for them
    a = _device_array(v)[0]
    if a.size == 0:
        return ("id", id(v))
    return (type(a).__module__, a.ctypes.data if isinstance(a, np.ndarray) else a.data.ptr,
            a.shape, a.strides, a.dtype.str)


class _Packer:
    def __init__(self):
        from .tensor import Tensor
        self.leaf_types = (np.ndarray, Tensor)
        self.arrays = {}      # name in the file -> numpy array
        self.refs = {}        # share key -> the node naming its one copy
        self.walking = set()  # ids of the containers above the current node: a cycle

    def tensor(self, v, path, name=None):
        key = _share_key(v)
        if key in self.refs:
            return self.refs[key]
        a, dev = _device_array(v)
        host = a if isinstance(a, np.ndarray) else a.get()
        try:  # what tensorlite.load could not turn back into a Tensor is refused now
            from ._dtype import as_dtype
            ok = _st_name(host.dtype) is not None and as_dtype(host.dtype) is not None
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise TypeError(f"save: {_where(path)} has dtype {host.dtype}, which tensorlite "
                            "tensors and safetensors files cannot both hold")
        if name is None:
            base = name = "/".join(str(k) for k in path) or "tensor"
            n = 1
            while name in self.arrays or name == "__metadata__":  # "a/b" vs ["a"]["b"]
                name, n = f"{base}#{n + 1}", n + 1
        self.arrays[name] = host
        self.refs[key] = node = {"tensor": name, "device": dev}
        return node

    def node(self, v, path):
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            v = float(v)
            return v if math.isfinite(v) else {"float": repr(v)}
        if isinstance(v, self.leaf_types):
            return self.tensor(v, path)
        if type(v) not in (list, tuple) and not isinstance(v, Mapping):
            raise TypeError(f"save: {_where(path)} is {_what(v)}; {_STORES}")
        if id(v) in self.walking:
            raise ValueError(f"save: {_where(path)} contains itself; {_STORES}")
        self.walking.add(id(v))
        if isinstance(v, Mapping):
            bad = next((k for k in v if not _is_key(k)), None)
            if bad is not None:  # (bool is an int, but True would come back as 1)
                raise TypeError(f"save: {_where(path)} has a key {bad!r} of type "
                                f"{type(bad).__name__}; dict keys must be str or int (int "
                                "keys come back as int)")
            out = {"dict": [[k, self.node(x, path + [k])] for k, x in v.items()]}
        else:
            out = {type(v).__name__: [self.node(x, path + [i]) for i, x in enumerate(v)]}
        self.walking.discard(id(v))
        return out

    def is_plain(self, obj):
        return isinstance(obj, Mapping) and all(
            isinstance(k, str) and k != "__metadata__" and isinstance(v, self.leaf_types)
            for k, v in obj.items()) and len({_share_key(v) for v in obj.values()}) == len(obj)


def save(obj, f, metadata=None):
    """tensorlite.save (torch.save's role, without pickle): obj is a tensor, an array, a
    number, a string, None, or lists/tuples/dicts of them, nested; f a path or a binary
    file object. metadata: extra {str: str} for the safetensors header."""
    if metadata and STRUCTURE_KEY in metadata:
        raise ValueError(f"save: metadata key {STRUCTURE_KEY!r} is tensorlite's own")
    packer = _Packer()
    meta = dict(metadata or {})
    if packer.is_plain(obj):
        for k, v in obj.items():
            packer.tensor(v, [k], name=k)
    else:
        root = packer.node(obj, [])
        meta[STRUCTURE_KEY] = json.dumps({"format": _FORMAT, "root": root},
                                         separators=(",", ":"), allow_nan=False)
    chunks = _encode(packer.arrays, meta)
    if isinstance(f, (str, bytes, os.PathLike)):
        return atomic_write_bytes(os.fspath(f), chunks)
    if isinstance(f, io.TextIOBase) or not hasattr(f, "write"):
        raise TypeError(f"save: f must be a path or a file object opened for binary writing "
                        f"('wb'), got {_what(f)}")
    for c in chunks:
        f.write(c)


def _placer(map_location):
    """map_location as a function (numpy array, saved device name) -> Tensor."""
    from .factories import as_tensor
    from .tensor import Tensor
    if map_location is None:
        return lambda a, loc: as_tensor(a, device=loc)
    if isinstance(map_location, (str, _device)):
        target = as_device(map_location)
        return lambda a, loc: as_tensor(a, device=target)
    if isinstance(map_location, Mapping):
        # "cuda" and "cuda:0" name one GPU here, so keys match either spelling
        table = {_dev_key(k): as_device(v) for k, v in map_location.items()}
        return lambda a, loc: as_tensor(a, device=table.get(_dev_key(loc), loc))
    if not callable(map_location):
        raise TypeError(f"load: map_location must be None, a device, a dict of devices or a "
                        f"callable, got {_what(map_location)}")

    def call(a, loc):
        got = map_location(as_tensor(a), loc)
        if got is None:  # torch's convention: None means "restore as saved"
            return as_tensor(a, device=loc)
        if not isinstance(got, Tensor):
            raise TypeError(f"load: map_location returned {_what(got)} for a tensor saved on "
                            f"{loc!r}; it must return a Tensor or None")
        return got
    return call


def _read_any(f):
    if isinstance(f, (str, bytes, os.PathLike)):
        return os.fsdecode(f), load_file(os.fsdecode(f))
    if isinstance(f, io.TextIOBase) or not hasattr(f, "read"):
        raise TypeError(f"load: f must be a path or a file object opened for binary reading "
                        f"('rb'), got {_what(f)}")
    name = str(getattr(f, "name", "<file object>"))
    if not (getattr(f, "seekable", lambda: False)() and hasattr(f, "readinto")):
        f = io.BytesIO(f.read())  # a pipe or a socket: the reader needs to seek
    base = f.tell()
    size = f.seek(0, 2) - base
    f.seek(base)
    return name, read_open(name, f, size, base)


def load(f, map_location=None, weights_only=True):
    """tensorlite.load (torch.load's role): what tensorlite.save wrote, or any safetensors
    file (as a flat {name: Tensor} dict). Tensors and saved NumPy arrays come back as Tensors
    (requires_grad=False), one object per tensor saved under several names. map_location:
    None (where each was saved), a device, {saved: target}, or (cpu Tensor, saved) -> Tensor/None."""
    if weights_only is False:
        raise ValueError("load: weights_only=False asks to unpickle arbitrary objects; "
                         "tensorlite never unpickles, its files hold only tensors and plain "
                         "values, so weights_only=True is the only mode")
    place = _placer(map_location)
    path, (arrays, meta) = _read_any(f)
    if STRUCTURE_KEY not in meta:
        return {k: place(a, "cpu") for k, a in arrays.items()}
    return _Unpacker(path, arrays, place).root(meta[STRUCTURE_KEY])


class _Unpacker:
    def __init__(self, path, arrays, place):
        self.path, self.arrays, self.place = path, arrays, place
        self.made = {}  # name -> Tensor, so a shared tensor stays one object

    def bad(self, path, why):
        return CheckpointError(f"{self.path}: the structure in __metadata__[{STRUCTURE_KEY!r}] "
                               f"is corrupted at {_where(path)}: {why}")

    def root(self, text):
        try:
            doc = json.loads(text, object_pairs_hook=_no_duplicates(self.path))
        except (json.JSONDecodeError, RecursionError) as e:
            raise self.bad([], f"not JSON that can be read ({type(e).__name__})") from None
        if not isinstance(doc, dict) or set(doc) != {"format", "root"} or doc["format"] != _FORMAT:
            raise self.bad([], f"expected {{'format': {_FORMAT!r}, 'root': ...}}")
        out = self.node(doc["root"], [])
        for k in (k for k in self.arrays if k not in self.made):
            raise self.bad([], f"tensor {k!r} is in the file but not in the structure")
        return out

    def node(self, n, path):
        if n is None or isinstance(n, (str, bool, int, float)):
            return n
        if not isinstance(n, dict) or not n:
            raise self.bad(path, f"unexpected {n!r}")
        if "tensor" in n:
            return self.tensor(n, path)
        tag, body = next(iter(n.items())) if len(n) == 1 else (sorted(n), None)
        if tag == "float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag in ("list", "tuple") and isinstance(body, list):
            items = [self.node(x, path + [i]) for i, x in enumerate(body)]
            return items if tag == "list" else tuple(items)
        if tag == "dict" and isinstance(body, list):
            out = {}
            for pair in body:
                if not (isinstance(pair, list) and len(pair) == 2 and _is_key(pair[0])) \
                        or pair[0] in out:
                    raise self.bad(path, f"bad or repeated dict entry {pair!r}")
                out[pair[0]] = self.node(pair[1], path + [pair[0]])
            return out
        raise self.bad(path, f"unknown node {tag!r}")

    def tensor(self, n, path):
        name, dev = n.get("tensor"), n.get("device")
        if set(n) != {"tensor", "device"} or not isinstance(name, str) or \
                dev not in ("cpu", "cuda") and not str(dev).startswith("cuda:"):
            raise self.bad(path, f"a tensor node needs a 'tensor' name and a 'device', got {n!r}")
        if name not in self.arrays:
            raise self.bad(path, f"it names tensor {name!r}, which the file does not hold")
        if name not in self.made:
            self.made[name] = self.place(self.arrays[name], dev)
        return self.made[name]
