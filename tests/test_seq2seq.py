"""Seq2SeqTransformer (models/seq2seq.py) and the seq2seq tasks (data/seq2seq_tasks.py):
batches, the held-out split, the loss, and decoding (cache == recomputation, beam 1 ==
greedy, beam scores as documented). No torch needed."""
import math

import numpy as np
import pytest

import tensorlite as tl
from tensorlite.data import seq2seq_tasks as st
from tensorlite.models import Seq2SeqConfig, Seq2SeqTransformer, train_seq2seq

from _nn_helpers import np_, numpy_kernels  # noqa: F401


def tiny(**kw):
    cfg = dict(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=2,
               dim_feedforward=32, max_len=64)
    cfg.update(kw)
    tl.manual_seed(0)
    return Seq2SeqTransformer(Seq2SeqConfig(**cfg)).double()


@pytest.fixture(scope="module")
def reverse():
    return st.ReverseTask(seed=0)


# ---- tasks ------------------------------------------------------------------------------------
def test_vocabulary_is_fixed():
    assert st.ITOS[:3] == ("<pad>", "<bos>", "<eos>")
    assert (st.PAD_ID, st.BOS_ID, st.EOS_ID, st.VOCAB_SIZE) == (0, 1, 2, 39)
    assert st.decode(st.encode("az09")) == "az09"
    assert st.decode([st.STOI["a"], st.EOS_ID, st.STOI["b"]]) == "a"
    with pytest.raises(ValueError, match="not in the seq2seq vocabulary"):
        st.encode("A")


@pytest.mark.parametrize("name", ["reverse", "sort"])
def test_batches_are_padded_shifted_and_seeded(name):
    task = st.get_seq2seq_task(name, seed=0)
    b = task.get_batch(32, np.random.default_rng(5))
    again = task.get_batch(32, np.random.default_rng(5))
    for x, y in zip(b, again):
        np.testing.assert_array_equal(x, y)
    assert b.src.dtype == np.int64 and b.tgt_in.shape == b.tgt_out.shape
    for src, tin, tout in zip(*b):
        s = st.decode(src)
        assert 8 <= len(s) <= 16 and (src[len(s):] == st.PAD_ID).all()
        assert tin[0] == st.BOS_ID and st.decode(tin) == task.target(s)
        assert st.decode(tout) == task.target(s) and tout[len(s)] == st.EOS_ID
        np.testing.assert_array_equal(tin[1:len(s) + 1], tout[:len(s)])  # shifted by one
        assert (tout[len(s) + 1:] == st.PAD_ID).all()
    assert task.target("31415926") == ("11234569" if name == "sort" else "62951413")


def test_heldout_is_fixed_large_and_never_trained_on(reverse):
    assert len(reverse.heldout_sources) == 1000 == len(set(reverse.heldout_sources))
    assert st.ReverseTask(seed=0).heldout_sources == reverse.heldout_sources
    assert st.ReverseTask(seed=1).heldout_sources != reverse.heldout_sources
    # a task whose held-out set is a large share of all sources, so hits really happen
    small = st.SortDigitsTask(seed=0, n_heldout=300, min_len=3, max_len=3)
    drawn = small.sample_train(20000, np.random.default_rng(0))
    assert not set(drawn) & set(small.heldout_sources)
    assert len(set(drawn)) == 700  # every other source is still sampled
    with pytest.raises(ValueError, match="n_heldout must be in"):
        st.SortDigitsTask(n_heldout=60, min_len=2, max_len=2)


def test_evaluate_is_exact_match_up_to_eos(reverse):
    pairs = reverse.heldout_pairs(10)

    def oracle(src, n_new, stray=None):
        assert n_new == reverse.max_tgt_len == 17
        out = np.full((len(src), n_new), st.PAD_ID)
        for i, s in enumerate(src):
            ids = list(st.encode(reverse.target(st.decode(s))))
            if stray is not None and i % 2 == 0:
                ids.insert(1, stray)  # a stray special token inside the answer
            out[i, :len(ids) + 1] = ids + [st.EOS_ID]
        return out
    assert reverse.evaluate(oracle, n=10) == 1.0
    assert reverse.evaluate(lambda s, n: oracle(s, n, stray=st.PAD_ID), n=10) == 0.5

    def no_eos(src, n_new):
        out = oracle(src, n_new)
        return np.where(out == st.EOS_ID, st.PAD_ID, out)
    assert reverse.evaluate(no_eos, n=10) == 0.0
    assert len(pairs) == 10


# ---- the model --------------------------------------------------------------------------------
def test_sinusoidal_positions_follow_the_paper():
    pe = Seq2SeqTransformer(Seq2SeqConfig(d_model=8, nhead=2, max_len=10)).pe
    pos, i = 3, 2  # PE[pos, 2i] = sin(pos / 10000^(2i/d)), PE[pos, 2i+1] = cos(..)
    assert math.isclose(float(pe[pos, 2 * i]), math.sin(pos / 10000 ** (2 * i / 8)), rel_tol=1e-6)
    assert math.isclose(float(pe[pos, 2 * i + 1]), math.cos(pos / 10000 ** (2 * i / 8)),
                        rel_tol=1e-6)


def test_state_dict_tied_and_learned_positions():
    m = tiny()
    keys = list(m.state_dict())
    assert keys[:2] == ["src_embed.weight", "tgt_embed.weight"]
    assert "transformer.decoder.layers.1.multihead_attn.in_proj_weight" in keys
    assert "pe" not in keys and m.lm_head.weight is m.tgt_embed.weight
    learned = tiny(positional="learned", tie_embeddings=False)
    assert "src_pos_embed.weight" in learned.state_dict()
    assert learned.lm_head.weight is not learned.tgt_embed.weight
    with pytest.raises(ValueError, match="positional must be"):
        tiny(positional="rotary")


def test_loss_ignores_padding_and_matches_cross_entropy(reverse):
    m = tiny()
    b = reverse.get_batch(6, np.random.default_rng(1))
    logits, loss = m(b.src, b.tgt_in, targets=b.tgt_out)
    assert logits.shape == b.tgt_out.shape + (st.VOCAB_SIZE,)
    lg = np_(logits).reshape(-1, st.VOCAB_SIZE)
    t = b.tgt_out.reshape(-1)
    lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
    keep = t != st.PAD_ID
    assert math.isclose(loss.item(), float((lse - lg[np.arange(len(t)), t])[keep].mean()),
                        rel_tol=1e-12)
    minus100 = np.where(b.tgt_out == st.PAD_ID, -100, b.tgt_out)
    assert math.isclose(m(b.src, b.tgt_in, targets=minus100)[1].item(), loss.item(),
                        rel_tol=1e-14)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_padding_does_not_change_real_positions(reverse):
    # the same example alone and padded in a batch with a longer one: equal logits
    m = tiny()
    pairs = [("abcdefgh", "hgfedcba"), ("abcdefghijklmnop", "ponmlkjihgfedcba")]
    both = st.make_batch(pairs)
    alone = st.make_batch(pairs[:1])
    lb = np_(m(both.src, both.tgt_in)[0])[0, :9]
    la = np_(m(alone.src, alone.tgt_in)[0])[0]
    np.testing.assert_allclose(lb, la, atol=1e-12)


@pytest.mark.parametrize("norm_first", [False, True])
def test_cached_decoding_equals_recomputation(reverse, norm_first):
    m = tiny(norm_first=norm_first, positional="learned" if norm_first else "sinusoidal")
    src = st.make_batch(reverse.heldout_pairs(5)).src
    tok_c, logits_c = m.generate(src, 12, output_scores=True)
    tok_u, logits_u = m.generate(src, 12, use_cache=False, output_scores=True)
    np.testing.assert_array_equal(np_(tok_c), np_(tok_u))
    np.testing.assert_allclose(np_(logits_c), np_(logits_u), atol=1e-10, rtol=0)
    # the step logits are the teacher-forced logits of the decoded tokens
    tin = np.concatenate([np.full((5, 1), st.BOS_ID), np_(tok_c)[:, :-1]], axis=1)
    forced = np_(m(src, tin, tgt_key_padding_mask=np.zeros(tin.shape, bool))[0])
    np.testing.assert_allclose(np_(logits_c), forced, atol=1e-10)


def test_beam_size_one_is_greedy_and_beam_cache_is_exact(reverse):
    m = tiny()
    src = st.make_batch(reverse.heldout_pairs(8)).src
    greedy = np_(m.generate(src, 10))
    np.testing.assert_array_equal(np_(m.generate(src, 10, beam_size=1)), greedy)
    for alpha in (0.0, 1.0):
        tc, sc = m.generate(src, 10, beam_size=3, length_penalty=alpha, output_scores=True)
        tu, su = m.generate(src, 10, beam_size=3, length_penalty=alpha, output_scores=True,
                            use_cache=False)
        np.testing.assert_array_equal(np_(tc), np_(tu))
        np.testing.assert_allclose(np_(sc), np_(su), atol=1e-10)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_beam_scores_are_sum_logprob_over_length_power(reverse, alpha):
    # a briefly trained model, so that EOS really ends hypotheses of different lengths
    m = tiny()
    opt = tl.optim.Adam(m.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    task = st.ReverseTask(seed=0, n_heldout=10, min_len=2, max_len=5)
    for _ in range(30):
        b = task.get_batch(32, rng)
        loss = m(b.src, b.tgt_in, targets=b.tgt_out)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    src = st.make_batch(task.heldout_pairs(6)).src
    tokens, scores = m.generate(src, 8, beam_size=4, length_penalty=alpha, output_scores=True)
    tokens = np_(tokens)
    for i in range(len(src)):
        row = list(tokens[i])
        n = row.index(st.EOS_ID) + 1 if st.EOS_ID in row else len(row)
        tin = np.array([[st.BOS_ID] + row[:n - 1]])
        lg = np_(m(src[i:i + 1], tin)[0])[0]
        lp = lg - lg.max(1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
        expect = lp[np.arange(n), row[:n]].sum() / n ** alpha
        assert math.isclose(float(np_(scores)[i]), expect, rel_tol=1e-9, abs_tol=1e-12)


def test_generate_without_eos_runs_all_steps_and_checks_arguments(reverse):
    m = tiny()
    src = st.make_batch(reverse.heldout_pairs(2)).src
    assert m.generate(src, 7, eos_id=None).shape == (2, 7)
    with pytest.raises(ValueError, match="beam_size and max_new_tokens"):
        m.generate(src, 0)
    with pytest.raises(ValueError, match="beyond max_len"):
        m.generate(src, 80, eos_id=None)


def test_train_seq2seq_lowers_the_loss():
    task = st.ReverseTask(seed=0, n_heldout=20, min_len=3, max_len=5)
    cfg = Seq2SeqConfig(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                        dim_feedforward=64)
    logs = []
    _, info = train_seq2seq(task, steps=60, config=cfg, batch_size=32, lr=3e-3, warmup=10,
                                eval_n=20, log=logs.append)
    assert info["steps"] == 60 and len(info["evals"]) == 1 and logs
    assert np.mean(info["losses"][-10:]) < 0.7 * np.mean(info["losses"][:5])
    assert 0.0 <= info["evals"][-1][1] <= 1.0
