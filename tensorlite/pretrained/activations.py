"""Hugging Face's activation names (config.json's activation_function / hidden_act) and the
tensorlite activation each one is (nn/transformer.py's ACTIVATIONS)."""
from .folder import PretrainedError

FROM_HF = {
    "gelu_new": "gelu_tanh",           # GPT-2's: the tanh approximation
    "gelu_pytorch_tanh": "gelu_tanh",  # the same formula, as PyTorch's fused kernel
    "gelu_fast": "gelu_tanh",          # the same formula again, factored differently
    "gelu": "gelu",                    # exact (erf); BERT's
    "relu": "relu",
}
# the spelling written back when a model did not come from a folder
TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def from_hf(name, field, where):
    if name not in FROM_HF:
        raise PretrainedError(f"{where}: {field} {name!r} is not supported (tensorlite has "
                              f"{', '.join(sorted(FROM_HF))})")
    return FROM_HF[name]


def to_hf(activation, original=None):
    """HF's name for a tensorlite activation, keeping the folder's own spelling if it means
    the same function (so a load/save round trip leaves config.json as it was)."""
    if original in FROM_HF and FROM_HF[original] == activation:
        return original
    return TO_HF[activation]
