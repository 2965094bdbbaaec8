"""In-place initialisers (PyTorch's names), drawing from tensorlite's seedable generator."""
import math

from ..autograd.grad_mode import no_grad


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    with no_grad():
        return tensor.uniform_(a, b, generator=generator)


def zeros_(tensor):
    with no_grad():
        return tensor.zero_()


def ones_(tensor):
    with no_grad():
        return tensor.fill_(1.0)


def constant_(tensor, val):
    with no_grad():
        return tensor.fill_(val)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    fan_out, fan_in = tensor.shape[0], tensor.shape[1]
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def gpt2_init_(model, n_layer, std=0.02, residual_suffix="c_proj.weight"):
    """The GPT-2 scheme: every Linear/Embedding weight ~ N(0, 0.02), biases 0, LayerNorm
    (1, 0); weights that write into the residual stream (c_proj) get std 0.02/sqrt(2 n_layer)
    so the residual's variance does not grow with depth."""
    for m in model.modules():
        if _is_linear_or_embedding(m):
            normal_(m.weight, 0.0, std)
            if getattr(m, "bias", None) is not None:
                zeros_(m.bias)
        elif _is_layer_norm(m):
            if m.weight is not None:
                ones_(m.weight)
            if m.bias is not None:
                zeros_(m.bias)
    for name, p in model.named_parameters():
        if name.endswith(residual_suffix):
            normal_(p, 0.0, std / math.sqrt(2 * n_layer))


# The layers are recognised by the attributes that define them, not by class: layers.py
# builds on this module (its layers initialise themselves with uniform_ and normal_), so
# this one cannot import layers.py back.
def _is_linear_or_embedding(m):
    linear = hasattr(m, "in_features") and hasattr(m, "out_features")
    embedding = hasattr(m, "num_embeddings") and hasattr(m, "embedding_dim")
    return (linear or embedding) and hasattr(m, "weight")


def _is_layer_norm(m):
    return hasattr(m, "normalized_shape") and hasattr(m, "weight") and hasattr(m, "bias")
