"""Calls go one way: every import inside tensorlite/ (and kernels/, installed as
tensorlite.kernels) points down the layer order of docs/ARCHITECTURE.md, and no module
imports itself back through others. Imports are read with `ast`, not executed, and
imports inside functions count the same as those at the top of a file."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Lowest first. A module may import from its own layer or any layer below, never above.
# The first prefix that matches a module's dotted name decides its layer.
LAYERS = [
    ("base", ["tensorlite._dtype", "tensorlite.errors", "tensorlite.backend.device",
              "tensorlite._autocast", "tensorlite._malloc"]),
    ("providers", ["tensorlite.reference", "tensorlite.kernels", "tensorlite._C",
                   "tensorlite._threads"]),
    ("registry", ["tensorlite.backend"]),
    ("autograd", ["tensorlite.autograd"]),
    ("ops", ["tensorlite.ops"]),
    ("random", ["tensorlite.random"]),
    ("tensor", ["tensorlite.tensor", "tensorlite._tensor"]),
    ("factories", ["tensorlite.factories", "tensorlite._functions", "tensorlite.cuda",
                   "tensorlite.serialization", "tensorlite.amp", "tensorlite.backends"]),
    ("nn", ["tensorlite.nn", "tensorlite.optim", "tensorlite.distributed", "tensorlite.utils"]),
    ("models", ["tensorlite.models", "tensorlite.tokenizers", "tensorlite.data",
                "tensorlite.pretrained"]),
    ("tools", ["tensorlite.op_costs", "tensorlite.profiler", "tensorlite.summary",
               "tensorlite.stats", "tensorlite.viz", "tensorlite.checkpoint",
               "tensorlite.finetune", "tensorlite.train", "tensorlite.generate",
               "tensorlite.plots", "tensorlite.progress", "tensorlite.train_config",
               "tensorlite.finetune_classifier", "tensorlite.seq2seq_run",
               "tensorlite.train_loop", "tensorlite.classify_run", "tensorlite.train_data"]),
    ("command", ["tensorlite.cli", "tensorlite.__main__"]),
    ("package", ["tensorlite"]),
]


def layer_of(mod):
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def _modules():
    """dotted name -> (path, is_package) for every module of tensorlite and kernels."""
    mods = {}
    for top, name in (("tensorlite", "tensorlite"), ("kernels", "tensorlite.kernels")):
        base = os.path.join(ROOT, top)
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, base)
            pkg = name if rel == "." else name + "." + rel.replace(os.sep, ".")
            for f in files:
                if not f.endswith(".py"):
                    continue
                if f == "__init__.py":
                    mods[pkg] = (os.path.join(dirpath, f), True)
                else:
                    mods[pkg + "." + f[:-3]] = (os.path.join(dirpath, f), False)
    return mods


def _resolve(mod, is_pkg, node, known):
    """The modules of ours that an Import/ImportFrom node names."""
    out = []
    if isinstance(node, ast.Import):
        for a in node.names:
            if a.name.split(".")[0] == "tensorlite":
                out.append(a.name)
        return out
    if node.level:
        parts = mod.split(".")
        base = parts if is_pkg else parts[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
        if target.split(".")[0] != "tensorlite":
            return out
    for a in node.names:
        sub = f"{target}.{a.name}"
        # `from . import x` names the submodule x when there is one, not the package
        out.append(sub if sub in known else target)
    return out


def import_graph():
    mods = _modules()
    known = dict(mods, **{"tensorlite._C": None})  # the compiled extension has no .py file
    graph = {}
    for mod, (path, is_pkg) in mods.items():
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _resolve(mod, is_pkg, node, known):
                    while t not in known and "." in t:  # a name inside a module
                        t = t.rsplit(".", 1)[0]
                    if t != mod and t in known:
                        edges.add(t)
        graph[mod] = edges
    return graph


def test_every_module_has_a_layer():
    missing = sorted(m for m in import_graph() if layer_of(m) is None)
    assert not missing, f"modules with no layer in LAYERS (add them, and to docs/ARCHITECTURE.md): {missing}"


def test_no_import_goes_up():
    graph = import_graph()
    bad = []
    for mod, edges in sorted(graph.items()):
        for t in sorted(edges):
            lm, lt = layer_of(mod), layer_of(t)
            if lm is not None and lt is not None and lt > lm:
                bad.append(f"{mod} ({LAYERS[lm][0]}) imports {t} ({LAYERS[lt][0]})")
    assert not bad, "imports that go up the layer order:\n" + "\n".join(bad)


def test_no_import_cycle():
    graph = import_graph()
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph.get(m, ())):
            if t not in graph:
                continue
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("src, expect", [
    ("from ..tensor import Tensor", {"tensorlite.tensor"}),
    ("import tensorlite as tl", {"tensorlite"}),
])
def test_the_checker_sees_imports(src, expect, tmp_path):
    # the graph builder must notice both spellings, or the tests above could not fail
    node = ast.parse(src).body[0]
    known = {"tensorlite.tensor": None, "tensorlite": None}
    assert set(_resolve("tensorlite.nn.layers", False, node, known)) == expect
