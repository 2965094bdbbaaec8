"""Hugging Face model folders, read and written by tensorlite itself (no transformers, no
torch, no downloads): GPT-2 (model_type "gpt2") into models.GPT and BERT ("bert") into
models.BertModel, with save_pretrained writing the folders back in HF's layout.

    model = tensorlite.from_pretrained("path/to/gpt2")   # or GPT.from_pretrained(...)
    model.save_pretrained("out")

folder.py   the folder: config.json, safetensors headers and weights, checks, atomic writes
gpt2.py     GPT-2's tensors and config <-> GPT's
bert.py     BERT's tensors and config <-> BertModel's (+ sentence-transformers settings)
auto.py     from_pretrained: the class model_type names
See docs/PRETRAINED.md."""
from .auto import from_pretrained  # noqa: F401
from .folder import PretrainedError  # noqa: F401
