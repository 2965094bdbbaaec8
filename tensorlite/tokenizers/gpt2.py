"""Loading OpenAI's original GPT-2 tokenizer files into a BPETokenizer.

GPT-2 ships two files:
  encoder.json  token string -> id, 50,257 entries;
  vocab.bpe     a "#version" line, then 50,000 merges "left right", rank order.

Their tokens are strings, not bytes: GPT-2 maps every byte to a printable Unicode
character (bytes_to_unicode) so that the files are plain text. A space, byte 32,
is written 'Ġ', which is why " world" appears as "Ġworld". We undo that mapping
and hand ids to the ordinary BPETokenizer, so GPT-2 text is encoded by the very
same code as a tokenizer we trained.
"""
from __future__ import annotations

from pathlib import Path

from ._io import TokenizerFileError, read_json
from .bpe import BPETokenizer


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> character table.

    Bytes that are already visible, non-space Latin-1 characters ('!'..'~',
    '¡'..'¬', '®'..'ÿ') stand for themselves; the other 68 (control characters,
    space, soft hyphen, ...) are given the characters 256, 257, ... in byte order.
    """
    visible = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in visible}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def load_gpt2_tokenizer(directory) -> BPETokenizer:
    """GPT-2's tokenizer from a directory holding its encoder.json and vocab.bpe.

    Encodes exactly as GPT-2 does: "Hello world" -> [15496, 995], and
    "<|endoftext|>" -> [50256].
    """
    directory = Path(directory)
    encoder_path = directory / "encoder.json"
    merges_path = directory / "vocab.bpe"
    encoder = read_json(encoder_path, "GPT-2 encoder.json")
    if not isinstance(encoder, dict) or not all(type(v) is int for v in encoder.values()):
        raise TokenizerFileError(f"{str(encoder_path)!r} must map token strings to integer ids")
    try:
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"GPT-2 vocab.bpe not found: {str(merges_path)!r}") from None
    except UnicodeDecodeError as e:
        raise TokenizerFileError(f"GPT-2 vocab.bpe {str(merges_path)!r} is not UTF-8 text: {e}") from None

    def token_id(token: str, where: str) -> int:
        try:
            return encoder[token]
        except KeyError:
            raise TokenizerFileError(f"{where}: token {token!r} is not in {str(encoder_path)!r}") from None

    byte_to_char = bytes_to_unicode()
    byte_ids = [token_id(byte_to_char[b], "byte table") for b in range(256)]

    merges = []
    for line_number, line in enumerate(lines, start=1):
        if line.startswith("#version") or not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenizerFileError(
                f"{str(merges_path)!r} line {line_number}: expected 'left right', got {line!r}"
            )
        where = f"{str(merges_path)!r} line {line_number}"
        left, right = parts
        merges.append((token_id(left, where), token_id(right, where), token_id(left + right, where)))

    # Whatever the encoder has beyond bytes and merge results is a special token:
    # for GPT-2 that is only "<|endoftext|>".
    used = set(byte_ids) | {new for _, _, new in merges}
    special = {token: i for token, i in encoder.items() if i not in used}
    try:
        return BPETokenizer(merges, byte_ids=byte_ids, special_tokens=special)
    except ValueError as e:
        raise TokenizerFileError(f"GPT-2 files in {str(directory)!r} are inconsistent: {e}") from None
