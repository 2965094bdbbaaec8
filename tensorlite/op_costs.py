"""Rough FLOP and byte counts per op, for the profiler's GFLOP/s and GB/s columns.

Estimates, not measurements: a matmul is 2*M*N*K, an elementwise op or a reduction
about one FLOP per element, a fused op its own count (below), a view or copy none.
Bytes moved = the nbytes of the inputs plus the outputs (what an op that reads
everything once and writes its result once moves; views are counted too, which
overstates them: their FLOP/s is 0 anyway).
"""
# FLOPs per output element
_ELEMENTWISE = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Neg": 1, "Abs": 1, "Relu": 1, "Maximum": 1,
    "Minimum": 1, "Where": 1, "Clamp": 2, "Exp": 1, "Log": 1, "Sqrt": 1, "Rsqrt": 2,
    "Sigmoid": 4, "Tanh": 1, "Silu": 5, "Sin": 1, "Cos": 1, "Pow": 1,
}
# FLOPs per input element
_REDUCTION = {"Sum": 1, "Mean": 1, "Amax": 1, "Prod": 1, "Cumsum": 1, "Var": 3,
              "LogSumExp": 4, "ScatterAdd": 1, "IndexAdd": 1}
# fused ops, FLOPs per element of their main input: layer norm = mean, variance,
# normalise, scale and shift; softmax = max, subtract, exp, sum, divide; gelu(tanh) ~ 8
_FUSED = {"FusedLayerNorm": 8, "FusedSoftmax": 5, "FusedLogSoftmax": 5, "FusedGelu": 8,
          "FusedCrossEntropy": 4}
# backward FLOPs as a multiple of the forward's: a matmul's backward is two matmuls,
# attention's recomputes the scores and does four matmuls (FlashAttention-2's 2.5x)
_BACKWARD_FACTOR = {"Matmul": 2.0, "Linear": 2.0, "FusedAttention": 2.5, "FusedPackedSelfAttention": 2.5}


def _numel(a):
    return int(getattr(a, "size", 0) or 0)


def nbytes(a):
    return int(getattr(a, "nbytes", 0) or 0)


def forward_flops(name, inputs, out, kwargs):
    """Estimated FLOPs of one forward call (inputs: raw arrays or other arguments)."""
    if name == "Matmul":
        a = inputs[0]
        return 2 * a.shape[-1] * max(_numel(out), 1)
    if name == "Linear":  # x (..., K) W^T: a matmul, plus the bias add inside the GEMM
        has_bias = len(inputs) > 2 and inputs[2] is not None
        return (2 * inputs[0].shape[-1] + has_bias) * max(_numel(out), 1)
    if name == "FusedAttention":
        q, k = inputs[0], inputs[1]
        B, H, Tq, D = q.shape
        Tk = k.shape[2]
        flops = 4 * B * H * Tq * Tk * D  # q k^T and p v
        # a causal kernel skips the tiles above the diagonal: about half of a square score matrix
        return flops // 2 if kwargs.get("is_causal") and Tq == Tk else flops
    if name == "FusedPackedSelfAttention":  # qkv (B, T, 3C): the same products, heads merged
        B, T, C3 = inputs[0].shape
        flops = 4 * B * T * T * (C3 // 3)
        return flops // 2 if kwargs.get("is_causal") else flops
    if name in _ELEMENTWISE:
        return _ELEMENTWISE[name] * _numel(out)
    if name in _REDUCTION:
        return _REDUCTION[name] * _numel(inputs[0])
    if name in _FUSED:
        return _FUSED[name] * _numel(inputs[0])
    return 0  # views, copies, casts, gathers: data movement only


def backward_flops(name, forward, grad):
    """Estimated FLOPs of one backward call, from the forward's estimate when it is known."""
    if forward is None:
        return _numel(grad) if name in _ELEMENTWISE or name in _FUSED else 0
    return int(_BACKWARD_FACTOR.get(name, 2.0 if forward else 0.0) * forward)


def total_bytes(arrays):
    return sum(nbytes(a) for a in arrays if a is not None)


def shapes(args):
    """The shapes of the array arguments; other arguments appear as []."""
    return [list(a.shape) if hasattr(a, "shape") else [] for a in args]

