"""tensorlite: train a GPT, sample from it, score it, and look inside it.

Bad input gets a one-line error and exit code 2; nothing is written before the input has
been checked. `tensorlite COMMAND --help` lists a command's options with their defaults."""
import argparse
import dataclasses
import json
import math
import os
import sys
from importlib import metadata

import numpy as np

from .backend.device import cuda_unavailable_reason
from .classify_run import check_flags, extend_cli, run_command
from .distributed import launcher_info
from .errors import UsageError
from .generate import evaluate_file, generate_text, load_pretrained, load_run
from .models.bert import encode_sentences
from .plots import DEFAULT_SMOOTH, plot_losses
from .progress import MODES as PROGRESS_MODES, make_progress
from .serialization import CheckpointError
from .stats import plot_stats
from .seq2seq_run import evaluate_run, is_seq2seq_config, run_is_seq2seq, translate
from .train import LIMITS, PRESETS, TrainConfig, limit_text, resume_config, train
from .train_config import TASKS
from .viz import inspect_attention, inspect_model_attention

RECIPES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recipes")
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# what a config file may set: every TrainConfig field but the dict for callers' own use
CONFIG_KEYS = sorted(k for k in _FIELDS if k != "extra")


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block): "tensorlite train: error:
    argument --iters: must be an integer, got '2.5'", exit code 2, before anything runs."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _typed(kind, allowed=""):
    """An argparse type that parses kind (int or float) and names what is allowed; ranges
    and finiteness are checked with the rest of the config (train_config.LIMITS)."""
    word = {int: "an integer", float: "a number"}[kind]

    def parse(s):
        try:
            return kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {word}{allowed}, got {s!r}") from None
    parse.__name__ = kind.__name__
    return parse


def _flag_type(dest, kind):
    return _typed(kind, f" ({limit_text(dest)})" if dest in LIMITS else "")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already names its default
    or there is none worth showing (None, off, or a required option)."""

    def _get_help_string(self, action):
        h = action.help or ""
        if ("default" in h or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings or action.nargs == 0 or action.required):
            return h
        return h + " (default: %(default)s)"


def _version():
    try:
        return metadata.version("tensorlite")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


# ---- train's options ---------------------------------------------------------------------

# defaults that depend on the kind of run (TrainConfig holds None for them)
_RUN_DEFAULTS = {
    "task": "addition, when no --data", "preset": "tiny for tasks, baby for text",
    "n_layer": "from --preset", "n_head": "from --preset", "n_embd": "from --preset",
    "block_size": "the task's length; 64 for text",
    "iters": "1000 for tasks (1500 for seq2seq ones), 2000 for text",
    "batch_size": "64 for tasks, 12 for text", "lr": "3e-3 for tasks, 1e-3 for text",
    "kernels": "cpp on the CPU, triton on a GPU", "threads": "1 for preset tiny, else all cores",
    "data": "none: the built-in --task", "gpt2_dir": "none", "stop_at_accuracy": "none",
    "stop_after": "none: run to --iters", "init_from": "none: random weights",
    "dist_backend": "nccl with --device cuda, else mpi",
}

# (flag, argparse keywords, help); the dest of each flag is the TrainConfig field it sets
_TRAIN_OPTIONS = [
    ("--tokenizer", dict(choices=["char", "bpe", "gpt2"]), "how --data is cut into tokens"),
    ("--vocab-size", dict(type=int, metavar="N"), "vocabulary of a trained bpe tokenizer"),
    ("--gpt2-dir", dict(metavar="DIR"), "folder holding GPT-2's encoder.json and vocab.bpe"),
    ("--preset", dict(choices=list(PRESETS)), "model size: " + "; ".join(
        f"{k} = {v['n_layer']} layers, {v['n_head']} heads, {v['n_embd']} dims"
        for k, v in PRESETS.items())),
    ("--n-layer", dict(type=int, metavar="N"), "transformer blocks"),
    ("--n-head", dict(type=int, metavar="N"), "attention heads per block (must divide --n-embd)"),
    ("--n-embd", dict(type=int, metavar="N"), "width of the residual stream"),
    ("--block-size", dict(type=int, metavar="N"), "context length in tokens"),
    ("--dropout", dict(type=float, metavar="P"), "dropout probability"),
    ("--iters", dict(type=int, metavar="N"), "optimizer steps in the whole run"),
    ("--batch-size", dict(type=int, metavar="N"), "sequences per step (per micro-step)"),
    ("--grad-accum", dict(type=int, metavar="N"), "micro-batches of --batch-size per optimizer "
     "step, gradients accumulated"),
    ("--lr", dict(type=float), "peak learning rate (after warmup; cosine decay after it)"),
    ("--min-lr-ratio", dict(type=float, metavar="R"), "final learning rate as a share of --lr"),
    ("--warmup", dict(type=int, metavar="N"), "steps of linear learning-rate warmup"),
    ("--weight-decay", dict(type=float, metavar="W"), "AdamW weight decay of matrices"),
    ("--grad-clip", dict(type=float, metavar="G"), "largest global gradient norm (0: no clipping)"),
    ("--eval-every", dict(type=int, metavar="N"), "steps between evaluations"),
    ("--eval-iters", dict(type=int, metavar="N"), "batches per split at each evaluation"),
    ("--save-every", dict(type=int, metavar="N"), "steps between checkpoints"),
    ("--seed", dict(type=int), "seed of weights, batches and dropout"),
    ("--threads", dict(type=int, metavar="N"), "CPU threads of the kernels"),
    ("--task-digits", dict(type=int, metavar="N"), "addition: digits per operand"),
    ("--stop-at-accuracy", dict(type=float, metavar="A"),
     "tasks: stop once held-out exact match reaches this"),
    ("--stop-after", dict(type=int, metavar="N"), "stop (and save) after N steps in this call"),
    ("--device", dict(choices=["cpu", "cuda"]), "where the model runs"),
    ("--kernels", dict(choices=["numpy", "cpp", "triton"]), "who runs the fused ops"),
    ("--dtype", dict(choices=["fp32", "bf16", "fp16"]), "step precision: bf16/fp16 under autocast"),
    ("--out", dict(metavar="DIR"), "the run folder"),
    ("--resume", dict(action="store_true"), "continue the run in --out from its newest "
     "checkpoint, bit-exactly, with its own config.json (flags given override it; the model, "
     "data and seed cannot change)"),
    ("--init-from", dict(metavar="DIR"), "fine-tune: start from the trained run in DIR (its "
     "weights, model config and tokenizer; a fresh optimizer); needs --data"),
    ("--log-stats", dict(action="store_true"), "log per-layer activation mean/std, gradient norm "
     "and update/weight ratio into log.jsonl (see tensorlite plot)"),
    ("--stats-every", dict(type=int, metavar="N"), "steps between --log-stats records"),
    ("--keep-last", dict(type=int, metavar="N"), "complete checkpoints kept in OUT/checkpoints "
     "(older ones are deleted once a newer one is saved)"),
    ("--mfu", dict(action="store_true"),
     "show model FLOPs utilisation against this machine's measured matmul peak"),
    ("--dist-backend", dict(choices=["mpi", "nccl"]), "under mpiexec -n N: how the ranks talk"),
    ("--dist-timeout", dict(type=float, metavar="S"), "under mpiexec -n N: seconds a rank waits "
     "for the others before the job is stopped"),
    ("--tensorboard", dict(action="store_true"), "also write loss, lr, gradient norm, tokens/s "
     "(and --log-stats) as TensorBoard events into OUT/tensorboard; needs tensorboardX"),
]
extend_cli(_TRAIN_OPTIONS, _RUN_DEFAULTS)  # --task classify's --model, --from-scratch, --max-length


def _train_help(dest, text, kw):
    if kw.get("action") == "store_true":
        return f"{text} (default: off)"
    field = _FIELDS[dest]
    default = _RUN_DEFAULTS.get(dest, field.default)
    extra = f"; {limit_text(dest)}" if dest in LIMITS else ""
    return f"{text} (default: {default}{extra})"


_TRAIN_EPILOG = """\
config precedence, lowest first: TrainConfig's defaults < --config FILE < the flags given.
recipes for --config NAME: {recipes}
progress: auto shows tqdm's bar on a terminal and plain log lines elsewhere (a file, CI, a pipe).

examples:
  tensorlite train                                        # the addition task, runs/default
  tensorlite train --config baby --data input.txt --out runs/baby
  tensorlite train --config my.toml --iters 500           # the file, with iters overridden
  tensorlite train --out runs/baby --resume --iters 4000  # continue a run, for longer
"""


def _add_train(sub):
    p = sub.add_parser("train", help="train a GPT (default: on the built-in addition task)",
                       description="Train a GPT on a text file or a built-in task; writes the "
                       "run (checkpoints,\nconfig.json, log.jsonl, loss.png) to --out.",
                       formatter_class=_HelpFormatter, argument_default=argparse.SUPPRESS,
                       epilog=_TRAIN_EPILOG.format(recipes=", ".join(recipe_names()) or "none"))
    p.add_argument("--config", metavar="FILE|RECIPE", help="a TOML or JSON file of TrainConfig "
                   "fields (key = value), or the name of a shipped recipe; flags given here "
                   "override it (default: none)")
    src = p  # --data with --task: only classify (check_flags)
    src.add_argument("--data", metavar="FILE",
                     help=_train_help("data", "a UTF-8 text file to train on", {}))
    src.add_argument("--task", choices=list(TASKS),
                     help=_train_help("task", "a built-in task (reverse, seq2seq-sort: an "
                                      "encoder-decoder; --n-layer layers each side)", {}))
    for flag, kw, text in _TRAIN_OPTIONS:
        dest = flag[2:].replace("-", "_")
        if kw.get("type") in (int, float):
            kw = dict(kw, type=_flag_type(dest, kw["type"]))
        p.add_argument(flag, dest=dest, help=_train_help(dest, text, kw), **kw)
    p.add_argument("--progress", choices=PROGRESS_MODES, help="how progress is shown: auto = a "
                   "bar on a terminal, else log lines; log = a line every ~10 s or 5%% of the "
                   "steps; bar = tqdm's bar; none = evaluations only (default: auto)")
    p.add_argument("--no-progress", dest="progress", action="store_const", const="none",
                   help="the same as --progress none")


def _add_generate(sub):
    p = sub.add_parser("generate", help="sample text from a trained run or a GPT-2 folder",
                       description="Sample text from a trained run (--out) or from a Hugging Face "
                       "GPT-2 folder\n(--model, with its own tokenizer; stops at <|endoftext|>).",
                       formatter_class=_HelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--out", metavar="DIR", help="the run folder (default: none, use --model)")
    src.add_argument("--model", metavar="DIR",
                     help="a local Hugging Face GPT-2 folder (config.json, model.safetensors, "
                     "vocab.json + merges.txt or tokenizer.json) (default: none, use --out)")
    p.add_argument("--prompt", default="", help="text to continue (default: empty)")
    p.add_argument("--max-new-tokens", type=_typed(int, " (>= 0)"), default=200, metavar="N",
                   help="tokens to sample per sample; >= 0")
    p.add_argument("--temperature", type=_typed(float, " (>= 0)"), default=0.8, metavar="T",
                   help="softmax temperature; >= 0, 0 = greedy")
    p.add_argument("--top-k", type=_typed(int, " (>= 1)"), metavar="K",
                   help="sample among the K likeliest tokens; >= 1 (default: all)")
    p.add_argument("--top-p", type=_typed(float, " (0 < P <= 1)"), metavar="P",
                   help="nucleus sampling: the smallest set of tokens holding P of the "
                   "probability; 0 < P <= 1 (default: off)")
    p.add_argument("--num-samples", type=_typed(int, " (>= 1)"), default=1, metavar="N",
                   help="samples, each under a '---- sample N ----' header when N > 1; >= 1")
    p.add_argument("--seed", type=_typed(int, " (>= 0)"),
                   help="seed of the sampling; >= 0 (default: unseeded)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    p.add_argument("--no-cache", action="store_true",
                   help="recompute every step (no KV cache): slower, same samples")
    p.add_argument("--beam", type=_typed(int, " (>= 1)"), default=1, metavar="N",
                   help="a seq2seq run (--task reverse, seq2seq-sort): beam search with N "
                   "beams, 1 = greedy; prints the output for --prompt as the source; >= 1")


def _add_eval(sub):
    p = sub.add_parser("eval", help="loss and perplexity of a trained run on a text file "
                       "(a seq2seq run: held-out exact match)",
                       description="Mean next-token loss and perplexity of a trained run over "
                       "non-overlapping blocks\nof a text file, on the run's own train/val split "
                       "of it. Prints one JSON line.", formatter_class=_HelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    p.add_argument("--data", metavar="FILE",
                   help="the text file (default: the file the run was trained on)")
    p.add_argument("--split", choices=["train", "val", "all"], default="val",
                   help="which part of the file: the run's train or val split (the last 10%% of "
                   "its tokens), or all of it")
    p.add_argument("--block-size", type=_typed(int, " (>= 1)"), metavar="N",
                   help="tokens per block; >= 1 and <= the model's (default: the model's)")
    p.add_argument("--batch-size", type=_typed(int, " (>= 1)"), default=8, metavar="N",
                   help="blocks per forward pass; >= 1")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    p.add_argument("--progress", choices=PROGRESS_MODES, default="auto",
                   help="progress on stderr: auto = a bar on a terminal, else log lines")
    p.add_argument("--beam", type=_typed(int, " (>= 1)"), default=1, metavar="N",
                   help="a seq2seq run: also score held-out exact match with beam search of "
                   "N beams (greedy always); >= 1")


def _add_study(sub):
    p = sub.add_parser("inspect", help="look inside a trained run (attention maps)",
                       description="Look inside a trained run.", formatter_class=_HelpFormatter)
    what = p.add_subparsers(dest="what", required=True, title="what", metavar="WHAT")
    a = what.add_parser("attention", help="a PNG grid of every layer's and head's attention map",
                        formatter_class=_HelpFormatter)
    src = a.add_mutually_exclusive_group(required=True)
    src.add_argument("--out", metavar="DIR", help="the run folder (default: none, use --model)")
    src.add_argument("--model", metavar="DIR",
                     help="a local Hugging Face GPT-2 or BERT folder (default: none, use --out)")
    a.add_argument("--prompt", required=True, help="the tokens whose attention is drawn")
    a.add_argument("--png", help="where to write the PNG (default: OUT/attention.png, or "
                   "attention.png in the current folder with --model)")
    a.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model runs")
    p = sub.add_parser("plot", help="draw a run's loss.png and, with --log-stats, stats.png",
                       description="Redraw a run's loss.png (and stats.png for a --log-stats run) "
                       "from its log.jsonl.", formatter_class=_HelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="the run folder")
    p.add_argument("--smooth", type=_typed(float, " (0 <= B < 1)"), default=DEFAULT_SMOOTH, metavar="B",
                   help="EMA smoothing of the per-step train loss; 0 <= B < 1, 0 = raw only")


def _add_embed(sub):
    p = sub.add_parser("embed", help="sentence embeddings from a BERT folder (e.g. MiniLM)",
                       description="Sentence embeddings of a sentence-transformers / BERT folder, "
                       "computed as\nsentence-transformers does (mean over tokens, then L2 "
                       "normalised). Prints one JSON\nlist per sentence, or writes an (N, H) "
                       ".npy file with --output.", formatter_class=_HelpFormatter)
    p.add_argument("--model", required=True, metavar="DIR", help="a local Hugging Face BERT folder")
    p.add_argument("sentences", nargs="*", metavar="SENTENCE",
                   help="sentences to embed (default: none; then one per line of --file)")
    p.add_argument("--file", metavar="FILE",
                   help="a UTF-8 text file, one sentence per line (default: none)")
    p.add_argument("--output", metavar="FILE.npy",
                   help="write the (N, H) float32 array here (default: print JSON lines)")
    p.add_argument("--batch-size", type=_typed(int, " (>= 1)"), default=32, metavar="N",
                   help="sentences per forward pass; >= 1")
    p.add_argument("--no-normalize", action="store_true", help="skip the L2 normalisation")


def build_parser():
    parser = _Parser(prog="tensorlite", description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print tensorlite's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    _add_train(sub)
    _add_generate(sub)
    _add_eval(sub)
    _add_study(sub)
    _add_embed(sub)
    return parser


# ---- config files ------------------------------------------------------------------------

def recipe_names():
    try:
        return sorted(f[:-5] for f in os.listdir(RECIPES_DIR) if f.endswith(".toml"))
    except OSError:
        return []


def config_path(spec):
    """The file that --config SPEC names: a path, else a shipped recipe."""
    if os.path.isfile(spec):
        return spec
    recipe = os.path.join(RECIPES_DIR, spec + ".toml")
    if os.sep not in spec and "/" not in spec and os.path.isfile(recipe):
        return recipe
    raise UsageError(f"--config {spec}: no such file, and no recipe of that name "
                     f"(recipes: {', '.join(recipe_names()) or 'none'})")


def load_config(spec, choices=None):
    """{field: value} from a TOML or JSON config file (or recipe), checked key by key.
    choices: {field: allowed values}, the train parser's choices."""
    path = config_path(spec)
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".json"):
        try:
            values = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise UsageError(f"--config {path}: not valid JSON: {e}") from None
    elif path.endswith(".toml"):
        toml = _toml_module()
        try:
            values = toml.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:  # TOMLDecodeError is a ValueError
            raise UsageError(f"--config {path}: not valid TOML: {e}") from None
    else:
        raise UsageError(f"--config {path}: name a .toml or .json file")
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: must hold key = value pairs at the top level")
    out = {}
    for key, v in values.items():
        name = key.replace("-", "_")
        if name not in CONFIG_KEYS:
            raise UsageError(f"--config {path}: unknown key {key!r}; allowed: {', '.join(CONFIG_KEYS)}")
        out[name] = _checked_value(path, name, v, (choices or {}).get(name))
    return out


def _checked_value(path, name, v, allowed):
    field = _FIELDS[name]
    if v is None and field.default is None:
        return v
    want = field.type
    if name == "progress":
        allowed = PROGRESS_MODES
    if not _is_a(v, want):
        raise UsageError(f"--config {path}: {name} must be {_TYPE_WORDS.get(want, want.__name__)}, "
                         f"got {v!r}")
    if allowed is not None and v not in allowed:
        raise UsageError(f"--config {path}: {name} must be one of {', '.join(allowed)}, got {v!r}")
    return float(v) if want is float else v


def _is_a(v, want):
    if want is bool or isinstance(v, bool):  # TOML's true is no number, 1 is no switch
        return want is bool and isinstance(v, bool)
    if want is float:
        return isinstance(v, (int, float))
    return isinstance(v, want)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _toml_module():
    try:
        import tomllib
        return tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli
            return tomli
        except ImportError:
            raise UsageError("reading a TOML config needs Python 3.11+ or the tomli package "
                             "(pip install tomli); or write the config as JSON") from None


def _train_choices(parser):
    train_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)
                        ).choices["train"]
    return {a.dest: a.choices for a in train_parser._actions if a.choices}


# ---- the commands ------------------------------------------------------------------------

def cmd_train(a, parser):
    given = {k: v for k, v in vars(a).items() if k not in ("command", "config")}
    kw, src = {}, None
    check_flags(given)
    if getattr(a, "config", None) is not None:
        kw = load_config(a.config, _train_choices(parser))
        if "task" in given:  # --task and --data exclude each other, flag over file
            kw.pop("data", None)
        src = a.config if os.path.isfile(a.config) else f"recipe {a.config}"
    kw.update(given)
    flags = ", ".join("--" + k.replace("_", "-") for k in sorted(given))
    if kw.get("resume"):
        # the run's own config.json, and over it only what was given here (file or flags)
        out = kw.pop("out", TrainConfig.out)
        source = " + ".join(x for x in (src, flags and f"flags {flags}") if x)
        cfg = resume_config(out, dict(kw, extra={"source": source}))
    else:
        if src is not None:
            kw["extra"] = {"source": src + (f" + flags {flags}" if flags else "")}
        cfg = TrainConfig(**kw)
    res = train(cfg)
    info = launcher_info()
    if info is not None and info["rank"] != 0:  # under mpiexec rank 0 alone reports
        return 0
    print(json.dumps({"out": cfg.out, **res}))
    if "accuracy" in res:
        print(f"held-out exact-match accuracy: {res['accuracy'] * 100:.2f}%")
    return 0


def _check_sampling(a):
    if a.max_new_tokens < 0:
        raise UsageError(f"--max-new-tokens must be >= 0, got {a.max_new_tokens}")
    if a.num_samples < 1:
        raise UsageError(f"--num-samples must be >= 1, got {a.num_samples}")
    if not (math.isfinite(a.temperature) and a.temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0, got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {a.top_k}")
    if a.top_p is not None and not (math.isfinite(a.top_p) and 0 < a.top_p <= 1):
        raise UsageError(f"--top-p must be 0 < P <= 1, got {a.top_p}")
    if a.seed is not None and a.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {a.seed}")
    if a.beam < 1:
        raise UsageError(f"--beam must be >= 1, got {a.beam}")


def cmd_generate(a, parser):
    _check_sampling(a)
    if a.device == "cuda":
        _need_cuda()
    if a.model is not None:
        model, tok = load_pretrained(a.model, a.device, kind="gpt2")
    else:
        model, tok, config = load_run(a.out, a.device)
        if run_command("generate", a, model, tok, config):
            return 0
        if is_seq2seq_config(config):
            print(translate(model, tok, a.prompt, a.max_new_tokens, a.beam, a.device))
            return 0
    if a.beam != 1:
        raise UsageError("--beam is for the runs of a seq2seq task (reverse, seq2seq-sort)")
    # fail on unknown characters before printing anything
    tok.encode(a.prompt)
    if a.num_samples > 1:
        texts = generate_text(model, tok, a.prompt, a.max_new_tokens, a.temperature, a.top_k,
                              a.top_p, a.num_samples, a.seed, a.device, use_cache=not a.no_cache)
        for i, t in enumerate(texts):
            print(f"---- sample {i + 1} ----")
            print(a.prompt + t)
        return 0

    def on_text(i, piece):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write(a.prompt)
    generate_text(model, tok, a.prompt, a.max_new_tokens, a.temperature, a.top_k, a.top_p, 1,
                  a.seed, a.device, use_cache=not a.no_cache, on_text=on_text)
    sys.stdout.write("\n")
    return 0


def cmd_eval(a, parser):
    if a.block_size is not None and a.block_size < 1:
        raise UsageError(f"--block-size must be >= 1, got {a.block_size}")
    if a.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {a.batch_size}")
    if a.device == "cuda":
        _need_cuda()
    if a.beam < 1:
        raise UsageError(f"--beam must be >= 1, got {a.beam}")
    model, tok, config = load_run(a.out, a.device)
    if run_command("eval", a, model, tok, config):
        return 0
    if is_seq2seq_config(config):
        print(json.dumps(evaluate_run(model, config, a.beam, a.device)))
        return 0
    data = a.data or config.get("train", {}).get("data")
    if not data:
        raise UsageError(f"eval: {a.out} was trained on a built-in task, not a file: pass --data")

    def err(msg):
        print(msg, file=sys.stderr)

    def progress(total):
        return make_progress(a.progress, total=total, say=err, unit="batch")
    res = evaluate_file(model, tok, data, a.block_size, a.batch_size, split=a.split,
                        cache_dir=a.out, progress=progress)
    print(json.dumps(res))
    return 0


def cmd_inspect(a, parser):
    if a.device == "cuda":
        _need_cuda()
    if a.model is not None:
        model, tok = load_pretrained(a.model, a.device)
        print(inspect_model_attention(model, tok, a.prompt, a.png or "attention.png", a.device,
                                      title=f"attention of {a.model}"))
        return 0
    if run_is_seq2seq(a.out):
        raise UsageError(f"inspect attention: {a.out} holds a seq2seq run; this draws a GPT's "
                         "self-attention")
    print(inspect_attention(a.out, a.prompt, a.png, a.device))
    return 0


def cmd_embed(a, parser):
    sentences = list(a.sentences)
    if a.file is not None:
        with open(a.file, encoding="utf-8") as f:
            sentences += [line.rstrip("\n") for line in f if line.strip()]
    if not sentences:
        raise UsageError("embed: give sentences as arguments or --file FILE")
    if a.output is not None and not a.output.endswith(".npy"):
        raise UsageError(f"--output must name a .npy file, got {a.output!r}")
    model, tok = load_pretrained(a.model, kind="bert")
    emb = encode_sentences(model, tok, sentences, batch_size=a.batch_size,
                           normalize=not a.no_normalize)
    if a.output is not None:
        np.save(a.output, emb)
        print(f"{a.output}: {emb.shape[0]} x {emb.shape[1]} float32")
        return 0
    for row in emb:
        print(json.dumps([round(float(v), 6) for v in row]))
    return 0


def cmd_plot(a, parser):
    if not 0.0 <= a.smooth < 1.0:
        raise UsageError(f"--smooth must be 0 <= B < 1, got {a.smooth}")
    if not os.path.isfile(os.path.join(a.out, "log.jsonl")):
        raise FileNotFoundError(f"{a.out} holds no training log (log.jsonl)")
    for path in (plot_losses(a.out, smooth=a.smooth), plot_stats(a.out)):
        if path:
            print(path)
    return 0


def _need_cuda():
    r = cuda_unavailable_reason()
    if r is not None:
        raise UsageError(f"--device cuda: {r}")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return {"train": cmd_train, "generate": cmd_generate, "eval": cmd_eval,
                "inspect": cmd_inspect, "plot": cmd_plot, "embed": cmd_embed}[args.command](args, parser)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `tensorlite train | head`: the reader left; no traceback for that
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, FileNotFoundError, PermissionError, CheckpointError, RuntimeError,
            IndexError, KeyError) as e:
        if os.environ.get("TENSORLITE_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"tensorlite {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as e:  # the machine's fault, not the input's (a full disk): no traceback
        if os.environ.get("TENSORLITE_DEBUG"):
            raise
        print(f"tensorlite {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
