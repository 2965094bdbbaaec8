"""The transformer block, shared by the decoder (GPT) and the encoder (BERT-style):
they differ in the attention mask and the norm placement, not in copied code."""
from .attention import MultiHeadAttention
from .layers import Dropout, GELU, LayerNorm, Linear
from .module import Module


class MLP(Module):
    def __init__(self, n_embd, bias=True, dropout=0.0, approximate="tanh", hidden=None):
        super().__init__()
        hidden = hidden or 4 * n_embd
        self.c_fc = Linear(n_embd, hidden, bias=bias)
        self.gelu = GELU(approximate)
        self.c_proj = Linear(hidden, n_embd, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(Module):
    """prenorm=True (GPT-2): x + attn(ln_1(x)), then x + mlp(ln_2(x)).
    prenorm=False (original BERT): ln_1(x + attn(x)), then ln_2(x + mlp(x))."""

    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, causal=True, prenorm=True,
                 approximate="tanh"):
        super().__init__()
        self.prenorm = prenorm
        self.ln_1 = LayerNorm(n_embd, bias=bias)
        self.attn = MultiHeadAttention(n_embd, n_head, bias=bias, dropout=dropout, causal=causal)
        self.ln_2 = LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias=bias, dropout=dropout, approximate=approximate)

    def forward(self, x, attention_mask=None, cache=None):
        if self.prenorm:
            x = x + self.attn(self.ln_1(x), attention_mask, cache)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, attention_mask, cache))
        return self.ln_2(x + self.mlp(x))
