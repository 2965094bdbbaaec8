"""Load a trained run and sample from it, or score a text file with it."""
import math
import os

import numpy as np

from . import checkpoint as ckpt
from .autograd.grad_mode import no_grad
from .data.text import _read_utf8
from .factories import tensor
from .models.gpt import GPT, GPTConfig
from .random import Generator
from .tokenizers import load_tokenizer


def load_run(out, device="cpu"):
    """(model, tokenizer, config dict) from a training run's folder."""
    if not os.path.isdir(out):
        raise FileNotFoundError(f"run folder {out} does not exist")
    config = ckpt.read_json(os.path.join(out, ckpt.CONFIG), "config")
    model = GPT(GPTConfig.from_dict(config["model"]))
    arrays, _ = ckpt.load_model_arrays(os.path.join(out, ckpt.MODEL))
    model.load_state_dict(arrays)
    model.to(device).eval()
    tokenizer = load_tokenizer(os.path.join(out, ckpt.TOKENIZER))
    return model, tokenizer, config


def generate_text(model, tokenizer, prompt, max_new_tokens=200, temperature=0.8, top_k=None,
                  top_p=None, num_samples=1, seed=None, device="cpu", use_cache=True, on_text=None):
    """Sample num_samples continuations of prompt; on_text(sample_index, text) streams pieces."""
    ids = tokenizer.encode(prompt) if prompt else [0]
    if len(ids) > model.config.block_size:
        ids = ids[-model.config.block_size:]
    gen = Generator(seed) if seed is not None else None
    idx = tensor(np.array([ids] * num_samples, dtype=np.int64), device=device)
    pieces = [[] for _ in range(num_samples)]
    printed = [0] * num_samples

    def stream(tokens):
        for i, t in enumerate(tokens):
            pieces[i].append(int(t))
            if on_text is not None and num_samples == 1:
                # decode the whole tail so multi-byte characters appear once complete
                text = tokenizer.decode(pieces[i])
                if not text.endswith("\ufffd"):
                    on_text(i, text[printed[i]:])
                    printed[i] = len(text)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         use_cache=use_cache, generator=gen, stream=stream)
    return [tokenizer.decode(row[len(ids):]) for row in out.numpy().tolist()]


def evaluate_file(model, tokenizer, path, block_size=None, batch_size=8, max_batches=None):
    """Mean next-token loss and perplexity over non-overlapping blocks of a text file."""
    text = _read_utf8(path)
    if not text:
        raise ValueError(f"data file {path} is empty")
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    T = block_size or model.config.block_size
    if T > model.config.block_size:
        raise ValueError(f"block_size {T} is larger than the model's block_size "
                         f"{model.config.block_size}")
    n = (len(ids) - 1) // T
    if n < 1:
        raise ValueError(f"{path} has {len(ids)} tokens; at least {T + 1} are needed for one block")
    starts = np.arange(n) * T
    if max_batches is not None:
        starts = starts[:max_batches * batch_size]
    total, count = 0.0, 0
    with no_grad():
        for b in range(0, len(starts), batch_size):
            s = starts[b:b + batch_size]
            x = np.stack([ids[i:i + T] for i in s])
            y = np.stack([ids[i + 1:i + T + 1] for i in s])
            _, loss = model(tensor(x, device=model_device(model)), tensor(y, device=model_device(model)))
            total += loss.item() * x.size
            count += x.size
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": count}


def model_device(model):
    return next(model.parameters()).device
