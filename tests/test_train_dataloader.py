"""The trainer draws its batches through tensorlite.utils.data.DataLoader
(tensorlite/train_data.py): the Datasets' items, the batches being those of a DataLoader
built by hand with the run's seed (and the draws of the get_batch functions from before),
a resume drawing the next batches of the uninterrupted run, and the split of one global
batch among ranks and micro-steps."""
import json
import os

import numpy as np
import pytest

import tensorlite.train as T
from tensorlite import checkpoint as ckpt
from tensorlite.data.text import TokenFile
from tensorlite.seq2seq_run import Seq2SeqTaskData
from tensorlite.tokenizers import CharTokenizer, load_tokenizer
from tensorlite.train import TrainConfig, latest_checkpoint, train
from tensorlite.train_data import (RandomBatches, TaskData, TextData, TokenWindows,
                                   stack_pairs)
from tensorlite.train_loop import Dist, my_rows
from tensorlite.utils.data import DataLoader

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
        "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die.\n") * 12
SMALL = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, eval_iters=1,
             warmup=2, dropout=0.0, threads=1, progress="none", seed=7)


@pytest.fixture
def data_file(tmp_path):
    p = tmp_path / "input.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


def quiet(cfg):
    return train(cfg, log=lambda *a: None)


def record_batches(monkeypatch):
    """The (x, y) of every train_step call from now on, as NumPy arrays."""
    seen, real = [], T.train_step

    def step(model, opt, x, y, *a, **kw):
        seen.append((x.numpy().copy(), y.numpy().copy()))
        return real(model, opt, x, y, *a, **kw)
    monkeypatch.setattr(T, "train_step", step)
    return seen


def text_data(path, tmp_path, block_size=8):
    tok = CharTokenizer.from_text(TEXT)
    cfg = TrainConfig(data=path, block_size=block_size)
    return TextData(cfg, tok, str(tmp_path / "cache"))


def test_text_item_i_is_the_window_at_offset_i(data_file, tmp_path):
    data = text_data(data_file, tmp_path)
    tokens = np.asarray(data.file.train, dtype=np.int64)
    ds = data.dataset("train", 8)
    assert isinstance(ds, TokenWindows) and len(ds) == len(tokens) - 8
    for i in (0, 1, 57, len(ds) - 1):
        x, y = ds[i]
        np.testing.assert_array_equal(x, tokens[i:i + 8])
        np.testing.assert_array_equal(y, tokens[i + 1:i + 9])
        assert x.dtype == y.dtype == np.int64
    with pytest.raises(IndexError):
        ds[len(ds)]
    with pytest.raises(IndexError):
        ds.__getitems__([0, -1])
    xb, yb = stack_pairs(ds.__getitems__([3, 0, 3]))
    assert xb.shape == yb.shape == (3, 8) and xb.dtype == np.int64
    np.testing.assert_array_equal(xb[0], tokens[3:11])
    np.testing.assert_array_equal(yb[1], tokens[1:9])


def test_task_item_k_is_problem_k():
    data = TaskData(TrainConfig(task="addition").resolved())
    x, y = data.dataset("train", None)[1725]  # 17 + 25 = 42, written "17+25=240."
    assert data.task.decode(x) == "17+25=240"
    assert data.task.decode(y[data.task.prompt_len - 1:]) == "240."
    assert (y[:data.task.prompt_len - 1] == -100).all()
    assert len(data.dataset("train", None)) == data.task.n_problems


def test_the_loaders_draw_the_get_batch_draws(data_file, tmp_path):
    # the same numbers from the same Generator as the batch functions from before the
    # DataLoader: a run's batches did not change, and the generator ends where they left it
    text = text_data(data_file, tmp_path)
    task = TaskData(TrainConfig(task="sort").resolved())
    s2s = Seq2SeqTaskData(TrainConfig(task="reverse").resolved())

    def old_seq2seq(n, rng):
        return s2s.pack(s2s.task.get_batch(n, rng))
    cases = [(text, lambda n, rng: text.file.get_batch("train", n, 8, rng)),
             (task, task.task.get_batch), (s2s, old_seq2seq)]
    for data, old in cases:
        new_rng, old_rng = np.random.default_rng(3), np.random.default_rng(3)
        for n in (5, 5, 2, 16):
            a, b = data.batch("train", n, 8, new_rng), old(n, old_rng)
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
                assert u.dtype == np.int64
            assert new_rng.bit_generator.state == old_rng.bit_generator.state


def test_the_sampler_draws_only_when_asked():
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    it = iter(DataLoader(TokenWindows(np.arange(50), 4),
                         batch_sampler=RandomBatches(range(46), 3, rng), collate_fn=stack_pairs))
    assert rng.bit_generator.state == before  # nothing drawn ahead of the first batch
    x, _ = next(it)
    assert x.shape == (3, 4)
    ref = np.random.default_rng(0)
    np.testing.assert_array_equal(x[:, 0], ref.integers(0, 46, size=3))
    assert rng.bit_generator.state == ref.bit_generator.state  # nor ahead of the second
    with pytest.raises(TypeError):
        RandomBatches(range(4), 2, 0)


def test_the_trainer_trains_on_a_hand_built_dataloaders_batches(data_file, tmp_path, monkeypatch):
    fetched = []
    real_fetch = DataLoader._fetch
    monkeypatch.setattr(DataLoader, "_fetch",
                        lambda self, idx: fetched.append(len(idx)) or real_fetch(self, idx))
    seen = record_batches(monkeypatch)
    out = str(tmp_path / "run")
    quiet(TrainConfig(data=data_file, out=out, iters=6, eval_every=100, **SMALL))
    assert len(seen) == 6
    # every batch went through a DataLoader: 6 training batches of 4, 2 evaluation ones
    assert fetched.count(4) == 8 and len(fetched) == 8
    tok = load_tokenizer(ckpt.tokenizer_file(out))
    key = json.dumps(tok.to_dict(), sort_keys=True)
    tokens = TokenFile(data_file, tok, tokenizer_key=key, cache_dir=str(tmp_path / "c")).train
    ds = TokenWindows(tokens, 8)
    by_hand = DataLoader(ds, batch_sampler=RandomBatches(ds, 4, np.random.default_rng(7)),
                         collate_fn=stack_pairs)
    for (x, y), (hx, hy) in zip(seen, by_hand):
        np.testing.assert_array_equal(x, hx)
        np.testing.assert_array_equal(y, hy)


@pytest.mark.parametrize("task", [None, "addition"])
def test_a_resume_draws_the_next_batches_of_the_uninterrupted_run(data_file, tmp_path,
                                                                  monkeypatch, task):
    kw = dict(SMALL, iters=8, eval_every=3, save_every=100)
    kw.update({"data": data_file} if task is None else {"task": task, "block_size": None})
    seen = record_batches(monkeypatch)
    quiet(TrainConfig(out=str(tmp_path / "ref"), **kw))
    ref = list(seen)
    seen.clear()
    cut = str(tmp_path / "cut")
    quiet(TrainConfig(out=cut, stop_after=4, **kw))  # an evaluation at step 3 in between
    with open(os.path.join(latest_checkpoint(cut), ckpt.STATE)) as f:
        state = json.load(f)
    # the saved data rng: the generator after four batches, untouched by the evaluation
    rng = np.random.default_rng(7)
    data = TaskData(TrainConfig(task=task).resolved()) if task else text_data(data_file, tmp_path)
    for _ in range(4):
        data.batch("train", 4, 8, rng)
    assert state["step"] == 4 and state["data_rng"] == json.loads(json.dumps(
        rng.bit_generator.state))
    quiet(TrainConfig(out=cut, resume=True, **kw))
    assert len(seen) == len(ref) == 8
    for (x, y), (rx, ry) in zip(seen, ref):
        np.testing.assert_array_equal(x, rx)
        np.testing.assert_array_equal(y, ry)


@pytest.mark.parametrize("world, accum", [(2, 1), (1, 2), (2, 2)])
def test_ranks_and_micro_steps_split_one_global_batch(data_file, tmp_path, world, accum):
    # every rank draws the whole global batch from its own generator of the same seed and
    # keeps its rows: the ranks' rows together are the one-process batch, step after step
    for data in (TaskData(TrainConfig(task="addition").resolved()),
                 text_data(data_file, tmp_path)):
        B = 3
        whole = np.random.default_rng(5)

        class Run:
            pass
        runs = []
        for rank in range(world):
            r = Run()
            r.cfg = TrainConfig(batch_size=B, grad_accum=accum, block_size=8)
            r.data, r.rng, r.dist = data, np.random.default_rng(5), Dist(rank=rank, world=world)
            runs.append(r)
        for _ in range(3):
            x_all, y_all = data.batch("train", B * accum * world, 8, whole)
            parts = [T._train_batch(r) for r in runs]
            for rank, (x, y) in enumerate(parts):
                assert len(x) == B * accum
                np.testing.assert_array_equal(x, my_rows(x_all, B, accum, rank))
                np.testing.assert_array_equal(y, my_rows(y_all, B, accum, rank))
            np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x_all)


def test_a_classify_runs_batches_come_from_a_loader_starting_at_its_step(tmp_path):
    from tensorlite.classify_run import ClassifyTask
    from tensorlite.data.classify import TextClassificationData
    from tensorlite.tokenizers import WordPieceTokenizer
    p = tmp_path / "d.tsv"
    p.write_text("".join(f"{'ab'[i % 3 == 0]}\tthe {'red big ripe'[i % 7:]} apple {i}\n"
                         for i in range(40)), encoding="utf-8")
    task = object.__new__(ClassifyTask)  # its data and tokenizer, without a model folder
    task.cfg = TrainConfig(batch_size=6, max_length=8, seed=3)
    task.data = TextClassificationData(str(p), heldout=8, seed=0)
    task.tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "red",
                                         "big", "ripe", "apple"])
    it = iter(task.loader(start=3))
    for step in (3, 4, 5, 6):  # 6 x 6 rows: the batches cross an epoch's end
        got = next(it)
        want = task.data.train_batch(step, task.tokenizer, 6, 8, seed=3)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
