"""An encoder-decoder in the fewest lines: nn.Embedding -> nn.Transformer -> nn.Linear,
trained with nn.CrossEntropyLoss and optim.Adam to reverse strings of digits, then used
with greedy (argmax) decoding. The same program as one would write with torch.nn, with
tensorlite's names. docs/SEQ2SEQ.md explains the pieces.

tensorlite has no DataLoader yet: `batches` below is the loop one would hand to one
(shuffle, slice, pad), written with plain Python and NumPy.

    python docs/seq2seq_example.py              # ~3 minutes: ~96% of new strings reversed
    python docs/seq2seq_example.py --steps 40   # a quick look (tests/test_seq2seq_example.py)

(On a small machine shared with other work, OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 can be
several times faster than letting BLAS threads wait for each other.)
"""
import argparse
import math
import time

import numpy as np

import tensorlite as tl
from tensorlite import nn, optim

PAD, BOS, EOS = 0, 1, 2
VOCAB = 3 + 10               # the three special tokens, then the digits 0-9
MIN_LEN, MAX_LEN = 3, 10


def make_pairs(n, rng):
    """n (source, target) token lists: random digits and the same digits reversed."""
    pairs = []
    for _ in range(n):
        src = list(rng.integers(3, VOCAB, size=rng.integers(MIN_LEN, MAX_LEN + 1)))
        pairs.append((src, src[::-1]))
    return pairs


def pad(rows, width):
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def batches(pairs, batch_size, rng):
    """One epoch of (src, tgt_in, tgt_out) int64 tensors, shuffled, padded per batch."""
    order = rng.permutation(len(pairs))
    for i in range(0, len(order), batch_size):
        chunk = [pairs[j] for j in order[i:i + batch_size]]
        width = max(len(s) for s, _ in chunk)
        src = pad([s for s, _ in chunk], width)
        tgt_in = pad([[BOS] + t for _, t in chunk], width + 1)    # what the decoder reads
        tgt_out = pad([t + [EOS] for _, t in chunk], width + 1)   # what it must predict
        yield tl.tensor(src), tl.tensor(tgt_in), tl.tensor(tgt_out)


class Seq2Seq(nn.Module):
    def __init__(self, d_model=64, nhead=4, num_layers=2):
        super().__init__()
        self.d_model = d_model
        self.src_embed = nn.Embedding(VOCAB, d_model)
        self.tgt_embed = nn.Embedding(VOCAB, d_model)
        self.pos_embed = nn.Embedding(MAX_LEN + 1, d_model)  # learned positions
        self.transformer = nn.Transformer(d_model, nhead, num_layers, num_layers,
                                          dim_feedforward=4 * d_model, dropout=0.0,
                                          batch_first=True)
        self.out = nn.Linear(d_model, VOCAB)

    def embed(self, table, ids):
        pos = tl.arange(ids.shape[1])
        return table(ids) * math.sqrt(self.d_model) + self.pos_embed(pos)   # (B, T, E)

    def forward(self, src, tgt_in):
        T = tgt_in.shape[1]
        src_pad = src == PAD                          # (B, S) True = padding (torch's rule)
        h = self.transformer(
            self.embed(self.src_embed, src), self.embed(self.tgt_embed, tgt_in),
            tgt_mask=nn.Transformer.generate_square_subsequent_mask(T),
            src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_in == PAD,
            memory_key_padding_mask=src_pad)          # (B, T, E)
        return self.out(h)                            # (B, T, VOCAB)


@tl.no_grad()
def greedy_decode(model, src, max_len):
    """Feed the decoder its own argmax, one token at a time (recomputing the prefix)."""
    model.eval()
    out = tl.full((src.shape[0], 1), BOS, dtype=tl.int64)
    for _ in range(max_len):
        logits = model(src, out)                      # (B, t, VOCAB)
        nxt = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
        out = tl.cat([out, nxt], dim=1)
    model.train()
    return out[:, 1:]


def exact_match(model, pairs):
    src = tl.tensor(pad([s for s, _ in pairs], MAX_LEN))
    pred = greedy_decode(model, src, MAX_LEN + 1).numpy()
    right = 0
    for row, (_, tgt) in zip(pred, pairs):
        right += list(row[:len(tgt) + 1]) == tgt + [EOS]
    return right / len(pairs)


def main(steps=1500, batch_size=64, log=print):
    tl.manual_seed(0)
    rng = np.random.default_rng(0)
    train_pairs, test_pairs = make_pairs(20000, rng), make_pairs(200, rng)
    model = Seq2Seq()
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD)   # padding carries no loss
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    losses, step, t0 = [], 0, time.perf_counter()
    while step < steps:
        for src, tgt_in, tgt_out in batches(train_pairs, batch_size, rng):
            logits = model(src, tgt_in)
            loss = loss_fn(logits.reshape(-1, VOCAB), tgt_out.reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
            if step % 100 == 0 or step == steps:
                log(f"step {step}: loss {np.mean(losses[-100:]):.4f} "
                    f"({time.perf_counter() - t0:.0f}s)")
            if step == steps:
                break
    src = tl.tensor(pad([s for s, _ in test_pairs[:3]], MAX_LEN))
    for (s, _), row in zip(test_pairs[:3], greedy_decode(model, src, MAX_LEN + 1).numpy()):
        row = list(row)
        row = row[:row.index(EOS)] if EOS in row else row
        log(f"{''.join(str(d - 3) for d in s)} -> {''.join(str(d - 3) for d in row)}")
    k = max(1, min(10, steps // 4))
    log(f"loss first {np.mean(losses[:k]):.4f} last {np.mean(losses[-k:]):.4f}")
    log(f"exact match on {len(test_pairs)} new strings: {exact_match(model, test_pairs):.3f}")
    return losses


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    main(args.steps, args.batch_size)
