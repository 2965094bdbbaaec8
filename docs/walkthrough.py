"""The program behind docs/walkthrough.md: every number in that text is printed here.

    PYTHONPATH=. python docs/walkthrough.py

Each example prints a block that starts with a line "<<< name"; tests/test_walkthrough.py
runs this file and checks that the text's output blocks are exactly these, and that
every code block of the text is a piece of this file, so the two cannot drift apart.
"""
import json
import math
import os
import pathlib
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import tensorlite as tl  # noqa: E402
import tensorlite.reference  # noqa: E402
from tensorlite import nn  # noqa: E402
from tensorlite.generate import load_run  # noqa: E402
from tensorlite.nn import functional as F  # noqa: E402
from tensorlite.nn.transformer import Block  # noqa: E402
from tensorlite.train import TrainConfig, train  # noqa: E402


def section(name):
    print(f"<<< {name}")


def show(label, t, decimals=6):
    a = np.asarray(t.detach() if isinstance(t, tl.Tensor) else t, dtype=np.float64)
    text = np.array2string(a, precision=decimals, floatmode="fixed", suppress_small=True,
                           separator=", ")
    print(f"{label} = {text}")


tl.set_num_threads(1)  # the same sums in the same order on any machine

# ---- 1. a + b -------------------------------------------------------------------------------
section("a-plus-b")
a = tl.tensor(2.0, requires_grad=True)
b = tl.tensor(3.0, requires_grad=True)
c = a + b
c.backward()
print(f"c = a + b = {c.item()}")
print(f"dc/da = {a.grad.item()}, dc/db = {b.grad.item()}")

section("scalar-graph")
a = tl.tensor(2.0, dtype=tl.float64, requires_grad=True)
b = tl.tensor(3.0, dtype=tl.float64, requires_grad=True)
u = a * b
v = u + a
f = v * v
# the chain rule by hand, from f back to the leaves
df_dv = 2 * v.item()
df_du = df_dv * 1.0
df_da = df_du * b.item() + df_dv * 1.0  # a reaches f twice: through u = a*b and directly
df_db = df_du * a.item()
f.backward()
print(f"f = (a*b + a)^2 = {f.item()}")
print(f"by hand:    df/da = {df_da}, df/db = {df_db}")
print(f".backward() df/da = {a.grad.item()}, df/db = {b.grad.item()}")
print(tl.viz.graph(f, params={"a": a, "b": b}).source, end="")

# ---- 2. embeddings --------------------------------------------------------------------------
section("embedding")
vocab = ["<PAD>", "<UNK>", "hello", "world", "good"]
stoi = {word: i for i, word in enumerate(vocab)}
E = tl.tensor([[0.0, 0.0, 0.0],   # <PAD>  (our choice)
               [0.5, 0.5, 0.5],   # <UNK>  (our choice)
               [0.1, 0.2, 0.3],   # hello
               [0.4, 0.5, 0.6],   # world
               [0.7, 0.8, 0.9]],  # good   (our choice)
              dtype=tl.float64)
emb = nn.Embedding(5, 3).double()
with tl.no_grad():
    emb.weight.copy_(E)
words = "hello world good morning".split()
ids = tl.tensor([stoi.get(w, stoi["<UNK>"]) for w in words])
x = emb(ids)
one_hot = (ids.reshape(-1, 1) == tl.arange(5)).double()
print(f"ids = {ids.tolist()}")
show("emb(ids)", x, 1)
print(f"one_hot @ E equals the lookup: {np.array_equal((one_hot @ E).numpy(), x.detach().numpy())}")

# ---- 3. attention ---------------------------------------------------------------------------
section("attention-by-hand")
q = E[stoi["hello"]]
K = V = E[[stoi["hello"], stoi["world"]]]
scores = K @ q
scaled = scores / math.sqrt(3)
weights = scaled.softmax(-1)
out = weights @ V
show("scores  q.k", scores)
show("scaled  q.k / sqrt(3)", scaled)
show("weights softmax", weights)
show("output  weights @ V", out)
show("without the 1/sqrt(3) scale", scores.softmax(-1) @ V)

section("attention-three-ways")
q4, k4, v4 = q.reshape(1, 1, 1, 3), K.reshape(1, 1, 2, 3), V.reshape(1, 1, 2, 3)
by_hand = (q4 @ k4.transpose(-2, -1) / math.sqrt(3)).softmax(-1) @ v4
fused = F.scaled_dot_product_attention(q4, k4, v4)
reference, lse = tensorlite.reference.attention_forward(
    q4.numpy(), k4.numpy(), v4.numpy(), None, False, 1 / math.sqrt(3))
show("by hand  ", by_hand.reshape(3))
show("fused    ", fused.reshape(3))
show("reference", reference.reshape(3))
same = [np.allclose(t, reference, rtol=0, atol=1e-12) for t in (by_hand.numpy(), fused.numpy())]
print(f"all three equal: {all(same)}")

section("attention-causal")
seq = E[[stoi["hello"], stoi["world"]]].reshape(1, 1, 2, 3)
show("causal weights", F.attention_probs(seq, seq, is_causal=True).reshape(2, 2))
show("causal output", F.scaled_dot_product_attention(seq, seq, seq, is_causal=True).reshape(2, 3))

# ---- 4. layer norm --------------------------------------------------------------------------
section("layer-norm")
x = tl.tensor([1.0, 2.0, 3.0], dtype=tl.float64)
mean = x.mean()
var = ((x - mean) ** 2).mean()  # the biased variance: divide by 3, not by 2
by_hand = (x - mean) / (var + 1e-5).sqrt()
ln = nn.LayerNorm(3).double()  # weight 1 and bias 0 until trained
print(f"mean = {mean.item():.6f}, var = {var.item():.6f}")
show("by hand       ", by_hand)
show("nn.LayerNorm  ", ln(x))
show("with var / 2 (wrong)", (x - mean) / (((x - mean) ** 2).sum() / 2 + 1e-5).sqrt())

# ---- 5. feed-forward ------------------------------------------------------------------------
section("feed-forward")
x = tl.tensor([1.0, 2.0, 3.0], dtype=tl.float64)
W1 = tl.tensor([[0.1, 0.2, 0.3]] * 3, dtype=tl.float64)
b1 = tl.tensor([0.7, 0.8, 0.9], dtype=tl.float64)
W2 = tl.tensor([[0.4, 0.5, 0.6]] * 3, dtype=tl.float64)
b2 = tl.tensor([1.0, 1.1, 1.2], dtype=tl.float64)
h = (x @ W1 + b1).relu()
y = h @ W2 + b2
show("h = ReLU(x W1 + b1)", h, 4)
show("y = h W2 + b2     ", y, 4)
# nn.Linear stores W as (out, in) and computes x W^T + b: give it the transposes
fc1, fc2 = nn.Linear(3, 3).double(), nn.Linear(3, 3).double()
with tl.no_grad():
    fc1.weight.copy_(W1.T)
    fc1.bias.copy_(b1)
    fc2.weight.copy_(W2.T)
    fc2.bias.copy_(b2)
show("fc2(relu(fc1(x)))  ", fc2(fc1(x).relu()), 4)
show("x W1^T + b1 (Linear's convention applied to W1 itself)", x @ W1.T + b1, 4)

# ---- 6. one transformer block ---------------------------------------------------------------
section("transformer-block")
tl.manual_seed(0)
block = Block(n_embd=3, n_head=1).double()
x = E[[stoi["hello"], stoi["world"], stoi["good"]]].reshape(1, 3, 3)
y = block(x)
r = x + block.attn(block.ln_1(x))
by_hand = r + block.mlp(block.ln_2(r))
show("block(x)", y.reshape(3, 3), 4)
print(f"x + attn(ln_1(x)), then + mlp(ln_2(.)), equals block(x): "
      f"{np.allclose(by_hand.detach().numpy(), y.detach().numpy(), rtol=0, atol=1e-12)}")
print(f"parameters: {block.num_parameters()}")

# ---- 7. training a GPT ----------------------------------------------------------------------
section("train")
run_dir = os.path.join(tempfile.mkdtemp(), "addition")
result = train(TrainConfig(task="addition", out=run_dir, iters=60, batch_size=32, warmup=10,
                           eval_every=60, eval_iters=2, kernels="numpy", threads=1,
                           progress=False), log=lambda *a: None)
first = json.loads(open(os.path.join(run_dir, "log.jsonl")).readline())["loss"]
print(f"loss at step 1: {first:.2f}  (ln 13 = {math.log(13):.2f}: a uniform guess over 13 symbols)")
print(f"loss at step {result['step']}: {result['loss']:.2f}, "
      f"held-out val loss {result['val_loss']:.2f}")
print(f"held-out exact-match accuracy: {result['accuracy']:.3f}")

# ---- 8. sampling ----------------------------------------------------------------------------
section("sample")
model, tok, _ = load_run(run_dir)
prompt = "12+34="
idx = tl.tensor([tok.encode(prompt)])
logits, _ = model(idx)
p = logits[0, -1].softmax(-1)
top = np.argsort(-np.asarray(p.detach()))[:3]
print("next-token probabilities after '12+34=': " +
      ", ".join(f"{tok.decode([int(i)])!r} {float(p[int(i)].item()):.2f}" for i in top))
greedy = model.generate(idx, 4, temperature=0)
sampled = model.generate(idx, 4, temperature=1.0, generator=tl.Generator(0))
print(f"greedy answer:  {tok.decode(greedy[0, len(prompt):].tolist())!r}")
print(f"sampled answer: {tok.decode(sampled[0, len(prompt):].tolist())!r} (temperature 1, seed 0)")
print("correct answer: '640.' (46, written backwards)")
