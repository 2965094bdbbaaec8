"""GPT-2's byte <-> printable-character table, shared by the loaders and the writer of
byte-level BPE files (vocab.json / merges.txt hold tokens as these characters)."""


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
