"""Sampling speed with and without the KV cache (tokens/s), same model, same seed.

    python benchmarks/generate_kv.py [--preset baby] [--new 200] [--batch 1]

With the cache each new token runs the network on one position and attends to the cached
keys/values; without it every step recomputes the whole (up to block_size) prefix. The two
must produce identical tokens (checked here too), only the time differs. Runs alternate
A/B and report medians, because timings on a shared machine drift.
"""
import argparse
import json
import os
import statistics
import time

import numpy as np

import tensorlite as tl
from tensorlite.models import GPT, GPTConfig
from tensorlite.train import PRESETS


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="baby", choices=list(PRESETS))
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--new", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    tl.set_num_threads(a.threads)
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=a.vocab, block_size=a.block_size, **PRESETS[a.preset])).eval()
    prompt = tl.randint(0, a.vocab, (a.batch, 8))
    times = {True: [], False: []}
    outs = {}
    for _ in range(a.reps):
        for cache in (True, False):
            t0 = time.perf_counter()
            out = model.generate(prompt, a.new, temperature=1.0, top_k=20, use_cache=cache,
                                 generator=tl.Generator(1))
            times[cache].append(time.perf_counter() - t0)
            outs[cache] = out.numpy()
    assert np.array_equal(outs[True], outs[False]), "cached and uncached sampling disagree"
    tok = a.batch * a.new
    res = {"preset": a.preset, "block_size": a.block_size, "new_tokens": a.new, "batch": a.batch,
           "threads": a.threads,
           "tokens_per_s_cache": tok / statistics.median(times[True]),
           "tokens_per_s_no_cache": tok / statistics.median(times[False])}
    res["speedup"] = res["tokens_per_s_cache"] / res["tokens_per_s_no_cache"]
    print(f"{a.preset} model, {a.new} new tokens x batch {a.batch}, block {a.block_size}, "
          f"{a.threads} threads (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})")
    print(f"  with KV cache    {res['tokens_per_s_cache']:8.1f} tokens/s")
    print(f"  without cache    {res['tokens_per_s_no_cache']:8.1f} tokens/s")
    print(f"  speedup          {res['speedup']:8.2f}x   (identical tokens: yes)")
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "generate_kv.json"), "w") as f:
        json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
