"""Reading and writing tokenizer JSON files, with errors that name the file."""
from __future__ import annotations

import json
from pathlib import Path

from ..serialization import atomic_write_bytes


class TokenizerFileError(ValueError):
    """A tokenizer file exists but is not a valid tokenizer (bad JSON, wrong fields)."""


def write_json_atomic(path, data: dict) -> None:
    """Write `data` as JSON so that `path` is either the old file or the whole new one
    (serialization.atomic_write_bytes: temp file, fsync, rename; the umask is honoured)."""
    atomic_write_bytes(str(path), [_format(data).encode("utf-8")])


def _format(data: dict) -> str:
    """JSON with one top-level key per line, and a table (a list of lists) one row a line.

    Meant to be read by people too (a merge table is one [left, right, new] row a
    line), yet it is plain JSON. ensure_ascii escapes non-ASCII characters: a lone
    surrogate (possible in a Python str) cannot be written as UTF-8 otherwise.
    """
    rows = []
    for key, value in data.items():
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            items = ",\n  ".join(json.dumps(v) for v in value)
            rows.append(f"{json.dumps(key)}: [\n  {items}\n ]")
        else:
            rows.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{\n " + ",\n ".join(rows) + "\n}\n"


def read_json(path, what: str = "tokenizer file"):
    """Parse the JSON file at `path`; any failure raises an error naming the file.

    A missing file raises FileNotFoundError (the usual exception type, so callers
    can catch it), a file that is not JSON raises TokenizerFileError.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {str(path)!r}") from None
    except IsADirectoryError:
        raise TokenizerFileError(f"{what} {str(path)!r} is a directory, not a file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerFileError(f"{what} {str(path)!r} is not valid JSON: {e}") from None


def expect(condition: bool, path, message: str) -> None:
    """Raise TokenizerFileError naming `path` unless `condition` holds."""
    if not condition:
        raise TokenizerFileError(f"tokenizer file {str(path)!r}: {message}")


def read_typed(path, expected_type: str) -> dict:
    """Read a tokenizer JSON and check that its "type" is `expected_type`."""
    data = read_json(path)
    expect(isinstance(data, dict), path, "expected a JSON object at the top level")
    kind = data.get("type")
    expect(
        kind == expected_type,
        path,
        f"has type {kind!r}, expected {expected_type!r} "
        "(tensorlite.tokenizers.load_tokenizer picks the right class by itself)",
    )
    return data
