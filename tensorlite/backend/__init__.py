"""Backends: where arrays live (device.py) and which provider runs fused ops (providers.py)."""
from .device import device, as_device, xp_for, xp_of, cuda_unavailable_reason  # noqa: F401
