"""Constructors and functions of the core and models refuse bad arguments with one line
naming the argument and the value (the prober's cases from the crash-safety issue)."""
import math

import pytest

import tensorlite as tl
import tensorlite.nn.functional as F
from tensorlite.models import GPT, GPTConfig

CASES = [
    (lambda: tl.zeros(2.5), TypeError, r"size must be a sequence of ints, got 2.5"),
    (lambda: tl.ones((2, "3")), TypeError, r"got '3'"),
    (lambda: tl.randn(True, 2), TypeError, r"got True"),
    (lambda: tl.nn.Linear(3.5, 2), ValueError, r"Linear: in_features must be an int >= 0, got 3.5"),
    (lambda: tl.nn.Linear(3, -2), ValueError, r"Linear: out_features must be an int >= 0, got -2"),
    (lambda: tl.nn.Embedding(-1, 3), ValueError, r"Embedding: num_embeddings .* got -1"),
    (lambda: tl.nn.LayerNorm(4, eps=math.nan), ValueError, r"LayerNorm: eps .* got nan"),
    (lambda: tl.nn.LayerNorm(-4), ValueError, r"LayerNorm: normalized_shape\[0\] .* got -4"),
    (lambda: tl.randn(3, 4).T.view(12), RuntimeError, r"view: shape \(12,\) is not compatible"),
    (lambda: GPTConfig(n_layer=-1), ValueError, r"GPTConfig: n_layer must be an int >= 1, got -1"),
    (lambda: GPTConfig(vocab_size=0), ValueError, r"GPTConfig: vocab_size .* got 0"),
    (lambda: GPTConfig(block_size=0), ValueError, r"GPTConfig: block_size .* got 0"),
    (lambda: GPTConfig(n_embd=2.5), ValueError, r"GPTConfig: n_embd .* got 2.5"),
    (lambda: GPTConfig(dropout=1.0), ValueError, r"GPTConfig: dropout must be in \[0, 1\), got 1.0"),
    (lambda: GPTConfig(activation="swish"), ValueError, r"GPTConfig: activation .* 'swish'"),
    (lambda: GPTConfig(layer_norm_eps=-1), ValueError, r"GPTConfig: layer_norm_eps .* got -1"),
    (lambda: F.cross_entropy(tl.randn(3, 4), tl.tensor([0, 1, 2]), label_smoothing=2.0),
     ValueError, r"cross_entropy: label_smoothing must be in \[0, 1\], got 2.0"),
]


@pytest.mark.parametrize("call, err, message", CASES)
def test_refused_with_one_line(call, err, message):
    with pytest.raises(err, match=message) as e:
        call()
    assert len(str(e.value).splitlines()) == 1


@pytest.fixture(scope="module")
def gpt():
    tl.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=1, n_embd=8))


@pytest.mark.parametrize("kw, message", [
    (dict(top_p=0), r"top_p must be in \(0, 1\] or None, got 0"),
    (dict(top_p=1.5), r"top_p .* got 1.5"),
    (dict(temperature=math.nan), r"temperature must be a finite number >= 0 .* got nan"),
    (dict(temperature=-1), r"temperature .* got -1"),
    (dict(top_k=-3), r"top_k must be an int >= 1 or None, got -3"),
    (dict(top_k=2.5), r"top_k .* got 2.5"),
    (dict(max_new_tokens=-1), r"max_new_tokens must be an int >= 0, got -1"),
])
def test_generate_refuses_bad_sampling(gpt, kw, message):
    args = dict(max_new_tokens=3, temperature=1.0)
    args.update(kw)
    n = args.pop("max_new_tokens")
    with pytest.raises(ValueError, match="generate: " + message):
        gpt.generate(tl.tensor([[1, 2]]), n, **args)


def test_load_state_dict_refuses_integer_data_for_float_weights():
    import numpy as np
    lin = tl.nn.Linear(2, 3)
    sd = {k: v.detach().numpy() for k, v in lin.state_dict().items()}
    sd["weight"] = sd["weight"].astype(np.int32)
    with pytest.raises(RuntimeError, match=r"dtype mismatch: weight: checkpoint int32 vs model float32"):
        lin.load_state_dict(sd)
    sd["weight"] = sd["weight"].astype(np.float64)  # another float dtype is cast, as in PyTorch
    lin.load_state_dict(sd)
