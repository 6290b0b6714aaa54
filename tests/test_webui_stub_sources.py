"""The stand-in (tests/webui_stub) cites the real WebUI truthfully: checked against the real source.

Every citation `modules/<file>.py:L<n>` (or `:L<n>-L<m>`) in the stand-in, in a docstring or a
comment, must point at a line of the real A1111 v1.10.1 file that holds what it cites: the text
in backquotes right after it (``modules/processing.py:L39 `opt_C = 4` ``), else the name of the
function, class or variable whose docstring or body holds the citation, as a word. The functions
and methods whose citation is the real `def` line take the real parameters (names, order, kinds
and defaults), read with `ast` from the real file. Citations of another version ("v1.8.0
modules/...") are not checked: only the v1.10.1 tree is here.

The real tree is read as tests/integration/harness.py finds it (tests/webui_env.py
real_a1111_sources); without one these tests skip, saying why, and fail under
PINNING_REQUIRE_WEBUI=1 (CI has the tree).
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.integration.harness import require_webui
from tests.webui_env import STUB_DIR, RealWebUIUnavailable, real_a1111_sources

CITATION = re.compile(r"(?<![\w/.])(?P<other>v1\.\d+\.\d+ )?(?P<file>(?:modules/[\w/]+|webui|launch)\.py)"
                      r":L(?P<start>\d+)(?:-L(?P<end>\d+))?(?: `(?P<text>[^`]+)`)?")
BARE_FILE = re.compile(r"(?<![\w/.])(?!modules/)(?P<file>\w+\.py):L\d+")
"""A citation without its folder ("sd_models.py:L869"), which names no file unambiguously."""
STAND_IN_ONLY = re.compile(r"Stand-in only|The stand-in's")

# Parameters the stand-in leaves out on purpose, by "file:function": none so far. A name here
# must come with the reason in the stand-in's docstring.
SIGNATURE_EXCEPTIONS: dict[str, set[str]] = {}


@dataclass(frozen=True)
class Citation:
    where: str
    """stand-in file:line"""
    file: str
    start: int
    end: int
    text: str | None
    owner: str | None
    """The innermost function, class or assigned name around the citation."""
    function: ast.FunctionDef | ast.AsyncFunctionDef | None
    """That owner's node when it is a function whose docstring holds the citation."""


@pytest.fixture(scope="module")
def real() -> dict[str, str]:
    try:
        return real_a1111_sources()
    except RealWebUIUnavailable as e:
        if require_webui():
            pytest.fail(f"PINNING_REQUIRE_WEBUI=1 but no real WebUI tree: {e}")
        pytest.skip(f"no real A1111 tree to check the stand-in's citations against: {e}")


def _owners(tree: ast.Module) -> dict[int, tuple[str, ast.AST]]:
    """Line -> (name, node) of the innermost definition covering it; an assignment also covers the
    docstring line(s) right after it (the stand-in documents module constants that way)."""
    owners: dict[int, tuple[str, ast.AST]] = {}

    def claim(first: int, last: int, name: str, node: ast.AST) -> None:
        for line in range(first, last + 1):
            owners[line] = (name, node)  # visited outside-in, so inner definitions win

    def visit(body: list[ast.stmt]) -> None:
        for i, node in enumerate(body):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                first = min([d.lineno for d in node.decorator_list] + [node.lineno])
                claim(first, node.end_lineno or node.lineno, node.name, node)
                visit(node.body)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if not names:
                    continue
                last = node.end_lineno or node.lineno
                following = body[i + 1] if i + 1 < len(body) else None
                if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                        and isinstance(following.value.value, str):
                    last = following.end_lineno or last
                claim(node.lineno, last, names[0], node)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))

    visit(tree.body)
    return owners


def stand_in_citations() -> Iterator[Citation]:
    for path in sorted(STUB_DIR.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        owners = _owners(ast.parse(source))
        for number, line in enumerate(source.splitlines(), 1):
            for match in CITATION.finditer(line):
                if match["other"]:
                    continue
                name, node = owners.get(number, (None, None))
                function = node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and number <= node.body[0].end_lineno else None
                start = int(match["start"])
                yield Citation(where=f"{path.relative_to(STUB_DIR)}:{number}", file=match["file"], start=start,
                               end=int(match["end"] or start), text=match["text"], owner=name, function=function)


def test_every_stand_in_function_cites_the_webui_source() -> None:
    """Each public top-level function and class of the stand-in names the WebUI file and line it
    mirrors, or says that it exists only in the stand-in."""
    missing = []
    for path in sorted((STUB_DIR / "modules").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                docstring = ast.get_docstring(node) or ""
                if not (CITATION.search(docstring) or STAND_IN_ONLY.search(docstring)):
                    missing.append(f"{path.name}:{node.name}")
    assert not missing, missing


def test_every_citation_names_its_file_with_its_folder() -> None:
    bare = [f"{path.relative_to(STUB_DIR)}:{n}: {m[0]}" for path in sorted(STUB_DIR.rglob("*.py"))
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            for m in BARE_FILE.finditer(line) if not line[:m.start()].endswith(("modules/", "v1.8.0 "))]
    assert not bare, bare


def test_every_citation_points_at_what_it_cites(real: dict[str, str]) -> None:
    wrong = []
    checked = 0
    for c in stand_in_citations():
        lines = real.get(c.file, "").splitlines()
        if not lines:
            wrong.append(f"{c.where}: {c.file} is not a file of the real tree")
            continue
        if not 1 <= c.start <= c.end <= len(lines):
            wrong.append(f"{c.where}: {c.file}:L{c.start}-L{c.end} is outside the file ({len(lines)} lines)")
            continue
        cited = lines[c.start - 1]
        if c.text is not None:
            ok = c.text in cited
            wanted = repr(c.text)
        elif c.owner is not None:
            ok = re.search(rf"\b{re.escape(c.owner)}\b", cited) is not None
            wanted = f"the name {c.owner!r}"
        else:
            ok, wanted = False, "a `text` after the citation (it has no enclosing definition to name)"
        checked += 1
        if not ok:
            wrong.append(f"{c.where}: {c.file}:L{c.start} is {cited.strip()!r}, which lacks {wanted}")
    assert checked > 300, f"only {checked} citations found: has the citation format changed?"
    assert not wrong, "\n".join(wrong)


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[tuple[str, str, str | None]]:
    """(kind, name, default source) of each parameter, in order."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    out = [("positional-only" if i < len(args.posonlyargs) else "positional", a.arg,
            ast.unparse(d) if d is not None else None) for i, (a, d) in enumerate(zip(positional, defaults))]
    if args.vararg:
        out.append(("*args", args.vararg.arg, None))
    out += [("keyword-only", a.arg, ast.unparse(d) if d is not None else None)
            for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        out.append(("**kwargs", args.kwarg.arg, None))
    return out


def _real_functions(source: str) -> dict[int, ast.FunctionDef | ast.AsyncFunctionDef]:
    with warnings.catch_warnings():  # the WebUI's own invalid escape sequences
        warnings.simplefilter("ignore", (SyntaxWarning, DeprecationWarning))
        tree = ast.parse(source)
    return {node.lineno: node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def test_stand_in_functions_take_the_real_parameters(real: dict[str, str]) -> None:
    parsed: dict[str, dict[int, ast.FunctionDef | ast.AsyncFunctionDef]] = {}
    differ = []
    compared = 0
    for c in stand_in_citations():
        if c.function is None or c.text is not None or c.file not in real:
            continue
        functions = parsed.setdefault(c.file, _real_functions(real[c.file]))
        original = functions.get(c.start)
        if original is None or original.name != c.function.name:
            continue  # a citation of a function's body, not of its `def` line
        compared += 1
        ours, theirs = _parameters(c.function), _parameters(original)
        skipped = SIGNATURE_EXCEPTIONS.get(f"{c.file}:{original.name}", set())
        theirs = [p for p in theirs if p[1] not in skipped]
        if ours != theirs:
            differ.append(f"{c.where} {c.function.name}: stand-in {ours}\n    real {c.file}:L{c.start} {theirs}")
    assert compared > 100, f"only {compared} signatures compared: has the citation format changed?"
    assert not differ, "\n".join(differ)


def test_masking_stand_in_agrees_with_the_webuis_masking_module(real: dict[str, str], webui: Any) -> None:
    """modules/masking.py is plain PIL: run the real one (read from the tree at test time) beside the
    stand-in on masks that exercise padding, clipping and both expansion directions."""
    namespace: dict[str, object] = {}
    exec(compile(real["modules/masking.py"], "modules/masking.py", "exec"), namespace)  # noqa: S102 - test fixture
    boxes = [(40, 40, 55, 55), (0, 10, 63, 20), (30, 0, 36, 63), (60, 60, 63, 63), (5, 20, 20, 30)]
    sizes = [(64, 64), (64, 48), (48, 64)]
    masking = webui.module("masking")
    y, x = np.mgrid[0:64, 0:64]
    picture = Image.fromarray(np.stack([x * 4, y * 4, (x * y) % 256], axis=-1).astype(np.uint8))
    for box in boxes:
        mask = Image.new("L", (64, 64), 0)
        ImageDraw.Draw(mask).rectangle(box, fill=255)
        for pad in (0, 4, 32):
            region = masking.get_crop_region_v2(mask, pad)
            assert region == namespace["get_crop_region_v2"](mask, pad), (box, pad)
            for width, height in sizes:
                assert masking.expand_crop_region(region, width, height, 64, 64) == \
                    namespace["expand_crop_region"](region, width, height, 64, 64), (box, pad, width, height)
        assert np.array_equal(np.asarray(masking.fill(picture, mask)), np.asarray(namespace["fill"](picture, mask)))
    assert masking.get_crop_region_v2(Image.new("L", (8, 8), 0)) is None
