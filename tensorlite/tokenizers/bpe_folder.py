"""Writing a BPETokenizer as a Hugging Face folder (vocab.json + merges.txt +
tokenizer_config.json) that transformers' GPT2Tokenizer and tensorlite.tokenizers.from_pretrained
both load. Its own module so that bpe.py can offer save_pretrained without importing the
readers (which import bpe.py)."""
import json
from pathlib import Path

from ._byte_map import bytes_to_unicode


def save_bpe_pretrained(tokenizer, directory) -> list[Path]:
    """vocab.json + merges.txt + tokenizer_config.json, as transformers' GPT2Tokenizer reads them."""
    char = bytes_to_unicode()
    special = tokenizer.special_tokens
    special_ids = {i: t for t, i in special.items()}
    names = []
    for i in range(tokenizer.vocab_size):
        names.append(special_ids[i] if i in special_ids else "".join(char[b] for b in tokenizer.token_bytes(i)))
    vocab = {}
    for i, name in enumerate(names):
        if name in vocab:
            raise ValueError(
                f"save_pretrained: ids {vocab[name]} and {i} are the same token {name!r}; "
                "vocab.json cannot tell them apart"
            )
        vocab[name] = i
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    eos = "<|endoftext|>" if "<|endoftext|>" in special else None
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "add_bos_token": False,
        "errors": "replace",
        **({"bos_token": eos, "eos_token": eos, "unk_token": eos} if eos else {}),
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for i, t in sorted(special_ids.items())
        },
    }
    paths = [
        directory / n for n in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")
    ]
    paths[0].write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
    merges = "".join(f"{names[a]} {names[b]}\n" for a, b, _ in tokenizer.merges)
    paths[1].write_text("#version: 0.2\n" + merges, encoding="utf-8")
    paths[2].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    token_map = {k: config[k] for k in ("bos_token", "eos_token", "unk_token") if k in config}
    paths[3].write_text(json.dumps(token_map, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return paths
