"""cross_entropy: fused log_softmax + negative log-likelihood per row, in plain NumPy.

For a row of logits x (length V) with target t and label smoothing e, the target
distribution is q = (1-e) * onehot(t) + e/V, and
    loss = -sum(q * log_softmax(x)) = (1-e) * (lse - x[t]) + e * (lse - mean(x)),
with lse = logsumexp(x). Its gradient is softmax(x) - q.
Rows whose target equals ignore_index get loss 0 and gradient 0.
The reduction (mean/sum) is left to the caller, which folds it into dloss.
"""
from ..backend.device import xp_of


def _logsumexp(x, xp):
    m = x.max(axis=-1, keepdims=True)
    return (m + xp.log(xp.exp(x - m).sum(axis=-1, keepdims=True)))[:, 0]


def cross_entropy_forward(logits, targets, ignore_index, label_smoothing):
    """Returns (loss, lse), both shape (N,)."""
    kept = targets != ignore_index
    xp = xp_of(logits)
    N, V = logits.shape
    lse = _logsumexp(logits, xp)
    safe_t = xp.where(kept, targets, 0)  # ignored rows may hold e.g. -100: index something valid
    x_t = logits[xp.arange(N), safe_t]
    e = label_smoothing
    loss = (1.0 - e) * (lse - x_t) + e * (lse - logits.mean(axis=-1))
    loss = xp.where(kept, loss, 0.0).astype(logits.dtype, copy=False)
    return loss, lse


def cross_entropy_backward(logits, targets, lse, dloss, ignore_index, label_smoothing):
    """dlogits[i] = dloss[i] * (softmax(x_i) - (1-e) * onehot(t_i) - e/V); 0 for ignored rows."""
    kept = targets != ignore_index
    N, V = logits.shape
    xp = xp_of(logits)
    e = label_smoothing
    grad = xp.exp(logits - lse[:, None])  # softmax, from the saved logsumexp
    grad -= e / V
    rows = xp.arange(N)[kept]
    grad[rows, targets[kept]] -= 1.0 - e
    grad *= xp.where(kept, dloss, 0.0).astype(logits.dtype, copy=False)[:, None]
    return grad
