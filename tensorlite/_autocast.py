"""Which low-precision dtype autocast has switched on, per device type (tensorlite.amp sets
it; matmul and linear read it). A module of its own at the bottom of the layers so that the
ops can read the setting without importing tensorlite.amp, which sits above them."""
_fast = {"cpu": None, "cuda": None}


def fast_dtype(device_type):
    """The dtype matmuls run in under an active autocast on device_type, or None."""
    return _fast.get(device_type)


def set_fast_dtype(device_type, dtype):
    """Set (dtype) or clear (None) autocast for device_type; returns the previous value."""
    old = _fast[device_type]
    _fast[device_type] = dtype
    return old
