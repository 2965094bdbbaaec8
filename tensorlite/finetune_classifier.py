"""Fine-tuning a BERT folder as a sequence classifier on a labelled TSV, and measuring it.

    from tensorlite.finetune_classifier import finetune_classifier
    r = finetune_classifier("all-MiniLM-L6-v2", "speakers.tsv", steps=200, lr=5e-5)
    r["accuracy"], r["majority_baseline"]

The recipe is HF's (Trainer + BertForSequenceClassification): AdamW, weight decay on the
>= 2-D parameters only (as train.py does), linear warmup then linear decay to 0 (or
cosine), gradient clipping at 1.0, a fresh N(0, 0.02) head on the pretrained encoder.
from_scratch=True trains the same architecture from a random init: the control that
says how much the pretraining is worth.

The pieces are separate so that a loop with checkpoints (train.py's) can use them:
make_optimizer, lr_factor(step) (a pure function of the step), classifier_step (one
forward/backward/update, like train.train_step), evaluate_classifier, and the data's
train_batch(step, ...), which needs no RNG state to resume.
"""
import math
import os
import time

import numpy as np

from ._threads import set_num_threads
from .autograd.grad_mode import no_grad
from .data.classify import TextClassificationData
from .models.bert import BertForSequenceClassification, classification_config
from .optim import AdamW
from .optim.lr_scheduler import LambdaLR, warmup_cosine
from .random import manual_seed
from .tokenizers import from_pretrained as tokenizer_from_pretrained
from .train_loop import clip_and_step

SCHEDULES = ("linear", "cosine")


def make_optimizer(model, lr, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8):
    """AdamW with weight decay on the matrices (and embeddings) only: biases and LayerNorm
    weights are not pulled towards 0 (HF's and train.py's grouping)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return AdamW([{"params": decay, "weight_decay": weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas, eps=eps)


def lr_factor(step, warmup, total, schedule="linear"):
    """The learning rate of step `step` (0-based) as a fraction of the peak: linear warmup
    over `warmup` steps, then linear decay to 0 at `total` (HF's get_linear_schedule_with_
    warmup) or cosine decay to 0 (lr_scheduler.warmup_cosine)."""
    if schedule == "cosine":
        return warmup_cosine(step, warmup, total, 0.0)
    if schedule != "linear":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if step < warmup:
        return (step + 1) / (warmup + 1)
    return max(0.0, (total - step) / max(1, total - warmup))


def classifier_step(model, optimizer, batch, grad_clip=1.0, stats=None):
    """One optimisation step on batch (a dict with input_ids, attention_mask,
    token_type_ids, labels; NumPy arrays or tensors): forward, zero_grad, backward,
    gradient clipping, optimizer step. The contract of train.train_step: stats is a
    TrainingStats whose begin() returned True (its grads() sees the gradients, its
    snapshot() the weights before the update); the learning rate is whatever the
    optimizer's groups hold. Returns (loss as a float, the gradient norm before clipping
    or None without clipping)."""
    out = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                labels=batch["labels"])
    optimizer.zero_grad()
    out.loss.backward()
    return out.loss.item(), clip_and_step(model, optimizer, grad_clip, stats)


def evaluate_classifier(model, data, tokenizer, max_length, batch_size=64, n=None):
    """{"accuracy", "loss", "n"} on the (first n) held-out examples, in eval mode (the
    model's mode is put back after)."""
    was_training = model.training
    model.eval()
    correct, loss_sum, count = 0, 0.0, 0
    try:
        with no_grad():
            for batch in data.heldout_batches(tokenizer, batch_size, max_length, n):
                out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                            labels=batch["labels"])
                pred = out.logits.numpy().argmax(-1)
                correct += int((pred == batch["labels"]).sum())
                loss_sum += out.loss.item() * len(pred)
                count += len(pred)
    finally:
        model.train(was_training)
    return {"accuracy": correct / count, "loss": loss_sum / count, "n": count}


def build_classifier(model_dir, data, from_scratch=False, seed=0):
    """The BertForSequenceClassification for data's labels: the folder's encoder with a
    fresh head, or (from_scratch) the folder's architecture with HF's random init."""
    manual_seed(seed)  # the fresh head (and a scratch encoder) come from this seed
    if from_scratch:
        config = classification_config(model_dir, id2label=data.id2label, label2id=data.label2id)
        return BertForSequenceClassification(config)
    return BertForSequenceClassification.from_pretrained(
        model_dir, id2label=data.id2label, label2id=data.label2id)


def finetune_classifier(model_dir, tsv_path, out_dir=None, steps=200, batch_size=32, lr=5e-5,
                        max_length=64, seed=0, from_scratch=False, eval_every=None,
                        warmup=0.1, schedule="linear", weight_decay=0.01, grad_clip=1.0,
                        heldout=0.1, split_seed=0, eval_batch_size=64, threads=None, log=print):
    """Train a classifier on the TSV tsv_path (label<TAB>text) from the BERT folder
    model_dir (its weights, or with from_scratch only its config; its tokenizer either
    way), then measure held-out accuracy.

    warmup: steps, or a fraction of steps when < 1. heldout, split_seed: the held-out split
    (data.classify.split_heldout); seed: the head's init, dropout and batch order, so two
    runs with different seeds share one held-out set. eval_every: also evaluate every so
    many steps (None: at the end only). out_dir: where the model (save_pretrained, which
    transformers loads) and the tokenizer are written at the end.

    Returns {"accuracy", "heldout_loss", "majority_baseline", "losses" (one per step),
    "evals" [{"step", "accuracy", "loss"}], "lrs", "train_seconds", "eval_seconds",
    "n_train", "n_heldout", "labels", and the settings}."""
    if threads:
        set_num_threads(threads)
    if steps < 1 or batch_size < 1 or max_length < 2:
        raise ValueError(f"steps, batch_size must be >= 1 and max_length >= 2, got {steps}, "
                         f"{batch_size}, {max_length}")
    data = TextClassificationData(tsv_path, heldout=heldout, seed=split_seed)
    tokenizer = tokenizer_from_pretrained(model_dir)
    model = build_classifier(model_dir, data, from_scratch, seed)
    opt = make_optimizer(model, lr, weight_decay)
    n_warmup = math.ceil(warmup * steps) if 0 < warmup < 1 else int(warmup)
    sched = LambdaLR(opt, lambda s: lr_factor(s, n_warmup, steps, schedule))
    log(f"{'from scratch' if from_scratch else 'fine-tuning ' + str(model_dir)}: "
        f"{model.num_parameters():,} parameters, {data.num_labels} labels, {len(data.train_ids)} "
        f"train / {len(data.heldout_ids)} held-out examples, majority baseline "
        f"{data.majority_baseline():.4f}")
    losses, lrs, evals = [], [], []
    train_s = eval_s = 0.0
    model.train()
    for step in range(steps):
        t0 = time.perf_counter()
        batch = data.train_batch(step, tokenizer, batch_size, max_length, seed=seed)
        lrs.append(opt.param_groups[0]["lr"])
        loss, _ = classifier_step(model, opt, batch, grad_clip)
        sched.step()
        losses.append(loss)
        train_s += time.perf_counter() - t0
        if not np.isfinite(loss):
            raise FloatingPointError(f"step {step + 1}: the loss is {loss}; lower lr (now {lr})")
        last = step + 1 == steps
        if last or (eval_every and (step + 1) % eval_every == 0):
            t0 = time.perf_counter()
            ev = evaluate_classifier(model, data, tokenizer, max_length, eval_batch_size)
            eval_s += time.perf_counter() - t0
            evals.append({"step": step + 1, "accuracy": ev["accuracy"], "loss": ev["loss"]})
            log(f"step {step + 1}: loss {np.mean(losses[-10:]):.4f}, held-out accuracy "
                f"{ev['accuracy']:.4f}, held-out loss {ev['loss']:.4f}")
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
    return {"accuracy": evals[-1]["accuracy"], "heldout_loss": evals[-1]["loss"],
            "majority_baseline": data.majority_baseline(), "losses": losses, "lrs": lrs,
            "evals": evals, "train_seconds": train_s, "eval_seconds": eval_s,
            "n_train": len(data.train_ids), "n_heldout": len(data.heldout_ids),
            "labels": list(data.label_names), "from_scratch": bool(from_scratch),
            "settings": {"steps": steps, "batch_size": batch_size, "lr": lr,
                         "max_length": max_length, "seed": seed, "warmup": n_warmup,
                         "schedule": schedule, "weight_decay": weight_decay,
                         "grad_clip": grad_clip, "heldout": heldout, "split_seed": split_seed}}
