"""Load a trained run (or a pretrained Hugging Face GPT-2 folder) and sample from it, or
score a text file with it."""
import json
import math
import os

import numpy as np

from . import checkpoint as ckpt
from . import classify_run, seq2seq_run
from .autograd.grad_mode import no_grad
from .data.text import _read_utf8, cache_path_for, split_train_val
from .factories import tensor
from .models.gpt import GPT, GPTConfig
from .pretrained import from_pretrained
from .random import Generator
from .tokenizers import from_pretrained as tokenizer_from_pretrained
from .tokenizers import load_tokenizer


def load_run(out, device="cpu"):
    """(model, tokenizer, config dict) from a training run's folder: a GPT, or for a seq2seq
    task's run (config.json's model "kind": "seq2seq") a Seq2SeqTransformer, or for a
    classify run ("kind": "classify") a BertForSequenceClassification and its WordPiece
    tokenizer."""
    if not os.path.isdir(out):
        raise FileNotFoundError(f"run folder {out} does not exist")
    config = ckpt.read_json(os.path.join(out, ckpt.CONFIG), "config")
    classify = classify_run.is_classify_config(config)
    if classify:
        model = classify_run.model_from_saved(config["model"])
    elif seq2seq_run.is_seq2seq_config(config):
        model = seq2seq_run.model_from_saved(config["model"])
    else:
        model = GPT(GPTConfig.from_dict(config["model"]))
    path = ckpt.model_file(out)  # the newest complete checkpoint's (or an old run's flat file)
    arrays, _ = ckpt.load_model_arrays(path)
    ckpt.load_model_state(model, arrays, path)
    model.to(device).eval()
    tokenizer = classify_run.load_tokenizer(out) if classify else \
        load_tokenizer(ckpt.tokenizer_file(out))
    return model, tokenizer, config


def load_pretrained(model_dir, device="cpu", kind=None):
    """(model, tokenizer) of a local Hugging Face folder: GPT-2 for `generate`, BERT for
    `embed`; kind ("gpt2" / "bert") refuses the other with one line."""
    model = from_pretrained(model_dir)
    mt = "gpt2" if isinstance(model, GPT) else "bert"
    if kind is not None and mt != kind:
        raise ValueError(f"--model {model_dir}: this command needs a {kind} folder, this one "
                         f"holds a {mt} model")
    return model.to(device).eval(), tokenizer_from_pretrained(model_dir)


def generate_text(model, tokenizer, prompt, max_new_tokens=200, temperature=0.8, top_k=None,
                  top_p=None, num_samples=1, seed=None, device="cpu", use_cache=True, on_text=None):
    """Sample num_samples continuations of prompt; on_text(sample_index, text) streams pieces.
    A tokenizer with an end-of-text token (GPT-2's <|endoftext|>) starts an empty prompt
    with it and stops a sample there, as Hugging Face's generate does."""
    eos = getattr(tokenizer, "eos_token_id", None)
    ids = tokenizer.encode(prompt) if prompt else [0 if eos is None else eos]
    if len(ids) > model.config.block_size:
        ids = ids[-model.config.block_size:]
    gen = Generator(seed) if seed is not None else None
    idx = tensor(np.array([ids] * num_samples, dtype=np.int64), device=device)
    pieces = [[] for _ in range(num_samples)]
    printed = [0] * num_samples
    finished = [False] * num_samples

    def stream(tokens):
        for i, t in enumerate(tokens):
            if finished[i]:
                continue
            if eos is not None and int(t) == eos:
                finished[i] = True
                continue
            pieces[i].append(int(t))
            if on_text is not None and num_samples == 1:
                # decode the whole tail so multi-byte characters appear once complete
                text = tokenizer.decode(pieces[i])
                if not text.endswith("\ufffd") and not finished[i]:
                    on_text(i, text[printed[i]:])
                    printed[i] = len(text)
    model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   use_cache=use_cache, generator=gen, stream=stream, eos_token_id=eos)
    return [tokenizer.decode(p) for p in pieces]


def evaluate_file(model, tokenizer, path, block_size=None, batch_size=8, max_batches=None,
                  split="all", cache_dir=None, progress=None):
    """Mean next-token loss and perplexity over non-overlapping blocks of a text file.

    split: "train" or "val" score the part of the file that training drew its batches from
    or held out (data.text.split_train_val, as a training run cuts it); "all" the whole
    file. cache_dir: a run folder whose cached token ids of this file are read, when they
    are there (nothing is written). progress: progress(total_batches) returns an object
    with update(done, **numbers) and close(), e.g. progress.make_progress."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be train, val or all, got {split!r}")
    ids = _token_ids(tokenizer, path, cache_dir)
    if split != "all":
        ids = split_train_val(ids)[0 if split == "train" else 1]
    T = block_size or model.config.block_size
    if T > model.config.block_size:
        raise ValueError(f"block_size {T} is larger than the model's block_size "
                         f"{model.config.block_size}")
    n = (len(ids) - 1) // T
    if n < 1:
        what = path if split == "all" else f"the {split} split of {path}"
        raise ValueError(f"{what} has {len(ids)} tokens; at least {T + 1} are needed for one block")
    starts = np.arange(n) * T
    if max_batches is not None:
        starts = starts[:max_batches * batch_size]
    n_batches = -(-len(starts) // batch_size)
    bar = progress(n_batches) if progress is not None else None
    total, count = 0.0, 0
    try:
        with no_grad():
            for k, b in enumerate(range(0, len(starts), batch_size), 1):
                s = starts[b:b + batch_size]
                x = np.stack([ids[i:i + T] for i in s]).astype(np.int64)
                y = np.stack([ids[i + 1:i + T + 1] for i in s]).astype(np.int64)
                _, loss = model(tensor(x, device=model_device(model)),
                                tensor(y, device=model_device(model)))
                total += loss.item() * x.size
                count += x.size
                if bar is not None:
                    bar.update(k, loss=total / count)
    finally:
        if bar is not None:
            bar.close()
    mean = total / count
    return {"loss": mean, "perplexity": math.exp(mean), "tokens": count, "split": split}


def _token_ids(tokenizer, path, cache_dir):
    # the run's cache holds exactly the ids its training split was cut from; reading it also
    # spares a large file's BPE encoding
    if cache_dir is not None and os.path.isfile(path):
        key = json.dumps(tokenizer.to_dict(), sort_keys=True)  # as train.TextData keys it
        cache = cache_path_for(path, key, cache_dir)
        if cache.is_file():
            try:
                return np.load(cache, mmap_mode="r", allow_pickle=False)
            except (ValueError, OSError):
                pass
    text = _read_utf8(path)
    if not text:
        raise ValueError(f"data file {path} is empty")
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def model_device(model):
    return next(model.parameters()).device
