"""A bidirectional (BERT-style) encoder on the same Block as GPT: no causal mask, a padding
mask instead, exact GELU, and post- or pre-LN selectable."""
from dataclasses import dataclass, asdict

from .. import factories
from ..nn import functional as F
from ..nn import init
from ..nn.containers import ModuleDict, ModuleList
from ..nn.layers import Dropout, Embedding, LayerNorm, Linear
from ..nn.module import Module
from ..nn.transformer import Block


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    block_size: int = 512
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    prenorm: bool = False  # False: the original BERT's post-LN

    def to_dict(self):
        return asdict(self)


class Encoder(Module):
    def __init__(self, config):
        super().__init__()
        self.config = c = config
        self.transformer = ModuleDict(dict(
            wte=Embedding(c.vocab_size, c.n_embd),
            wpe=Embedding(c.block_size, c.n_embd),
            ln_e=LayerNorm(c.n_embd, bias=c.bias),  # BERT normalises the embeddings
            drop=Dropout(c.dropout),
            h=ModuleList([Block(c.n_embd, c.n_head, bias=c.bias, dropout=c.dropout, causal=False,
                                prenorm=c.prenorm, approximate="none") for _ in range(c.n_layer)]),
        ))
        if c.prenorm:
            self.transformer["ln_f"] = LayerNorm(c.n_embd, bias=c.bias)
        self.lm_head = Linear(c.n_embd, c.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight
        init.gpt2_init_(self, c.n_layer)

    def forward(self, idx, attention_mask=None, targets=None):
        """idx (B, T); attention_mask (B, T) with 1 for tokens and 0 for padding; targets
        (B, T) with -100 where no prediction is scored (masked-LM). Returns (hidden, logits,
        loss); logits and loss are None without targets."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"Encoder: sequence length {T} exceeds block_size {self.config.block_size}")
        tr = self.transformer
        x = tr.drop(tr.ln_e(tr.wte(idx) + tr.wpe(factories.arange(T, device=idx.device))))
        for block in tr.h:
            x = block(x, attention_mask)
        if self.config.prenorm:
            x = tr.ln_f(x)
        if targets is None:
            return x, None, None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(B * T))
        return x, logits, loss
