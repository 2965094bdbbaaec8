"""The `tensorlite` command: train, generate, eval. Bad input gets a one-line error and
exit code 2; nothing is written before the input has been checked."""
import argparse
import json
import os
import sys

from .backend.device import cuda_unavailable_reason
from .errors import UsageError
from .generate import evaluate_file, generate_text, load_run
from .serialization import CheckpointError
from .stats import plot_stats
from .train import TrainConfig, plot_losses, train
from .viz import inspect_attention


def _add_train(sub):
    p = sub.add_parser("train", help="train a GPT (default: on the built-in addition task)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", help="a UTF-8 text file to train on")
    src.add_argument("--task", choices=["addition", "sort"], help="a built-in task (default addition)")
    p.add_argument("--tokenizer", choices=["char", "bpe", "gpt2"], default="char")
    p.add_argument("--vocab-size", type=int, default=512, help="vocabulary of a trained bpe tokenizer")
    p.add_argument("--gpt2-dir", help="folder holding GPT-2's encoder.json and vocab.bpe")
    p.add_argument("--preset", choices=["tiny", "baby", "small"])
    for name in ("n-layer", "n-head", "n-embd", "iters", "batch-size", "block-size", "warmup",
                 "eval-every", "eval-iters", "save-every", "seed", "threads", "task-digits",
                 "stop-after"):
        p.add_argument(f"--{name}", type=int)
    for name in ("lr", "dropout", "weight-decay", "grad-clip", "min-lr-ratio", "stop-at-accuracy"):
        p.add_argument(f"--{name}", type=float)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--kernels", choices=["numpy", "cpp", "triton"])
    p.add_argument("--out", default="runs/default", help="run folder (default runs/default)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--init-from", metavar="DIR", help="fine-tune: start from the trained run in DIR "
                   "(its weights, model config and tokenizer; a fresh optimizer); needs --data")
    p.add_argument("--log-stats", action="store_true", help="log per-layer activation mean/std, "
                   "gradient norm and update/weight ratio into log.jsonl (see tensorlite plot)")
    p.add_argument("--stats-every", type=int, help="steps between --log-stats records (default 10)")
    p.add_argument("--mfu", action="store_true",
                   help="show model FLOPs utilisation against this machine's measured matmul peak")


def _add_generate(sub):
    p = sub.add_parser("generate", help="sample text from a trained run")
    p.add_argument("--out", required=True, help="the run folder")
    p.add_argument("--prompt", default="")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--no-cache", action="store_true", help="recompute every step (no KV cache)")


def _add_eval(sub):
    p = sub.add_parser("eval", help="loss and perplexity of a trained run on a text file")
    p.add_argument("--out", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--block-size", type=int)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])


def _add_study(sub):
    p = sub.add_parser("inspect", help="look inside a trained run")
    what = p.add_subparsers(dest="what", required=True)
    a = what.add_parser("attention", help="a PNG grid of every layer's and head's attention map")
    a.add_argument("--out", required=True, help="the run folder")
    a.add_argument("--prompt", required=True)
    a.add_argument("--png", help="where to write the PNG (default OUT/attention.png)")
    a.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p = sub.add_parser("plot", help="draw a run's loss.png and, with --log-stats, stats.png")
    p.add_argument("--out", required=True, help="the run folder")


def build_parser():
    parser = argparse.ArgumentParser(prog="tensorlite", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_generate(sub)
    _add_eval(sub)
    _add_study(sub)
    return parser


def cmd_train(a):
    kw = {}
    for k in ("data", "task", "tokenizer", "vocab_size", "gpt2_dir", "preset", "n_layer", "n_head",
              "n_embd", "iters", "batch_size", "block_size", "warmup", "eval_every", "eval_iters",
              "save_every", "seed", "threads", "task_digits", "lr", "dropout", "weight_decay",
              "grad_clip", "min_lr_ratio", "stop_at_accuracy", "stop_after", "device", "kernels",
              "out", "resume", "init_from", "stats_every"):
        v = getattr(a, k)
        if v is not None:
            kw[k] = v
    kw["progress"] = not a.no_progress
    kw.update(log_stats=a.log_stats, mfu=a.mfu)
    res = train(TrainConfig(**kw))
    print(json.dumps({"out": a.out, **res}))
    if "accuracy" in res:
        print(f"held-out exact-match accuracy: {res['accuracy'] * 100:.2f}%")
    return 0


def cmd_generate(a):
    if a.device == "cuda":
        _need_cuda()
    model, tok, _ = load_run(a.out, a.device)
    if a.max_new_tokens < 0 or a.num_samples < 1:
        raise UsageError("--max-new-tokens must be >= 0 and --num-samples >= 1")
    # fail on unknown characters before printing anything
    tok.encode(a.prompt)

    def on_text(i, piece):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write(a.prompt)
    texts = generate_text(model, tok, a.prompt, a.max_new_tokens, a.temperature, a.top_k, a.top_p,
                          a.num_samples, a.seed, a.device, use_cache=not a.no_cache,
                          on_text=on_text if a.num_samples == 1 else None)
    if a.num_samples == 1:
        sys.stdout.write("\n")
    else:
        for i, t in enumerate(texts):
            print(("" if i == 0 else a.prompt) + t + f"\n---- sample {i + 1} ----")
    return 0


def cmd_eval(a):
    if a.device == "cuda":
        _need_cuda()
    model, tok, _ = load_run(a.out, a.device)
    res = evaluate_file(model, tok, a.data, a.block_size, a.batch_size)
    print(json.dumps(res))
    return 0


def cmd_inspect(a):
    if a.device == "cuda":
        _need_cuda()
    print(inspect_attention(a.out, a.prompt, a.png, a.device))
    return 0


def cmd_plot(a):
    if not os.path.isfile(os.path.join(a.out, "log.jsonl")):
        raise FileNotFoundError(f"{a.out} holds no training log (log.jsonl)")
    for path in (plot_losses(a.out), plot_stats(a.out)):
        if path:
            print(path)
    return 0


def _need_cuda():
    r = cuda_unavailable_reason()
    if r is not None:
        raise UsageError(f"--device cuda: {r}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "generate": cmd_generate, "eval": cmd_eval,
                "inspect": cmd_inspect, "plot": cmd_plot}[args.command](args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, PermissionError, CheckpointError, RuntimeError,
            IndexError, KeyError) as e:
        if os.environ.get("TENSORLITE_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"tensorlite {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
