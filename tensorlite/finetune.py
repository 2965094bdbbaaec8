"""Fine-tuning (`tensorlite train --init-from DIR --data NEW.txt`): start from a trained
run's weights, with its model configuration and tokenizer, and a fresh optimizer.

The new text must be expressible in the old tokenizer: a character tokenizer cannot
encode characters it never saw, and the embedding has no row for them, so that is
refused up front with the offending characters named.
"""
import os

from . import checkpoint as ckpt
from .data.text import _read_utf8
from .errors import UsageError
from .tokenizers import load_tokenizer

# model fields that come from the checkpoint (dropout may change when fine-tuning)
_MODEL_KEYS = ("n_layer", "n_head", "n_embd", "bias")


def prepare_init_from(cfg, given):
    """Fit the resolved cfg to the run in cfg.init_from, in place, and return its tokenizer.
    given: the config as the user wrote it (to tell a clash from a preset default)."""
    src = cfg.init_from
    if cfg.data is None:
        raise UsageError("--init-from needs --data: the text file to fine-tune on")
    for path in (os.path.join(src, ckpt.CONFIG), ckpt.tokenizer_file(src)):
        if not os.path.isfile(path):
            raise UsageError(f"--init-from: {src} holds no trained run (no "
                             f"{os.path.basename(path)})")
    if ckpt.latest_checkpoint(src) is None:
        raise UsageError(f"--init-from: {src} holds no trained run (no checkpoint in "
                         f"{ckpt.CHECKPOINTS}/)")
    saved = ckpt.read_json(os.path.join(src, ckpt.CONFIG), "config")["model"]
    for k in _MODEL_KEYS:
        if getattr(given, k) is not None and getattr(given, k) != saved[k]:
            raise UsageError(f"--init-from: --{k.replace('_', '-')} {getattr(given, k)} differs "
                             f"from the checkpoint's {saved[k]}; leave it out")
        setattr(cfg, k, saved[k])
    if cfg.block_size is None:
        cfg.block_size = saved["block_size"]
    elif cfg.block_size > saved["block_size"]:
        raise UsageError(f"--init-from: --block-size {cfg.block_size} is larger than the "
                         f"checkpoint's {saved['block_size']} (no position embeddings beyond it)")
    tokenizer = load_tokenizer(ckpt.tokenizer_file(src))
    text = _read_utf8(cfg.data)
    chars = getattr(tokenizer, "chars", None)
    if chars is not None and getattr(tokenizer, "unk", None) is None:
        known = set(chars)
        unknown = sorted({c for c in text if c not in known})
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UsageError(f"--init-from: {cfg.data} has {len(unknown)} character(s) outside "
                             f"the tokenizer of {src}: {shown}")
    else:
        try:
            tokenizer.encode(text[:100_000])
        except ValueError as e:
            raise UsageError(f"--init-from: {cfg.data} cannot be encoded by the tokenizer of "
                             f"{src}: {str(e).splitlines()[0]}") from None
    return tokenizer


def load_init_weights(model, src):
    """Copy the weights of the run in src into model (position embeddings cropped to the
    model's block_size)."""
    path = ckpt.model_file(src)  # its newest complete checkpoint
    arrays, _ = ckpt.load_model_arrays(path)
    key = "transformer.wpe.weight"
    if key in arrays:
        arrays[key] = arrays[key][:model.config.block_size]
    ckpt.load_model_state(model, arrays, path)
