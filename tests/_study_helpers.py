"""Small, deterministic training runs for the study-tool tests."""
import numpy as np

import tensorlite as tl
from tensorlite.train import TrainConfig, train


def synthetic_text(seed, n_sentences=300):
    """Sentences of a tiny grammar (article adjective? noun verb preposition article noun):
    two seeds give different texts in the same language, over the same characters."""
    rng = np.random.default_rng(seed)
    nouns, verbs, adjs = ["cat", "mat", "dog", "hat"], ["sat", "ran"], ["red", "big"]
    out = []
    for _ in range(n_sentences):
        adj = rng.choice(adjs) + " " if rng.random() < 0.5 else ""
        out.append(f"the {adj}{rng.choice(nouns)} {rng.choice(verbs)} on a {rng.choice(nouns)}.\n")
    return "".join(out)


def tiny_config(**kw):
    base = dict(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=16, iters=20,
                warmup=5, eval_every=10, eval_iters=4, save_every=1000, threads=1, progress=False,
                lr=3e-3)
    base.update(kw)
    return TrainConfig(**base)


def run(cfg):
    threads = tl.get_num_threads()
    try:
        return train(cfg, log=lambda *a: None)
    finally:
        tl.set_num_threads(threads)
