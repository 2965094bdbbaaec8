"""Loading OpenAI's original GPT-2 tokenizer files into a BPETokenizer.

GPT-2 ships two files:
  encoder.json  token string -> id, 50,257 entries;
  vocab.bpe     a "#version" line, then 50,000 merges "left right", rank order.
Hugging Face keeps the very same files as vocab.json and merges.txt; tokenizer.json
holds both tables again (pretrained.py reads it and comes here too).

Their tokens are strings, not bytes: GPT-2 maps every byte to a printable Unicode
character (bytes_to_unicode) so that the files are plain text. A space, byte 32,
is written 'Ġ', which is why " world" appears as "Ġworld". We undo that mapping
and hand ids to the ordinary BPETokenizer, so GPT-2 text is encoded by the very
same code as a tokenizer we trained.
"""
from __future__ import annotations

from pathlib import Path

from ._byte_map import bytes_to_unicode  # noqa: F401 (public here since before _byte_map)
from ._io import TokenizerFileError, read_json
from .bpe import BPETokenizer


def load_gpt2_tokenizer(directory) -> BPETokenizer:
    """GPT-2's tokenizer from a directory holding its encoder.json and vocab.bpe.

    Encodes exactly as GPT-2 does: "Hello world" -> [15496, 995], and
    "<|endoftext|>" -> [50256].
    """
    directory = Path(directory)
    return load_byte_level_bpe(directory / "encoder.json", directory / "vocab.bpe")


def load_byte_level_bpe(vocab_path, merges_path) -> BPETokenizer:
    """A GPT-2 style tokenizer from its token table and its merge list.

    The files are the same under two pairs of names: OpenAI's encoder.json + vocab.bpe,
    and Hugging Face's vocab.json + merges.txt.
    """
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    encoder = read_json(vocab_path, f"GPT-2 {vocab_path.name}")
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"GPT-2 {merges_path.name} not found: {str(merges_path)!r}") from None
    except UnicodeDecodeError as e:
        raise TokenizerFileError(
            f"GPT-2 {merges_path.name} {str(merges_path)!r} is not UTF-8 text: {e}"
        ) from None
    pairs = []
    for line_number, line in enumerate(lines, start=1):
        if line.startswith("#version") or not line.strip():
            continue
        where = f"{str(merges_path)!r} line {line_number}"
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerFileError(f"{where}: expected 'left right', got {line!r}")
        pairs.append((parts[0], parts[1], where))
    return byte_level_bpe(encoder, pairs, repr(str(vocab_path)), str(vocab_path.parent))


def byte_level_bpe(encoder, merges, vocab_name: str, origin: str) -> BPETokenizer:
    """The BPETokenizer for a token -> id table and (left, right, where) merges, in rank order.

    vocab_name says where the table came from and origin which files, for error
    messages; `where` locates each merge in its file.
    """
    if not isinstance(encoder, dict) or not all(type(v) is int for v in encoder.values()):
        raise TokenizerFileError(f"{vocab_name} must map token strings to integer ids")

    def token_id(token: str, where: str) -> int:
        try:
            return encoder[token]
        except KeyError:
            raise TokenizerFileError(f"{where}: token {token!r} is not in {vocab_name}") from None

    byte_to_char = bytes_to_unicode()
    byte_ids = [token_id(byte_to_char[b], "byte table") for b in range(256)]
    merge_ids = [(token_id(a, where), token_id(b, where), token_id(a + b, where)) for a, b, where in merges]

    # Whatever the encoder has beyond bytes and merge results is a special token:
    # for GPT-2 that is only "<|endoftext|>".
    used = set(byte_ids) | {new for _, _, new in merge_ids}
    special = {token: i for token, i in encoder.items() if i not in used}
    try:
        return BPETokenizer(merge_ids, byte_ids=byte_ids, special_tokens=special)
    except ValueError as e:
        raise TokenizerFileError(f"GPT-2 files in {origin!r} are inconsistent: {e}") from None
