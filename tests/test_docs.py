"""The docs cannot drift from the code: every command in a page's code blocks parses (``blendseg`` lines by the CLI's
own parser, ``python -m benchmarks.X`` / ``tools/X.py`` lines name a script that has each flag, ``make`` lines name a
target), every Python block compiles, every public name is in the API reference with a docstring, and the site
builds with ``mkdocs build --strict`` (broken links and anchors fail it)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from blendseg.zoo import list_presets

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def code_blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, text, first line number) of each fenced block of a Markdown file."""
    out, lang, lines, start = [], None, [], 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and lang is None:
            lang, lines, start = fence.group(1) or "text", [], n + 1
        elif fence:
            out.append((lang, "\n".join(lines), start))
            lang = None
        elif lang is not None:
            lines.append(line)
    return out


def commands(text: str) -> list[str]:
    """The shell commands of a block: continuation lines joined, comments cut."""
    joined = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(shlex.split(line, comments=True))
    return out


def concrete(argv: list[str]) -> list[str]:
    """A usage line made runnable: ``[optional parts]`` and ``...`` dropped, ``a|b`` choices reduced to the first."""
    out, depth = [], 0
    for word in argv:
        if word == "...":
            continue
        opens, closes = word.count("["), word.count("]")
        if word.startswith("[") or depth:
            depth += opens - closes
            continue
        out.append(word.split("|")[0] if re.fullmatch(r"[\w.-]+(\|[\w.-]+)+", word) else word)
    return out


def all_commands() -> list[tuple[str, list[str]]]:
    found = []
    for page in PAGES:
        for lang, text, line in code_blocks(page):
            if lang in ("bash", "sh", "shell", "console"):
                found += [(f"{page.relative_to(ROOT)}:{line}", argv) for argv in commands(text)]
    return found


def _blendseg_argv(argv: list[str]) -> list[str] | None:
    """The arguments after ``blendseg`` (or ``-m blendseg.cli``), or None for another program."""
    argv = [w for w in argv if not re.fullmatch(r"[A-Z_]+=\S*", w)]  # leading VAR=value
    if argv and argv[0].endswith("blendseg"):
        return argv[1:]
    if "blendseg.cli" in argv:
        return argv[argv.index("blendseg.cli") + 1 :]
    return None


def test_every_blendseg_command_in_the_docs_parses():
    """By the CLI's own parser; a train or cfg line's overrides must also be keys of its preset's config."""
    from blendseg.cli import parse_args
    from blendseg.overrides import apply_overrides
    from blendseg.zoo import get_preset

    checked, bad = 0, []
    for where, argv in all_commands():
        args = _blendseg_argv(argv)
        if args is None:
            continue
        try:
            ns = parse_args(concrete(args))
            if getattr(ns, "overrides", None) and getattr(ns, "preset", None) in set(list_presets(all=True)):
                apply_overrides(get_preset(ns.preset), ns.overrides)
            checked += 1
        except SystemExit:
            bad.append(f"{where}: blendseg {' '.join(args)}")
        except Exception as e:  # an override the config refuses
            bad.append(f"{where}: blendseg {' '.join(args)}: {e}")
    assert not bad, "commands the CLI refuses:\n" + "\n".join(bad)
    assert checked > 50


def test_every_script_and_make_target_in_the_docs_exists_with_its_flags():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    bad, checked = [], 0
    for where, argv in all_commands():
        argv = [w for w in argv if not re.fullmatch(r"[A-Z_]+=\S*", w)]
        script = None
        if "-m" in argv and argv[argv.index("-m") + 1].startswith(("benchmarks.", "tools.")):
            script = ROOT / (argv[argv.index("-m") + 1].replace(".", "/") + ".py")
        elif any(w.startswith("tools/") and w.endswith(".py") for w in argv):
            script = ROOT / next(w for w in argv if w.startswith("tools/") and w.endswith(".py"))
        elif argv and argv[0] == "make":
            missing = [t for t in argv[1:] if "=" not in t and t not in targets]
            bad += [f"{where}: make {t}: no such target" for t in missing]
            checked += 1
            continue
        if script is None:
            continue
        checked += 1
        if not script.is_file():
            bad.append(f"{where}: {script.relative_to(ROOT)} does not exist")
            continue
        source = script.read_text()
        if "benchmarks" in script.parts:  # flags may come from the shared helpers
            source += (ROOT / "benchmarks" / "common.py").read_text()
        for flag in (w.split("=")[0] for w in concrete(argv) if w.startswith("--")):
            if f'"{flag}"' not in source:
                bad.append(f"{where}: {script.relative_to(ROOT)} has no {flag}")
    assert not bad, "\n".join(bad)
    assert checked > 10


def test_every_python_block_compiles():
    bad = []
    for page in PAGES:
        for lang, text, line in code_blocks(page):
            if lang == "python":
                try:
                    compile(textwrap.dedent(text), f"{page.relative_to(ROOT)}:{line}", "exec")
                except SyntaxError as e:
                    bad.append(f"{page.relative_to(ROOT)}:{line + (e.lineno or 1) - 1}: {e.msg}")
    assert not bad, "\n".join(bad)


def test_every_public_name_is_in_the_api_reference_with_a_docstring():
    import blendseg

    api = (ROOT / "docs" / "reference" / "api.md").read_text()
    for name in blendseg.__all__:
        if name.startswith("__"):
            continue
        obj = getattr(blendseg, name)
        assert (obj.__doc__ or "").strip(), f"blendseg.{name} has no docstring"
        assert re.search(rf"^::: blendseg\.[\w.]*\b{name}$", api, re.M), f"blendseg.{name} is not in reference/api.md"


@pytest.mark.slow
def test_the_site_builds_strict(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, a page missing from the nav, a docstring mkdocstrings
    cannot render fail it. Without the docs extra it skips (with CI=true it fails)."""
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
        import mkdocs_gen_files  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the docs extra is needed with CI=true: {e}")
        pytest.skip(f"the docs extra is not installed ({e}): pip install -e '.[docs]'")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"},  # the plugins' banners
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
