"""The package's import structure: no import circles inside ``src/blendseg`` (module-level, ``TYPE_CHECKING`` and
function-level imports all count: a lazy import that breaks a circle at run time still ties the two modules
together), and no import from a lower layer to a higher one (beyond any listed in ``KNOWN_UPWARD``, which must shrink,
never grow: an entry that no longer exists fails too)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "blendseg"

# lowest first: a module may import its own layer and the layers below it
LAYERS = [
    {"errors", "config", "dist"},
    {"ops"},
    {"structures"},
    {"data"},
    {"modeling"},
    {"zoo", "convert"},
    {"evaluation", "vis", "inference", "figures"},
    {"engine", "export", "predict"},
    {"api", "cli", "__init__", "__main__"},
]
# upward imports (importer -> imported) tolerated until they are moved; none since issue 24 moved the process
# reductions to blendseg/dist.py and the RLE helpers to ops/rle.py (7 before)
KNOWN_UPWARD: set[str] = set()


def modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        parts = list(f.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the blendseg modules it imports anywhere in its file."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in mods else stem for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_every_package_has_a_layer():
    for m in modules():
        layer(m)  # StopIteration names a package the table misses


def test_no_import_runs_upward_beyond_the_known_ones():
    upward = {f"{a} -> {b}" for a, bs in import_graph().items() for b in bs if layer(b) > layer(a)}
    assert upward - KNOWN_UPWARD == set(), "new imports from a lower layer to a higher one"
    assert KNOWN_UPWARD - upward == set(), "fixed: delete these lines from KNOWN_UPWARD"


def test_the_checks_find_what_they_look_for():
    """The circle finder and the layer table on a made-up graph, so that a broken checker cannot pass silently."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert layer("blendseg.ops.conv") < layer("blendseg.modeling.fcos") < layer("blendseg.engine.train")
    graph = import_graph()
    assert "blendseg.modeling.fcos_types" in graph["blendseg.modeling.fcos_loss"]  # relative imports resolve
    assert "blendseg.data.check" in graph["blendseg.data.coco"]
