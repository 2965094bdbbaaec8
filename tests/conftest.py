import os

# Triton must see this before it is first imported: it makes kernels/ run on the
# CPU through Triton's interpreter, so every kernel is tested without a GPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pathlib

import numpy as np
import pytest

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture
def shared_data():
    """Path to ../shared/data, or skip: a user's clone has no ../shared."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip("../shared/data is not beside this checkout (only the project's CI has it)")
    return d


@pytest.fixture
def rng():
    return np.random.default_rng(0)
