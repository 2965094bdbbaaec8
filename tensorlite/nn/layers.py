"""The basic layers. Each holds its parameters and calls one function of nn.functional."""
import math

from .. import factories
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def _features(who, **sizes):
    for name, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{who}: {name} must be an int >= 0, got {v!r}")


def _normalized_shape(who, normalized_shape, eps):
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    _features(who, **{f"normalized_shape[{i}]": n for i, n in enumerate(shape)})
    if eps is not None and not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{who}: eps must be a finite number >= 0, got {eps!r}")
    return shape


class Linear(Module):
    """y = x W^T + b, W of shape (out_features, in_features)."""

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        _features("Linear", in_features=in_features, out_features=out_features)
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(factories.empty(out_features, in_features, dtype=dtype, device=device))
        self.bias = Parameter(factories.empty(out_features, dtype=dtype, device=device)) if bias else None
        # PyTorch's default: U(-1/sqrt(in), 1/sqrt(in)) for both
        bound = 1 / math.sqrt(in_features) if in_features else 0
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _plain(m):
    return not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks)


def residual_linear(linear, x, residual, dropout=None):
    """residual + dropout(linear(x)): a transformer's projection back into its residual
    stream. When nothing could tell the difference -- a plain Linear and Dropout without
    hooks, and the dropout inactive -- the add happens inside the GEMM
    (F._linear_residual); otherwise the modules run as written, then the add."""
    if residual is not None and type(linear) is Linear and _plain(linear) and (
            dropout is None or (_plain(dropout) and (dropout.p == 0 or not dropout.training))):
        return F._linear_residual(x, linear.weight, linear.bias, residual)
    y = linear(x)
    y = y if dropout is None else dropout(y)
    return y if residual is None else residual + y


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, dtype=None, device=None):
        super().__init__()
        _features("Embedding", num_embeddings=num_embeddings, embedding_dim=embedding_dim)
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(factories.empty(num_embeddings, embedding_dim, dtype=dtype, device=device))
        init.normal_(self.weight)

    def forward(self, idx):
        return F.embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None,
                 device=None):
        super().__init__()
        self.normalized_shape = _normalized_shape("LayerNorm", normalized_shape, eps)
        self.eps = eps
        affine = elementwise_affine
        self.weight = Parameter(factories.ones(self.normalized_shape, dtype=dtype, device=device)) \
            if affine else None
        self.bias = Parameter(factories.zeros(self.normalized_shape, dtype=dtype, device=device)) \
            if affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.weight is not None}"


class RMSNorm(Module):
    """y = x / sqrt(mean(x^2) + eps) * weight over the last len(normalized_shape) dims;
    eps=None is the input dtype's machine epsilon, as in PyTorch."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = _normalized_shape("RMSNorm", normalized_shape, eps)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight = Parameter(factories.ones(self.normalized_shape, dtype=dtype, device=device)) \
            if elementwise_affine else None

    def forward(self, x):
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Dropout(Module):
    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate='{self.approximate}'"


class ReLU(Module):
    def forward(self, x):
        return x.relu()


class Tanh(Module):
    def forward(self, x):
        return x.tanh()


class SiLU(Module):
    def forward(self, x):
        return x.silu()


class Identity(Module):
    def forward(self, x):
        return x


class Softmax(Module):
    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim)


class CrossEntropyLoss(Module):
    def __init__(self, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input, target):  # noqa: A002
        return F.cross_entropy(input, target, self.ignore_index, self.reduction, self.label_smoothing)
