"""tensorlite.data: tokenized text files, batches, and the synthetic tasks."""

import numpy as np
import pytest

from tensorlite.data import (IGNORE_INDEX, AdditionTask, DataError, SortTask, TokenFile,
                             encode_file, get_batch, split_train_val)


class CharTokenizer:
    """One token per character (its code point); counts encode calls so tests
    can tell a cache hit from a fresh encoding."""

    def __init__(self, vocab_size=256):
        self.vocab_size = vocab_size
        self.calls = 0

    def encode(self, text):
        self.calls += 1
        return [ord(ch) for ch in text]


TEXT = "the quick brown fox jumps over the lazy dog. " * 20  # 900 characters


@pytest.fixture
def text_file(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def open_tokens(path, tok, cache_dir, key="char-v1", **kw):
    return TokenFile(path, tok, tokenizer_key=key, cache_dir=cache_dir, **kw)


# -- text files: encoding and the cache ------------------------------------

def test_encodes_to_memmapped_uint16(text_file, tmp_path):
    data = open_tokens(text_file, CharTokenizer(), tmp_path / "run")
    assert isinstance(data.ids, np.memmap)
    assert data.ids.dtype == np.uint16
    assert "".join(map(chr, data.ids)) == TEXT
    assert data.cache_path.parent == tmp_path / "run"
    # No temp files left behind by the write-then-rename.
    assert [p.name for p in (tmp_path / "run").iterdir()] == [data.cache_path.name]


def test_large_vocab_uses_uint32(text_file, tmp_path):
    data = open_tokens(text_file, CharTokenizer(vocab_size=70_000), tmp_path)
    assert data.ids.dtype == np.uint32


def test_cache_is_reused(text_file, tmp_path):
    tok = CharTokenizer()
    first = open_tokens(text_file, tok, tmp_path)
    second = open_tokens(text_file, tok, tmp_path)
    assert tok.calls == 1
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.cache_path == second.cache_path
    np.testing.assert_array_equal(first.ids, second.ids)


def test_changed_file_is_reencoded(text_file, tmp_path):
    tok = CharTokenizer()
    before = open_tokens(text_file, tok, tmp_path)
    text_file.write_text(TEXT.upper(), encoding="utf-8")  # same length, new bytes
    after = open_tokens(text_file, tok, tmp_path)
    assert tok.calls == 2 and not after.from_cache
    assert after.cache_path != before.cache_path
    assert "".join(map(chr, after.ids)) == TEXT.upper()


def test_changed_tokenizer_is_reencoded(text_file, tmp_path):
    tok = CharTokenizer()
    open_tokens(text_file, tok, tmp_path, key='{"merges": []}')
    again = open_tokens(text_file, tok, tmp_path, key='{"merges": [[1, 2]]}')
    assert tok.calls == 2 and not again.from_cache


def test_encode_array_is_preferred(text_file, tmp_path):
    class ArrayTokenizer(CharTokenizer):
        def encode_array(self, text):
            return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    ids, _, _ = encode_file(text_file, ArrayTokenizer(), tokenizer_key="bytes", cache_dir=tmp_path)
    assert bytes(ids.astype(np.uint8)) == TEXT.encode()


def test_train_val_split(text_file, tmp_path):
    data = open_tokens(text_file, CharTokenizer(), tmp_path, val_fraction=0.1)
    assert len(data.train) + len(data.val) == len(data) == len(TEXT)
    assert len(data.val) == 90
    np.testing.assert_array_equal(data.val, data.ids[-90:])  # the val split is the end
    train, val = split_train_val(np.arange(10), 0.0)
    assert len(train) == 10 and len(val) == 0
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_val(np.arange(10), 1.0)


# -- batches -----------------------------------------------------------------

def test_batches_are_deterministic_and_shifted(text_file, tmp_path):
    data = open_tokens(text_file, CharTokenizer(), tmp_path)
    x1, y1 = data.get_batch("train", 8, 16, np.random.default_rng(42))
    x2, y2 = data.get_batch("train", 8, 16, np.random.default_rng(42))
    x3, _ = data.get_batch("train", 8, 16, np.random.default_rng(43))
    assert x1.shape == y1.shape == (8, 16) and x1.dtype == y1.dtype == np.int64
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)
    np.testing.assert_array_equal(x1[:, 1:], y1[:, :-1])
    # Every row is a contiguous stretch of the text, and y's last token follows it.
    train = "".join(map(chr, data.train))
    for xr, yr in zip(x1, y1):
        assert "".join(map(chr, xr)) + chr(yr[-1]) in train


def test_batches_reach_both_ends():
    """Starts range over 0 .. n-block_size-1: the first and last tokens get used."""
    data = np.arange(20)
    x, y = get_batch(data, 2000, 5, np.random.default_rng(0))
    assert x.min() == 0 and y.max() == 19
    assert x[:, 0].max() == 20 - 5 - 1


def test_data_shorter_than_a_block(text_file, tmp_path):
    with pytest.raises(DataError, match=r"only 10 tokens.*needs 11"):
        get_batch(np.arange(10), 4, 10, np.random.default_rng(0))
    get_batch(np.arange(11), 4, 10, np.random.default_rng(0))  # exactly enough

    # The val split (90 tokens) is too short for block_size 100; the error says so at start-up.
    with pytest.raises(DataError, match=r"900 tokens; its val split \(10%\) has 90.*needs at least 101"):
        open_tokens(text_file, CharTokenizer(), tmp_path, block_size=100)


# -- error cases ---------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        open_tokens(tmp_path / "nope.txt", CharTokenizer(), tmp_path)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt is empty"):
        open_tokens(p, CharTokenizer(), tmp_path)


def test_non_utf8_names_file_and_offset(tmp_path):
    p = tmp_path / "latin1.txt"
    p.write_bytes("caf".encode() + "é au lait".encode("latin-1"))  # 0xe9 at byte 3
    with pytest.raises(DataError, match=r"latin1.txt is not valid UTF-8: byte 3 \(0xe9\)"):
        open_tokens(p, CharTokenizer(), tmp_path)
    assert not any(tmp_path.glob("*.npy"))


# -- synthetic tasks -------------------------------------------------------------

def addition_answer(task, prompt_ids):
    """What a perfect model writes: the reversed, padded sum, then END."""
    a, b = task.decode(prompt_ids)[:-1].split("+")
    return task.encode(f"{int(a) + int(b):0{task.n_digits + 1}d}"[::-1] + ".")


def sort_answer(task, prompt_ids):
    seq = task.decode(prompt_ids)[:-1]
    return task.encode("".join(sorted(seq, key=task.alphabet.index)) + ".")


def perfect(task, answer_fn):
    def predict(prompts, n_new):
        assert n_new == task.n_new and prompts.dtype == np.int64
        return np.stack([answer_fn(task, p) for p in prompts])
    return predict


def test_addition_format():
    task = AdditionTask(n_digits=2)
    assert task.problem(17 * 100 + 25) == ("17+25=", "240.")
    assert task.problem(5 * 100 + 3) == ("05+03=", "800.")
    assert AdditionTask(n_digits=3).problem(999_999) == ("999+999=", "8991.")
    assert task.block_size == len("17+25=240.") - 1
    assert task.vocab_size == 13
    assert task.decode(task.encode("17+25=240.")) == "17+25=240."
    with pytest.raises(ValueError, match="vocabulary"):
        task.encode("1-2")


def test_sort_format():
    task = SortTask(length=4, alphabet="dcba", n_heldout=10)
    for k in range(0, task.n_problems, 17):
        prompt, answer = task.problem(k)
        seq = prompt[:-1]
        assert answer == "".join(sorted(seq, key="dcba".index)) + "."


@pytest.mark.parametrize("make,answer_fn", [
    (lambda: AdditionTask(2, seed=3), addition_answer),
    (lambda: SortTask(4, "abcde", seed=3), sort_answer),
])
def test_task_batches_masked_and_shifted(make, answer_fn):
    task = make()
    x, y = task.get_batch(32, np.random.default_rng(0))
    x2, y2 = task.get_batch(32, np.random.default_rng(0))
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == y.shape == (32, task.block_size) and x.dtype == y.dtype == np.int64
    P = task.prompt_len
    assert np.all(y[:, : P - 1] == IGNORE_INDEX)   # predicting the prompt is not scored
    np.testing.assert_array_equal(x[:, P:], y[:, P - 1:-1])  # shifted by one where scored
    for row_x, row_y in zip(x, y):
        assert task.decode(row_x[P - 1:P]) == "="
        # The scored targets are exactly the right answer and END.
        np.testing.assert_array_equal(row_y[P - 1:], answer_fn(task, row_x[:P]))


def test_heldout_never_trained_on():
    task = AdditionTask(2, seed=5, n_heldout=1000)
    heldout = {task.decode(p) for p in task.heldout_prompts()[0]}
    assert len(heldout) == 1000
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):  # 12,800 draws from 9,000 training problems
        x, _ = task.get_batch(64, rng)
        seen.update(task.decode(row[: task.prompt_len]) for row in x)
    assert not seen & heldout
    assert len(seen) > 6000  # training does cover the rest of the problems


def test_heldout_split_depends_only_on_seed():
    a, b, c = AdditionTask(2, seed=1), AdditionTask(2, seed=1), AdditionTask(2, seed=2)
    np.testing.assert_array_equal(a.heldout_ids, b.heldout_ids)
    assert not np.array_equal(a.heldout_ids, c.heldout_ids)
    with pytest.raises(ValueError, match="n_heldout"):
        AdditionTask(1, n_heldout=60)  # 100 problems: at most 50 may be held out


@pytest.mark.parametrize("make,answer_fn", [
    (lambda: AdditionTask(2, seed=0, n_heldout=300), addition_answer),
    (lambda: AdditionTask(3, seed=0, n_heldout=300), addition_answer),
    (lambda: SortTask(5, seed=0, n_heldout=300), sort_answer),
])
def test_evaluate_perfect_and_wrong_predictors(make, answer_fn):
    task = make()
    assert task.evaluate(perfect(task, answer_fn), batch_size=64) == 1.0

    def off_by_end(prompts, n_new):  # right digits, but no END token
        out = perfect(task, answer_fn)(prompts, n_new)
        out[:, -1] = task.stoi["="]
        return out
    assert task.evaluate(off_by_end) == 0.0

    def half_right(prompts, n_new):  # wrong on every other problem
        out = perfect(task, answer_fn)(prompts, n_new)
        out[::2, 0] = (out[::2, 0] + 1) % 10
        return out
    assert task.evaluate(half_right, n=100, batch_size=64) == pytest.approx(0.5)

    with pytest.raises(ValueError, match="shape"):
        task.evaluate(lambda p, n: np.zeros((len(p), n + 1), dtype=np.int64))
