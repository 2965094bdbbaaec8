"""The transformer block, shared by the decoder (GPT) and the encoder (BERT-style):
they differ in the attention mask and the norm placement, not in copied code."""
from .attention import MultiHeadAttention
from .layers import GELU, Dropout, LayerNorm, Linear, ReLU, residual_linear
from .module import Module

# activation name -> (attribute name in MLP, module factory). "gelu_tanh" is the tanh
# approximation of GELU that GPT-2 was trained with (HF's "gelu_new"); "gelu" is exact (BERT).
ACTIVATIONS = {
    "gelu_tanh": ("gelu", lambda: GELU("tanh")),
    "gelu": ("gelu", lambda: GELU("none")),
    "relu": ("relu", ReLU),
}


def _activation_name(activation, approximate):
    # `approximate` predates `activation`; callers that still pass it keep their behaviour
    if activation is None:
        activation = "gelu_tanh" if approximate == "tanh" else "gelu"
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    return activation


class MLP(Module):
    """c_proj(act(c_fc(x))). activation: "gelu_tanh" (the default, GPT-2's), "gelu" (exact)
    or "relu"; `approximate` ("tanh"/"none") is the older spelling of the two GELUs."""

    def __init__(self, n_embd, bias=True, dropout=0.0, approximate="tanh", hidden=None,
                 activation=None):
        super().__init__()
        hidden = hidden or 4 * n_embd
        self.activation = _activation_name(activation, approximate)
        self.c_fc = Linear(n_embd, hidden, bias=bias)
        attr, make = ACTIVATIONS[self.activation]
        self._act_attr = attr
        setattr(self, attr, make())
        self.c_proj = Linear(hidden, n_embd, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x, residual=None):
        """residual: added to the output (the block's skip connection, see attention.py)."""
        act = getattr(self, self._act_attr)
        return residual_linear(self.c_proj, act(self.c_fc(x)), residual, self.dropout)


class Block(Module):
    """prenorm=True (GPT-2): x + attn(ln_1(x)), then x + mlp(ln_2(x)).
    prenorm=False (original BERT): ln_1(x + attn(x)), then ln_2(x + mlp(x)).
    hidden: the MLP's width (None: 4 * n_embd); layer_norm_eps: both LayerNorms' eps."""

    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, causal=True, prenorm=True,
                 approximate="tanh", activation=None, layer_norm_eps=1e-5, hidden=None):
        super().__init__()
        self.prenorm = prenorm
        self.ln_1 = LayerNorm(n_embd, eps=layer_norm_eps, bias=bias)
        self.attn = MultiHeadAttention(n_embd, n_head, bias=bias, dropout=dropout, causal=causal)
        self.ln_2 = LayerNorm(n_embd, eps=layer_norm_eps, bias=bias)
        self.mlp = MLP(n_embd, bias=bias, dropout=dropout, approximate=approximate, hidden=hidden,
                       activation=activation)

    def forward(self, x, attention_mask=None, cache=None):
        # x: (B, T, C) in and out; attention_mask (B, Tk) for padding; cache: a KV cache slot
        # (the skip connections x + f(x) are added inside f's last GEMM: residual=x)
        if self.prenorm:
            x = self.attn(self.ln_1(x), attention_mask, cache, residual=x)   # (B, T, C)
            return self.mlp(self.ln_2(x), residual=x)                        # (B, T, C)
        x = self.ln_1(self.attn(x, attention_mask, cache, residual=x))       # (B, T, C)
        return self.ln_2(self.mlp(x, residual=x))                            # (B, T, C)
