"""Module-level spellings of Tensor methods (tensorlite.exp(x) == x.exp()), as in PyTorch."""
from ._tensor.linalg import einsum
from .tensor import Tensor

_UNARY = ["neg", "abs", "exp", "log", "sqrt", "rsqrt", "sin", "cos", "tanh", "sigmoid", "relu",
          "silu", "square", "isnan", "isfinite", "logical_not", "t", "clone", "detach"]
_OTHER = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "clamp", "clip", "masked_fill",
          "sum", "mean", "var", "std", "max", "min", "amax", "amin", "argmax", "argmin",
          "logsumexp", "prod", "cumsum", "softmax", "log_softmax", "reshape", "flatten", "squeeze",
          "unsqueeze", "transpose", "permute", "split", "chunk", "unbind", "triu", "tril", "gather",
          "index_select", "scatter_add", "index_add", "broadcast_to", "select", "gelu", "eq", "ne",
          "lt", "le", "gt", "ge", "logical_and", "logical_or", "allclose", "equal", "numel",
          "any", "all", "swapaxes", "sort", "argsort", "msort", "topk", "multinomial", "flip",
          "fliplr", "flipud", "norm", "bmm", "isclose"]


def _make(name):
    def fn(input, *args, **kwargs):  # noqa: A002 - PyTorch's argument name
        if not isinstance(input, Tensor):
            raise TypeError(f"{name}: expected a Tensor as the first argument, got {type(input).__name__}")
        return getattr(input, name)(*args, **kwargs)
    fn.__name__ = name
    fn.__doc__ = f"tensorlite.{name}(x, ...) is x.{name}(...)."
    return fn


for _n in _UNARY + _OTHER:
    globals()[_n] = _make(_n)

__all__ = _UNARY + _OTHER + ["einsum"]
