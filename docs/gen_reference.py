"""The generated reference pages (mkdocs-gen-files runs this at every build, so they cannot drift from the code):

- reference/cli.md: every ``blendseg`` command's ``--help``, from the argparse parser itself;
- reference/config.md: every config key, its type, default and comment, from the dataclasses in config.py;
- reference/presets.md's table: every preset with its source and published figures, from the registry.

Run alone (``python docs/gen_reference.py OUT_DIR``) it writes the same pages into OUT_DIR.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import re
import sys
import typing
from pathlib import Path

DOCS = Path(__file__).resolve().parent
os.environ["COLUMNS"] = "110"  # argparse's help width: the same pages on every machine

from blendseg import config as config_module  # noqa: E402
from blendseg.cli import build_parser  # noqa: E402
from blendseg.zoo.registry import PRESETS, list_presets  # noqa: E402


def commands(parser: argparse.ArgumentParser, prefix: str = "blendseg") -> list[tuple[str, str, str]]:
    """(command, one-line help, full --help) of every command and sub-command, in the parser's order."""
    out = []
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        for name, sub in action.choices.items():
            path = f"{prefix} {name}"
            sub.prog = path
            out.append((path, helps.get(name, ""), sub.format_help()))
            out += commands(sub, path)
    return out


def cli_page() -> str:
    lines = [
        "# Command line",
        "",
        "Generated from the `blendseg` parser at every docs build: what `blendseg COMMAND --help` prints.",
        "Where a guide shows the commands in use, it is linked from the command's section.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    cmds = commands(build_parser())
    for path, short, _ in cmds:
        lines.append(f"| [`{path}`](#{path.replace(' ', '-')}) | {short} |")
    guides = {g: g.read_text() for g in [DOCS / "quickstart.md", *sorted((DOCS / "guides").glob("*.md"))]}
    for path, _, text in cmds:
        lines += ["", f"## {path}", ""]
        used = [g for g, body in guides.items() if re.search(rf"^{re.escape(path)}( |$)", body, re.M)]
        if used:
            links = ", ".join(f"[{_title(guides[g])}](../{g.relative_to(DOCS).as_posix()})" for g in used)
            lines += [f"In use: {links}.", ""]
        lines += ["```text", text.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def _title(page: str) -> str:
    return page.split("\n", 1)[0].lstrip("# ").strip()


def field_comments(cls: type) -> dict[str, str]:
    """The comment lines above each field of a dataclass and its trailing comment, joined, by field name."""
    source, start = inspect.getsourcelines(cls)
    tree = ast.parse(inspect.cleandoc("".join(source)) if source[0].startswith(" ") else "".join(source))
    body = tree.body[0].body
    out = {}
    for node in body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            continue
        i = node.lineno - 1
        above = []
        j = i - 1
        while j >= 0 and source[j].strip().startswith("#"):
            above.insert(0, source[j].strip().lstrip("#").strip())
            j -= 1
        trailing = ""
        for k in range(i, node.end_lineno):
            code = source[k]
            if "#" in code and "noqa" not in code.split("#", 1)[1]:
                trailing = code.split("#", 1)[1].strip()
        out[node.target.id] = " ".join([*above, trailing]).strip()
    return out


def _type_name(tp) -> str:
    if isinstance(tp, str):
        return tp
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        return " \\| ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return getattr(tp, "__name__", str(tp))


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_tables() -> list[tuple[str, type]]:
    """(override prefix, dataclass) in the order a reader meets them."""
    c = config_module
    return [
        ("", c.TrainConfig),
        ("data.", c.DataConfig),
        ("solver.", c.SolverConfig),
        ("log.", c.LogConfig),
        ("model.", c.FCOSDetectorConfig),
        ("model.backbone.", c.BackboneConfig),
        ("model.fpn.", c.FPNConfig),
        ("model.fcos.", c.FCOSConfig),
        ("model.", c.BlendMaskConfig),
        ("model.blendmask.", c.BlendMaskHeadConfig),
        ("model.panoptic.", c.PanopticHeadConfig),
        ("model.", c.MEInstConfig),
        ("model.meinst.", c.MEInstHeadConfig),
        ("model.", c.YolactConfig),
        ("model.yolact.", c.YolactHeadConfig),
    ]


def config_page() -> str:
    lines = [
        "# Config keys",
        "",
        "Generated from the frozen dataclasses of `blendseg/config.py` at every docs build. A key is set on the",
        "command line as `key=value` after the other arguments (`blendseg train blendmask_tiny data.yaml",
        'solver.epochs=12 data.min_size_train=[480,512]`), in Python as `overrides={"solver.epochs": 12}`;',
        "`blendseg cfg PRESET` prints a preset's resolved values. Unknown keys and wrong types are errors naming",
        "the key. The defaults below are the dataclasses'; each preset sets its own.",
    ]
    for prefix, cls in config_tables():
        hints = typing.get_type_hints(cls)
        comments = field_comments(cls)
        doc = inspect.cleandoc(cls.__doc__ or "").replace("\n", " ")
        lines += ["", f"## {cls.__name__}", "", doc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            if f.name.startswith("_"):
                continue
            value = _default(f)
            shown = f"*{type(value).__name__}*" if dataclasses.is_dataclass(value) else f"`{value!r}`"
            meaning = comments.get(f.name, "").replace("|", "\\|")
            lines.append(f"| `{prefix}{f.name}` | {_type_name(hints[f.name])} | {shown} | {meaning} |")
    return "\n".join(lines) + "\n"


def presets_table() -> str:
    lines = ["| preset | follows | published | what |", "|---|---|---|---|"]
    for name in list_presets():
        entry = PRESETS[name]
        source = entry.source.replace("|", "\\|") or "blendseg's CPU recipe"
        lines.append(f"| `{name}` | {source} | {entry.reported} | {entry.summary} |")
    return "\n".join(lines) + "\n"


# page -> (mode, maker): "w" a whole generated page, "a" appended to the hand-written page of that name
PAGES = {
    "reference/cli.md": ("w", cli_page),
    "reference/config.md": ("w", config_page),
    "reference/presets.md": ("a", presets_table),
}


def write_all(write) -> None:
    for path, (mode, make) in PAGES.items():
        write(path, mode, make())


try:  # under mkdocs: virtual files of the build
    import mkdocs_gen_files

    if mkdocs_gen_files.editor.FilesEditor.current() is not None:

        def _write(path: str, mode: str, text: str) -> None:
            with mkdocs_gen_files.open(path, mode) as f:
                f.write(("\n" if mode == "a" else "") + text)

        write_all(_write)
except (ImportError, AttributeError):
    pass

if __name__ == "__main__" and len(sys.argv) > 1:
    root = Path(sys.argv[1])

    def _write_file(path: str, mode: str, text: str) -> None:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        with open(root / path, mode) as f:
            f.write(text)

    write_all(_write_file)
