"""The pretrained commands: `tensorlite embed --model DIR`, `tensorlite generate --model DIR`
and `tensorlite inspect attention --model DIR`, on the real MiniLM folder and on a GPT-2
folder with GPT-2's real tokenizer files (../shared/data/gpt2) and small random weights."""
import json
import os

import numpy as np
import pytest
from _pretrained_helpers import minilm_path  # noqa: F401 (a fixture)

import tensorlite as tl
from tensorlite.cli import main
from tensorlite.models import GPT, GPTConfig
from tensorlite.serialization import load_file
from tensorlite.tokenizers import from_pretrained as tokenizer_from_pretrained
from tensorlite.tokenizers import load_gpt2_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data", "pretrained")
GPT2_FILES = os.path.join(ROOT, "..", "shared", "data", "gpt2")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A Hugging Face GPT-2 folder: random small weights over GPT-2's real 50,257-token
    vocabulary, with the tokenizer saved as vocab.json + merges.txt."""
    if not os.path.isfile(os.path.join(GPT2_FILES, "encoder.json")):
        pytest.skip("GPT-2's tokenizer files are not in ../shared/data/gpt2")
    d = tmp_path_factory.mktemp("gpt2")
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=64, n_layer=1, n_head=2, n_embd=16))
    model.save_pretrained(str(d))
    load_gpt2_tokenizer(GPT2_FILES).save_pretrained(str(d))
    return str(d)


def test_embed_writes_the_sentence_transformers_embeddings(minilm_path, tmp_path, capsys):
    with open(os.path.join(DATA, "minilm-sentences.json"), encoding="utf-8") as f:
        sentences = json.load(f)["sentences"][:5]
    refs = load_file(os.path.join(DATA, "minilm-refs.safetensors"))[0]
    out = tmp_path / "emb.npy"
    assert main(["embed", "--model", minilm_path, *sentences, "--output", str(out)]) == 0
    emb = np.load(out, allow_pickle=False)
    assert emb.shape == (5, 384)
    assert np.abs(emb - refs["st_embeddings"][:5]).max() < 1e-5  # sentence-transformers' own
    capsys.readouterr()
    lines = tmp_path / "s.txt"
    lines.write_text("\n".join(sentences[:2]) + "\n", encoding="utf-8")
    assert main(["embed", "--model", minilm_path, "--file", str(lines)]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert np.abs(np.array(printed) - emb[:2]).max() < 2e-6


def test_embed_refusals(minilm_path, gpt2_folder, tmp_path, capsys):
    assert main(["embed", "--model", minilm_path]) == 2
    assert "give sentences" in capsys.readouterr().err
    assert main(["embed", "--model", minilm_path, "x", "--output", str(tmp_path / "e.txt")]) == 2
    assert "--output must name a .npy file" in capsys.readouterr().err
    assert main(["embed", "--model", gpt2_folder, "x"]) == 2
    assert "needs a bert folder" in capsys.readouterr().err
    assert main(["embed", "--model", "gpt2", "x"]) == 2
    err = capsys.readouterr().err
    assert "never downloads" in err and len(err.strip().splitlines()) == 1


def test_generate_from_a_gpt2_folder_uses_its_tokenizer(gpt2_folder, capsys):
    tok = tokenizer_from_pretrained(gpt2_folder)
    model = tl.from_pretrained(gpt2_folder)
    prompt = "Hello world"
    ids = tok.encode(prompt)
    want = model.generate(tl.tensor([ids]), 12, temperature=0, eos_token_id=tok.eos_token_id)
    want_ids = [t for t in want.numpy()[0, len(ids):].tolist() if t != tok.eos_token_id]
    assert main(["generate", "--model", gpt2_folder, "--prompt", prompt, "--max-new-tokens", "12",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out == prompt + tok.decode(want_ids) + "\n"
    assert main(["generate", "--model", gpt2_folder, "--prompt", "", "--max-new-tokens", "5",
                 "--num-samples", "2", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert out.index("---- sample 1 ----") < out.index("---- sample 2 ----")


def test_generation_stops_at_end_of_text():
    tl.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=5, block_size=16, n_layer=1, n_head=1, n_embd=8))
    with tl.no_grad():  # make token 3 the greedy choice everywhere: generation must stop
        model.transformer.wte.weight._data[:] = 0
        model.transformer.wte.weight._data[3] = 1
        model.transformer.ln_f.bias._data[:] = 1
    out = model.generate(tl.tensor([[1, 2]]), 10, temperature=0, eos_token_id=3)
    assert out.numpy().tolist() == [[1, 2, 3]]
    longer = model.generate(tl.tensor([[1, 2]]), 4, temperature=0)
    assert longer.shape == (1, 6)


def test_inspect_attention_of_a_pretrained_folder(minilm_path, gpt2_folder, tmp_path, capsys):
    for folder in (minilm_path, gpt2_folder):
        png = tmp_path / f"{os.path.basename(folder)}.png"
        assert main(["inspect", "attention", "--model", folder, "--prompt", "the cat sat",
                     "--png", str(png)]) == 0
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_generate_and_inspect_need_one_source(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--prompt", "x"])
    with pytest.raises(SystemExit):
        main(["generate", "--out", "a", "--model", "b"])
