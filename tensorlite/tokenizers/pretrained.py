"""from_pretrained(folder): the tokenizer of a local Hugging Face model folder.

What a folder holds, and what we build from it (first match wins):
  tokenizer.json            the `tokenizers` library's own file; model.type "WordPiece"
                            gives a WordPieceTokenizer, "BPE" (byte-level, GPT-2 style)
                            a BPETokenizer;
  vocab.txt                 BERT's vocabulary, one token a line: WordPiece;
  vocab.json + merges.txt   GPT-2's files under Hugging Face's names: BPE;
  encoder.json + vocab.bpe  the same files under OpenAI's names: BPE.
tokenizer_config.json and special_tokens_map.json, when present, add the settings
(lower case, accents, special tokens, model_max_length), as transformers reads them.

Nothing is ever downloaded: a name like "gpt2" that is not a folder is an error.
"""

from __future__ import annotations

from pathlib import Path

from ._io import TokenizerFileError, expect, read_json
from .bpe import BPETokenizer
from .gpt2 import byte_level_bpe, load_byte_level_bpe
from .wordpiece import NO_LIMIT, ROLES, WordPieceTokenizer

_BERT_DEFAULTS = dict(do_lower_case=True, strip_accents=None, tokenize_chinese_chars=True)
_ROLE_DEFAULTS = dict(unk="[UNK]", cls="[CLS]", sep="[SEP]", pad="[PAD]", mask="[MASK]")


def from_pretrained(path):
    """A WordPieceTokenizer or BPETokenizer for the local Hugging Face folder `path`."""
    folder = Path(path)
    if not folder.is_dir():
        if folder.exists():
            raise NotADirectoryError(
                f"from_pretrained: {str(path)!r} is a file; pass the folder that holds the tokenizer files"
            )
        raise FileNotFoundError(
            f"from_pretrained: {str(path)!r} is not a local folder; tensorlite never downloads -- get "
            f"the folder on a machine with internet, e.g. huggingface-cli download {path} --local-dir DIR, "
            "and pass DIR"
        )
    config = _read_config(folder)
    if (folder / "tokenizer.json").is_file():
        return _from_tokenizer_json(folder / "tokenizer.json", config)
    if (folder / "vocab.txt").is_file():
        return _wordpiece(read_vocab_txt(folder / "vocab.txt"), config, folder / "tokenizer_config.json")
    for vocab, merges in (("vocab.json", "merges.txt"), ("encoder.json", "vocab.bpe")):
        if (folder / vocab).is_file() and (folder / merges).is_file():
            _check_bpe_config(config, folder / "tokenizer_config.json")
            return load_byte_level_bpe(folder / vocab, folder / merges)
    raise FileNotFoundError(
        f"from_pretrained: no tokenizer files in {str(folder)!r}: looked for tokenizer.json, vocab.txt "
        "(WordPiece), vocab.json + merges.txt or encoder.json + vocab.bpe (GPT-2 byte-level BPE)"
    )


# ----------------------------------------------------------------------------- reading


def read_vocab_txt(path) -> list[str]:
    """BERT's vocab.txt: token k on line k. Only the line break is taken off, as HF does."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise TokenizerFileError(f"vocab file {str(path)!r} is not UTF-8 text: {e}") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()  # the final line break ends the last line; it does not start a token
    expect(bool(tokens), path, "the vocabulary is empty")
    seen: dict[str, int] = {}
    for number, token in enumerate(tokens, start=1):
        if token in seen:
            raise TokenizerFileError(
                f"vocab file {str(path)!r}: line {number} repeats line {seen[token]} ({token!r}); "
                "each token must appear once"
            )
        seen[token] = number
    return tokens


def _read_config(folder: Path) -> dict:
    """tokenizer_config.json, with special_tokens_map.json filling in the tokens it lacks."""
    config: dict = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the later file wins
        path = folder / name
        if path.is_file():
            data = read_json(path, name)
            expect(isinstance(data, dict), path, "expected a JSON object at the top level")
            config.update(data)
    return config


def _token_text(value, where) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or an AddedToken dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerFileError(f"{where}: a special token must be a string or have a 'content', got {value!r}")


def _wordpiece(vocab, config: dict, config_path, json_settings: dict | None = None, added=()):
    """Build the WordPieceTokenizer; settings from tokenizer.json, then tokenizer_config.json.

    transformers' BertTokenizer takes lower case, accents and CJK handling from its
    config (with its own defaults), whatever tokenizer.json says: so do we when the
    config names a BERT tokenizer class. Other settings come from tokenizer.json.
    """
    settings = dict(json_settings or _BERT_DEFAULTS)
    cls_name = str(config.get("tokenizer_class") or "")
    if json_settings is None or cls_name.endswith(("BertTokenizer", "BertTokenizerFast")):
        for key, default in _BERT_DEFAULTS.items():
            settings[key] = config.get(key, default)
    for key in ("do_lower_case", "tokenize_chinese_chars"):
        expect(isinstance(settings[key], bool), config_path, f"{key!r} must be true or false")
    expect(
        settings["strip_accents"] in (None, True, False),
        config_path,
        "'strip_accents' must be true, false or null",
    )
    max_len = config.get("model_max_length", NO_LIMIT)
    expect(
        isinstance(max_len, (int, float)) and max_len > 0,
        config_path,
        "'model_max_length' must be a positive number",
    )
    settings["model_max_length"] = int(min(max_len, NO_LIMIT))
    settings["clean_up_tokenization_spaces"] = bool(config.get("clean_up_tokenization_spaces", False))

    entries = _added_entries(config, added, config_path)
    known = set(vocab) | {e["content"] for e in entries}
    for role in ROLES:
        key = f"{role}_token"
        if key in config:
            settings[key] = _token_text(config[key], config_path)
        elif role == "unk" or _ROLE_DEFAULTS[role] in known:
            settings[key] = _ROLE_DEFAULTS[role]
        else:
            settings[key] = None  # a default that this vocabulary does not have: no such token
    try:
        tok = WordPieceTokenizer(
            vocab,
            added_tokens=[{k: e[k] for k in ("content", "special", "normalized")} for e in entries],
            **settings,
        )
    except ValueError as e:
        raise TokenizerFileError(f"tokenizer files in {str(Path(config_path).parent)!r}: {e}") from None
    ids = tok.get_vocab()
    for e in entries:
        expect(
            ids[e["content"]] == e["id"],
            config_path,
            f"added token {e['content']!r} has id {e['id']} but the vocabulary gives it {ids[e['content']]}",
        )
    return tok


def _added_entries(config: dict, added, where) -> list[dict]:
    """Added tokens from tokenizer.json's list and tokenizer_config.json's added_tokens_decoder, by id."""
    added = list(added)
    decoder = config.get("added_tokens_decoder") or {}
    expect(isinstance(decoder, dict), where, "'added_tokens_decoder' must map ids to tokens")
    for key, entry in decoder.items():
        expect(
            isinstance(entry, dict) and str(key).isdigit(), where, f"added_tokens_decoder[{key!r}] is malformed"
        )
        added.append(dict(entry, id=int(key)))
    entries = []
    for entry in sorted(added, key=lambda e: e["id"]):
        for flag in ("lstrip", "rstrip", "single_word"):
            expect(
                not entry.get(flag),
                where,
                f"added token {entry.get('content')!r} has {flag}=true, which tensorlite does not support",
            )
        entries.append(
            dict(
                content=_token_text(entry, where),
                id=entry["id"],
                special=bool(entry.get("special", True)),
                normalized=bool(entry.get("normalized", False)),
            )
        )
    return entries


def _from_tokenizer_json(path: Path, config: dict):
    data = read_json(path, "tokenizer.json")
    expect(
        isinstance(data, dict) and isinstance(data.get("model"), dict),
        path,
        "expected an object with a 'model'",
    )
    kind = data["model"].get("type")
    added = data.get("added_tokens") or []
    expect(
        isinstance(added, list)
        and all(isinstance(e, dict) and type(e.get("id")) is int for e in added)
        and all(isinstance(e.get("content"), str) for e in added),
        path,
        "'added_tokens' must be a list of objects with an integer id and a string content",
    )
    if kind == "WordPiece":
        return _wordpiece_from_json(data, path, config, added)
    if kind == "BPE":
        _check_bpe_config(config, path.parent / "tokenizer_config.json")
        return _bpe_from_json(data, path, added)
    raise TokenizerFileError(
        f"tokenizer file {str(path)!r}: model type {kind!r} is not supported "
        "(tensorlite reads WordPiece and byte-level BPE)"
    )


def _section(data: dict, name: str, path) -> dict | None:
    value = data.get(name)
    expect(value is None or isinstance(value, dict), path, f"{name!r} must be an object or null")
    return value


def _wordpiece_from_json(data: dict, path: Path, config: dict, added: list):
    model = data["model"]
    vocab = model.get("vocab")
    expect(
        isinstance(vocab, dict) and all(type(i) is int for i in vocab.values()),
        path,
        "model.vocab must map tokens to integer ids",
    )
    normalizer, pre, post, decoder = (
        _section(data, k, path) for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")
    )
    settings = dict(clean_text=False, tokenize_chinese_chars=False, do_lower_case=False, strip_accents=None)
    if normalizer is not None:
        expect(
            normalizer.get("type") == "BertNormalizer",
            path,
            f"normalizer type {normalizer.get('type')!r} is not supported (only BertNormalizer)",
        )
        settings = dict(
            clean_text=bool(normalizer.get("clean_text", True)),
            tokenize_chinese_chars=bool(normalizer.get("handle_chinese_chars", True)),
            do_lower_case=bool(normalizer.get("lowercase", True)),
            strip_accents=normalizer.get("strip_accents"),
        )
    expect(
        pre is not None and pre.get("type") == "BertPreTokenizer",
        path,
        f"pre_tokenizer {pre and pre.get('type')!r} is not supported (only BertPreTokenizer)",
    )
    settings["unk_token"] = model.get("unk_token", "[UNK]")
    settings["continuing_subword_prefix"] = model.get("continuing_subword_prefix", "##")
    settings["max_input_chars_per_word"] = model.get("max_input_chars_per_word", 100)
    expect(
        isinstance(settings["continuing_subword_prefix"], str)
        and type(settings["max_input_chars_per_word"]) is int,
        path,
        "model.continuing_subword_prefix must be a string and max_input_chars_per_word an integer",
    )
    if decoder is not None:
        expect(
            decoder.get("type") == "WordPiece", path, f"decoder type {decoder.get('type')!r} is not supported"
        )
        settings["decoder_cleanup"] = bool(decoder.get("cleanup", True))
    if post is not None:
        settings.update(_cls_sep(post, path))
    # The tokens that tokenizer_config.json does not name keep what tokenizer.json says.
    config = {**{k: v for k, v in settings.items() if k in ("cls_token", "sep_token", "unk_token")}, **config}
    json_settings = {k: v for k, v in settings.items() if k not in ("cls_token", "sep_token", "unk_token")}
    return _wordpiece(vocab, config, path.parent / "tokenizer_config.json", json_settings, added)


def _cls_sep(post: dict, path) -> dict:
    """[CLS] and [SEP] from a BertProcessing or a BERT-shaped TemplateProcessing."""
    kind = post.get("type")
    if kind == "BertProcessing":
        cls, sep = post.get("cls"), post.get("sep")
        expect(
            all(isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) for x in (cls, sep)),
            path,
            "post_processor needs 'cls' and 'sep' as [token, id]",
        )
        return dict(cls_token=cls[0], sep_token=sep[0])
    if kind == "TemplateProcessing":
        single = post.get("single") or []
        try:
            parts = [next(iter(p.items())) for p in single]
            shape = [k for k, _ in parts]
            first, last = parts[0][1]["id"], parts[-1][1]["id"]
        except (AttributeError, IndexError, KeyError, StopIteration, TypeError):
            shape = None
        if shape == ["SpecialToken", "Sequence", "SpecialToken"]:
            return dict(cls_token=first, sep_token=last)
    raise TokenizerFileError(
        f"tokenizer file {str(path)!r}: post_processor {kind!r} is not BERT's "
        "[CLS] A [SEP] (B [SEP]) and is not supported"
    )


def _check_bpe_config(config: dict, path) -> None:
    # GPT-2 sets none of these; a model that does would encode otherwise than we do.
    for key in ("add_prefix_space", "add_bos_token", "add_eos_token"):
        expect(
            not config.get(key), path, f"{key}=true is not supported (tensorlite's BPE encodes as GPT-2 does)"
        )


def _bpe_from_json(data: dict, path: Path, added: list) -> BPETokenizer:
    model = data["model"]
    pre, decoder = _section(data, "pre_tokenizer", path), _section(data, "decoder", path)
    expect(
        pre is not None and pre.get("type") == "ByteLevel",
        path,
        f"pre_tokenizer {pre and pre.get('type')!r} is not supported for BPE (only GPT-2's ByteLevel)",
    )
    expect(
        decoder is None or decoder.get("type") == "ByteLevel",
        path,
        f"decoder {(decoder or {}).get('type')!r} is not supported for BPE (only GPT-2's ByteLevel)",
    )
    expect(
        not pre.get("add_prefix_space", False) and pre.get("use_regex", True),
        path,
        "only GPT-2's byte-level pre-tokenizer (add_prefix_space=false, use_regex=true) is supported",
    )
    expect(_section(data, "normalizer", path) is None, path, "a BPE normalizer is not supported")
    post = _section(data, "post_processor", path)
    # GPT-2 adds no tokens around the text: no post-processor, ByteLevel (offsets only),
    # or a template that is the text alone, as transformers 5 writes it.
    adds_nothing = (
        post is None
        or post.get("type") == "ByteLevel"
        or (
            post.get("type") == "TemplateProcessing"
            and all(isinstance(p, dict) and list(p) == ["Sequence"] for p in post.get("single") or [None])
        )
    )
    expect(
        adds_nothing,
        path,
        f"post_processor {post and post.get('type')!r} adds tokens around the text, "
        "which tensorlite's BPE does not do",
    )
    for key, ok in (
        ("dropout", None),
        ("continuing_subword_prefix", ""),
        ("end_of_word_suffix", ""),
        ("byte_fallback", False),
        ("ignore_merges", False),
    ):
        expect(model.get(key) in (ok, None), path, f"model.{key}={model.get(key)!r} is not supported")
    vocab, merges = model.get("vocab"), model.get("merges")
    expect(
        isinstance(vocab, dict) and all(type(i) is int for i in vocab.values()),
        path,
        "model.vocab must map tokens to integer ids",
    )
    expect(isinstance(merges, list), path, "model.merges must be a list")
    vocab = dict(vocab)
    for entry in added:
        vocab.setdefault(entry.get("content"), entry["id"])
    pairs = []
    for k, merge in enumerate(merges):
        # Older files write a merge as "left right", newer ones as ["left", "right"].
        parts = merge.split(" ") if isinstance(merge, str) else merge
        expect(
            isinstance(parts, list) and len(parts) == 2 and all(isinstance(p, str) for p in parts),
            path,
            f"model.merges[{k}] must be 'left right' or [left, right], got {merge!r}",
        )
        pairs.append((parts[0], parts[1], f"{str(path)!r} model.merges[{k}]"))
    return byte_level_bpe(vocab, pairs, f"model.vocab of {str(path)!r}", str(path))
