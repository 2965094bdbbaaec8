"""A small GPT written the way karpathy/nanoGPT writes model.py, train.py and sample.py,
run on tensorlite with only the imports changed (`import tensorlite as torch`). The code
is our own; the idioms are nanoGPT's: ModuleDict/ModuleList, a LayerNorm with optional
bias, a causal-mask buffer next to F.scaled_dot_product_attention(is_causal=True), weight
tying by assignment, module.apply(init), param groups by p.dim(), AdamW's fused probe,
GradScaler(enabled=False), nullcontext on the CPU, get_batch with randint / from_numpy /
stack / pin_memory, estimate_loss under @no_grad, f"{loss:.4f}", and generate with topk +
multinomial + cat. Training runs 20 steps on tiny Shakespeare when ../shared/data has it,
else on random characters."""
import inspect
import math
import os
import pathlib
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import pytest

import tensorlite as torch
import tensorlite.nn as nn
from tensorlite.nn import functional as F

from _core_helpers import numpy_kernels  # noqa: F401

SHAKESPEARE = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


# ---- model.py, nanoGPT style -------------------------------------------------------------------

@dataclass
class Config:
    block_size: int = 32
    vocab_size: int = 65
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    bias: bool = True


class BiasOptionalLayerNorm(nn.Module):
    def __init__(self, ndim, bias):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, input):  # noqa: A002
        return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)


class SelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout
        self.flash = hasattr(torch.nn.functional, "scaled_dot_product_attention")
        T = cfg.block_size
        # kept for the manual path (and for crop_block_size), as nanoGPT does without flash
        self.register_buffer("bias", torch.tril(torch.ones(T, T)).view(1, 1, T, T))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if self.flash:
            y = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=None, dropout_p=self.dropout if self.training else 0, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = BiasOptionalLayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = SelfAttention(cfg)
        self.ln_2 = BiasOptionalLayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = FeedForward(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Layer(cfg) for _ in range(cfg.n_layer)]),
            ln_f=BiasOptionalLayerNorm(cfg.n_embd, bias=cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying by assignment
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def get_num_params(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        device = idx.device
        b, t = idx.size()
        assert t <= self.config.block_size, f"sequence of {t} > block size {self.config.block_size}"
        pos = torch.arange(0, t, dtype=torch.long, device=device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is not None:
            logits = self.lm_head(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        else:
            logits = self.lm_head(x[:, [-1], :])  # only the last position is needed to sample
            loss = None
        return logits, loss

    def crop_block_size(self, block_size):
        assert block_size <= self.config.block_size
        self.config.block_size = block_size
        self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
        for block in self.transformer.h:
            if hasattr(block.attn, "bias"):
                block.attn.bias = block.attn.bias[:, :, :block_size, :block_size]

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
        param_dict = {pn: p for pn, p in self.named_parameters() if p.requires_grad}
        decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
        nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
        optim_groups = [{"params": decay_params, "weight_decay": weight_decay},
                        {"params": nodecay_params, "weight_decay": 0.0}]
        self.num_decay = sum(p.numel() for p in decay_params)
        fused_available = "fused" in inspect.signature(torch.optim.AdamW).parameters
        use_fused = fused_available and device_type == "cuda"
        extra_args = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        for _ in range(max_new_tokens):
            idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
            logits, _ = self(idx_cond)
            logits = logits[:, -1, :] / temperature
            if top_k is not None:
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("Inf")
            probs = F.softmax(logits, dim=-1)
            idx_next = torch.multinomial(probs, num_samples=1)
            idx = torch.cat((idx, idx_next), dim=1)
        return idx


# ---- train.py / sample.py, nanoGPT style ---------------------------------------------------

def _corpus():
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text(encoding="utf-8")
    else:  # a user's clone has no ../shared: random characters train just as well for 20 steps
        rng = np.random.default_rng(0)
        text = "".join(rng.choice(list("abcdefgh ijklmnop\n"), size=20000))
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for ch, i in stoi.items()}
    data = np.array([stoi[c] for c in text], dtype=np.uint16)
    n = int(0.9 * len(data))
    return data[:n], data[n:], len(chars), (lambda s: [stoi[c] for c in s]), \
        (lambda ids: "".join(itos[i] for i in ids))


@pytest.fixture(scope="module")
def run():
    """Train 20 steps the nanoGPT way; return what the tests look at."""
    train_data, val_data, vocab, encode, decode = _corpus()
    batch_size, block_size, max_iters, eval_iters = 8, 32, 20, 2
    learning_rate, min_lr, warmup_iters, lr_decay_iters = 3e-3, 3e-4, 4, 20
    grad_clip, gradient_accumulation_steps = 1.0, 2
    device, dtype = "cpu", "float32"
    torch.manual_seed(1337)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device_type = "cuda" if "cuda" in device else "cpu"
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

    def get_batch(split):
        data = train_data if split == "train" else val_data
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64)) for i in ix])
        # nanoGPT pins only for cuda; both spellings must work here
        return x.pin_memory().to(device, non_blocking=True), y.to(device)

    model = TinyGPT(Config(block_size=block_size, vocab_size=vocab))
    model.to(device)
    scaler = torch.cuda.amp.GradScaler(enabled=(dtype == "float16"))
    optimizer = model.configure_optimizers(0.1, learning_rate, (0.9, 0.99), device_type)

    def get_lr(it):
        if it < warmup_iters:
            return learning_rate * (it + 1) / (warmup_iters + 1)
        if it > lr_decay_iters:
            return min_lr
        ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ["train", "val"]:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                with ctx:
                    _, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    log, lossfs = [], []
    best_val_loss = 1e9
    X, Y = get_batch("train")
    for iter_num in range(max_iters + 1):
        lr = get_lr(iter_num)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        if iter_num % 10 == 0:
            losses = estimate_loss()
            log.append(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            if losses["val"] < best_val_loss:
                best_val_loss = losses["val"]
        if iter_num == max_iters:
            break
        for micro_step in range(gradient_accumulation_steps):
            with ctx:
                logits, loss = model(X, Y)
                loss = loss / gradient_accumulation_steps
            X, Y = get_batch("train")
            scaler.scale(loss).backward()
        if grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        lossfs.append(loss.item() * gradient_accumulation_steps)
        log.append(f"iter {iter_num}: loss {lossfs[-1]:.4f}")
    return dict(model=model, log=log, lossfs=lossfs, best_val_loss=best_val_loss, encode=encode,
                decode=decode, vocab=vocab, optimizer=optimizer, ctx=ctx, device=device)


def test_training_runs_and_learns(run):
    lossfs = run["lossfs"]
    assert len(lossfs) == 20 and all(math.isfinite(v) for v in lossfs)
    assert np.mean(lossfs[-5:]) < np.mean(lossfs[:5]) - 0.1, lossfs
    assert run["log"][0].startswith("step 0: train loss ") and "iter 19: loss " in run["log"][-2]
    assert isinstance(run["best_val_loss"], torch.Tensor) and float(run["best_val_loss"]) < 1e9
    model = run["model"]
    assert model.transformer.wte.weight is model.lm_head.weight  # still tied after training
    assert {len(g["params"]) for g in run["optimizer"].param_groups} and \
        all(p.dim() >= 2 for p in run["optimizer"].param_groups[0]["params"])


def test_sampling_with_topk_and_multinomial(run):
    model, encode, decode = run["model"], run["encode"], run["decode"]
    model.eval()
    torch.manual_seed(1337)
    torch.cuda.manual_seed(1337)
    start_ids = encode("\n")
    x = torch.tensor(start_ids, dtype=torch.long, device=run["device"])[None, ...]
    with torch.no_grad():
        with run["ctx"]:
            y = model.generate(x, 40, temperature=0.8, top_k=5)
            y2 = model.generate(x, 40, temperature=1.0, top_k=None)
    assert y.shape == (1, 41) and y2.shape == (1, 41) and y.dtype is torch.int64
    text = decode(y[0].tolist())
    assert len(text) == 41 and text[0] == "\n"
    torch.manual_seed(1337)
    again = model.generate(x, 40, temperature=0.8, top_k=5)
    assert again.tolist() == y.tolist()  # seeded sampling repeats
    long_prompt = torch.randint(run["vocab"], (2, 40))  # longer than block_size: cropped
    assert model.generate(long_prompt, 3).shape == (2, 43)
    model.train()


def test_top_k_filter_keeps_exactly_k_candidates():
    logits = torch.tensor([[0.1, 2.0, -1.0, 3.0, 0.5]])
    v, _ = torch.topk(logits, min(2, logits.size(-1)))
    logits[logits < v[:, [-1]]] = -float("Inf")
    probs = F.softmax(logits, dim=-1)
    assert (probs > 0).sum().item() == 2
    picks = {torch.multinomial(probs, num_samples=1).item() for _ in range(50)}
    assert picks <= {1, 3}


def test_flash_and_manual_attention_agree_and_crop_block_size():
    torch.manual_seed(0)
    model = TinyGPT(Config())
    idx = torch.randint(65, (2, 16))
    logits_flash, loss_flash = model(idx, idx)
    for block in model.transformer.h:
        block.attn.flash = False
    logits_manual, loss_manual = model(idx, idx)
    assert logits_flash.allclose(logits_manual, atol=1e-5)
    assert abs(loss_flash.item() - loss_manual.item()) < 1e-5
    n_before = model.get_num_params(non_embedding=False)
    model.crop_block_size(16)
    assert model.transformer.wpe.weight.shape == (16, 32)
    assert model.transformer.h[0].attn.bias.shape == (1, 1, 16, 16)
    assert model.get_num_params(non_embedding=False) == n_before - 16 * 32
    logits, _ = model(idx, idx)
    assert logits.allclose(logits_manual, atol=1e-5)
    assert f"{model.get_num_params() / 1e6:.2f}M" == "0.03M"


def test_state_dict_round_trip_with_the_orig_mod_prefix_strip():
    torch.manual_seed(1)
    src, dst = TinyGPT(Config()), TinyGPT(Config())
    state_dict = {"_orig_mod." + k: v for k, v in src.state_dict().items()}
    unwanted_prefix = "_orig_mod."
    for k, v in list(state_dict.items()):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    dst.load_state_dict(state_dict)
    idx = torch.randint(65, (1, 8))
    assert dst(idx)[0].allclose(src(idx)[0])
    del state_dict["lm_head.weight"]  # a de-duplicated tied weight (safetensors' save_model)
    assert dst.load_state_dict(state_dict).tied_keys == {"lm_head.weight": "transformer.wte.weight"}


def test_bfloat16_and_autocast_names_resolve():
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    assert ptdtype["bfloat16"] is torch.bfloat16
    with torch.amp.autocast(device_type="cuda", dtype=ptdtype["bfloat16"]):  # nanoGPT's cuda path
        assert torch.is_autocast_enabled("cuda")
    dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    assert dtype == "float16"


def test_checkpoint_save_and_load_nested(run, tmp_path):
    model, optimizer = run["model"], run["optimizer"]
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "model_args": dict(n_layer=2, n_head=2, n_embd=32), "iter_num": 20,
                  "best_val_loss": run["best_val_loss"], "config": {"dataset": "shakespeare_char"}}
    path = os.path.join(tmp_path, "ckpt.pt")
    torch.save(checkpoint, path)
    loaded = torch.load(path, map_location=run["device"])
    fresh = TinyGPT(Config(vocab_size=run["vocab"]))
    fresh.load_state_dict(loaded["model"])
    assert loaded["iter_num"] == 20
