"""docs/walkthrough.md cannot drift from docs/walkthrough.py: its output blocks are what the
program prints, and its code blocks are pieces of the program."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def printed():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, str(DOCS / "walkthrough.py")], capture_output=True,
                       text=True, timeout=300, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr
    blocks = {}
    for chunk in re.split(r"^<<< ", r.stdout, flags=re.M)[1:]:
        name, _, body = chunk.partition("\n")
        blocks[name] = body.rstrip("\n")
    return blocks


def _without_noqa(text):
    return re.sub(r"  # noqa[^\n]*", "", text)


def test_walkthrough_text_matches_its_program(printed):
    md = (DOCS / "walkthrough.md").read_text()
    shown = dict(re.findall(r"<!-- output: ([\w-]+) -->\n```text\n(.*?)\n```", md, re.S))
    assert list(shown) == list(printed), "the text shows other examples than the program prints"
    for name, body in shown.items():
        assert body == printed[name], \
            f"walkthrough.md's '{name}' block differs from the program; it prints:\n{printed[name]}"
    source = _without_noqa((DOCS / "walkthrough.py").read_text())
    code = re.findall(r"```python\n(.*?)```", md, re.S)
    assert len(code) >= len(shown)
    for block in code:
        assert block in source, f"a code block of walkthrough.md is not in walkthrough.py:\n{block}"


def test_the_worked_examples_come_out_as_computed_by_hand(printed):
    # the numbers the text works out on paper, in the program's own output
    assert "weights softmax = [0.474043, 0.525957]" in printed["attention-by-hand"]
    assert "output  weights @ V = [0.257787, 0.357787, 0.457787]" in printed["attention-by-hand"]
    assert "all three equal: True" in printed["attention-three-ways"]
    assert "y = h W2 + b2      = [3.4000, 4.1000, 4.8000]" in printed["feed-forward"]
    assert "causal weights = [[1.000000, 0.000000]," in printed["attention-causal"]
