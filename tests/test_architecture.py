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
    {"errors", "config", "overrides", "dist", "weights_io"},
    {"ops"},
    {"structures"},
    {"data"},
    {"modeling", "modeling.core"},  # the shared backbones, FPN and FCOS
    {"modeling.methods"},  # BlendMask, MEInst, YOLACT on the core
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
    """The layer of a module: that of its longest package prefix in ``LAYERS`` (``modeling.core`` before
    ``modeling``)."""
    parts = module.split(".")[1:] or ["__init__"]
    for n in range(len(parts), 0, -1):
        for i, names in enumerate(LAYERS):
            if ".".join(parts[:n]) in names:
                return i
    raise StopIteration(module)


def method_of(module: str) -> str | None:
    """``blendmask`` for ``blendseg.modeling.methods.blendmask_bottom``; None outside ``modeling.methods``."""
    prefix = "blendseg.modeling.methods."
    return module[len(prefix) :].split("_")[0] if module.startswith(prefix) else None


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_every_package_has_a_layer():
    for m in modules():
        layer(m)  # StopIteration names a package the table misses


def test_no_import_runs_upward_beyond_the_known_ones():
    upward = {f"{a} -> {b}" for a, bs in import_graph().items() for b in bs if layer(b) > layer(a)}
    assert upward - KNOWN_UPWARD == set(), "new imports from a lower layer to a higher one"
    assert KNOWN_UPWARD - upward == set(), "fixed: delete these lines from KNOWN_UPWARD"


def test_a_method_imports_the_core_never_another_method():
    crossing = {
        f"{a} -> {b}"
        for a, bs in import_graph().items()
        for b in bs
        if method_of(a) and method_of(b) and method_of(a) != method_of(b)
    }
    assert crossing == set()
    assert {method_of(m) for m in modules()} - {None} == {"blendmask", "meinst", "yolact"}


def test_the_checks_find_what_they_look_for():
    """The circle finder and the layer table on a made-up graph, so that a broken checker cannot pass silently."""
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert layer("blendseg.ops.conv") < layer("blendseg.modeling.core.fcos") < layer("blendseg.engine.train")
    assert (
        layer("blendseg.modeling") == layer("blendseg.modeling.core.fcos") < layer("blendseg.modeling.methods.meinst")
    )
    assert method_of("blendseg.modeling.methods.yolact_loss") == "yolact" and method_of("blendseg.zoo.yolact") is None
    graph = import_graph()
    assert "blendseg.modeling.core.fcos_types" in graph["blendseg.modeling.core.fcos_loss"]  # relative imports resolve
    assert "blendseg.modeling.core.fcos" in graph["blendseg.modeling.methods.blendmask"]  # ... across packages
    assert "blendseg.data.check" in graph["blendseg.data.coco"]


def test_the_docs_layout_names_every_module_and_no_missing_one():
    """The Layout block of docs/develop/architecture.md: every module of the package (and every benchmark) is named
    there, and every ``name.py`` it names exists."""
    import re

    root = SRC.parents[1]
    text = (root / "docs" / "develop" / "architecture.md").read_text().split("## Layout", 1)[1].split("```")[1]
    named = set(re.findall(r"[\w]+\.py", text))
    files = {f.name for f in SRC.rglob("*.py") if f.name != "__init__.py"}
    files |= {f.name for f in (root / "benchmarks").glob("*.py") if f.name != "__init__.py"}
    assert not files - named, f"modules the docs' layout does not name: {sorted(files - named)}"
    others = {f.name for d in ("tools",) for f in (root / d).glob("*.py")}
    assert not named - files - others, f"named in the layout but not in the tree: {sorted(named - files - others)}"


def test_the_docs_layer_table_is_this_one():
    """docs/develop/architecture.md's table of layers is LAYERS, row for row."""
    root = SRC.parents[1]
    text = (root / "docs" / "develop" / "architecture.md").read_text().split("## Layers", 1)[1].split("## ", 1)[0]
    rows = [line.split("|")[2] for line in text.splitlines() if line.startswith("| ") and line[2].isdigit()]
    documented = [{m.strip().replace("\\", "") for m in row.split(",")} for row in rows]
    assert documented == LAYERS
