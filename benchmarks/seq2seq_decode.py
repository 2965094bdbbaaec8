"""Cached vs uncached greedy decoding of tensorlite.models.Seq2SeqTransformer: 64 sources of
16 tokens, 32 new tokens, best of 4 alternating runs, at d_model 64 and 128 (2+2 layers,
4 heads, feed-forward 4 x d_model). Usage: python benchmarks/seq2seq_decode.py [threads]."""
import os
import sys
import time

import numpy as np

import tensorlite as tl
from tensorlite.models import Seq2SeqConfig, Seq2SeqTransformer


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    tl.set_num_threads(threads)
    print(f"threads {threads}, load average {os.getloadavg()[0]:.2f}")
    for d in (64, 128):
        tl.manual_seed(0)
        m = Seq2SeqTransformer(Seq2SeqConfig(d_model=d, nhead=4, dim_feedforward=4 * d)).eval()
        src = tl.tensor(np.random.default_rng(0).integers(3, 39, (64, 16)))
        best = {}
        for _ in range(4):
            for cache in (True, False):  # alternated, so drift hits both alike
                t = time.perf_counter()
                m.generate(src, 32, bos_id=1, eos_id=None, use_cache=cache)
                best[cache] = min(best.get(cache, 1e9), time.perf_counter() - t)
        print(f"d_model {d}: cached {best[True] * 1e3:.0f} ms, uncached {best[False] * 1e3:.0f} ms, "
              f"speedup {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    main()
