"""The docs cannot drift from the code: snippet sections exist, examples run.

Conventions checked here (see ``docs/index.md``, "Writing the docs"):

* Code listings are included from the source with pymdownx.snippets, one
  reference per line: ``--8<-- "path"`` (a whole file) or
  ``--8<-- "path:section"`` (the lines between ``--8<-- [start:section]`` and
  ``--8<-- [end:section]`` marker comments in that file).  Paths are relative
  to the project root.  mkdocs already fails on a missing file or start
  marker; this test also requires the end marker (without it snippets would
  silently include the rest of the file) and runs without building the site.
* A fenced ``python`` block directly preceded by the line ``<!-- run -->`` is a
  runnable example.  The runnable blocks of one page are executed in order in
  one shared namespace (like a doctest session), in a temporary working
  directory, and must not raise.  Every other ``python`` block must either be
  made only of snippet references or be preceded by ``<!-- norun -->``.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

RUN_MARK = "<!-- run -->"
NORUN_MARK = "<!-- norun -->"

# Same shape as pymdownx.snippets' inline form: optional indent, the scissors,
# then a quoted target.  A leading ";" escapes the line (shown literally).
_SNIPPET_ANY = re.compile(r"^[ \t]*(?P<escape>;*)-+8<-+(?P<rest>.*)$")
_SNIPPET_INLINE = re.compile(r"^[ \t]+(?P<q>[\"'])(?P<target>.+?)(?P=q)[ \t]*$")
_SECTION_TARGET = re.compile(r"^(?P<path>.+?):(?P<section>[A-Za-z][-_0-9A-Za-z]*)$")
_LINE_RANGE_TARGET = re.compile(r"^.+?(:-?[0-9]*){1,2}(,.*)?$")
_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")


def _marker(kind, name):
    return re.compile(r"-+8<-+[ \t]+\[[ \t]*" + kind + r"[ \t]*:[ \t]*" + re.escape(name) + r"[ \t]*\]", re.I)


def snippet_references(text):
    """Yield ``(line_number, target)`` for every snippet line of a Markdown text.

    Lines of the unsupported forms (block form, unquoted) yield ``target=None``.
    """
    for lineno, line in enumerate(text.splitlines(), 1):
        m = _SNIPPET_ANY.match(line)
        if not m or m.group("escape"):
            continue
        inline = _SNIPPET_INLINE.match(m.group("rest"))
        yield lineno, (inline.group("target") if inline else None)


def check_snippet_references(docs_dir, root):
    """Return a list of problems (empty when every reference resolves) and the reference count."""
    problems = []
    count = 0
    for page in sorted(Path(docs_dir).glob("**/*.md")):
        rel = page.relative_to(docs_dir)
        for lineno, target in snippet_references(page.read_text(encoding="utf-8")):
            where = f"{rel}:{lineno}"
            count += 1
            if target is None:
                problems.append(f'{where}: use the one-line form --8<-- "path" or --8<-- "path:section"')
                continue
            if "://" in target:
                problems.append(f"{where}: {target!r} is a URL; the docs build must not need the network")
                continue
            section = None
            m = _SECTION_TARGET.match(target)
            if m:
                path, section = m.group("path"), m.group("section")
            elif _LINE_RANGE_TARGET.match(target) and ":" in target:
                problems.append(f"{where}: {target!r} uses line numbers; add section markers instead")
                continue
            else:
                path = target
            source = Path(root) / path
            if not source.is_file():
                problems.append(f"{where}: {path} does not exist")
                continue
            if section is None:
                continue
            lines = source.read_text(encoding="utf-8").splitlines()
            starts = [i for i, s in enumerate(lines) if _marker("start", section).search(s)]
            ends = [i for i, s in enumerate(lines) if _marker("end", section).search(s)]
            if len(starts) != 1 or len(ends) != 1:
                problems.append(
                    f"{where}: {path} must contain exactly one '--8<-- [start:{section}]' and one"
                    f" '--8<-- [end:{section}]' marker (found {len(starts)} and {len(ends)})"
                )
            elif not starts[0] < ends[0]:
                problems.append(f"{where}: in {path} the end marker of {section!r} comes before its start")
    return problems, count


def python_blocks(text):
    """Yield ``(line_number, mark, code)`` for every fenced python block of a Markdown text.

    ``mark`` is the stripped line just before the fence (``RUN_MARK``,
    ``NORUN_MARK`` or anything else); ``code`` is dedented by the fence's indent.
    """
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        info = m.group("info").strip().split()
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        if info and info[0] in ("python", "py"):
            body = [s[len(indent):] if s.startswith(indent) else s.lstrip() for s in lines[i + 1 : j]]
            mark = lines[i - 1].strip() if i > 0 else ""
            yield i + 1, mark, "\n".join(body) + "\n"
        i = j + 1


def _only_snippets(code):
    lines = [s for s in code.splitlines() if s.strip()]
    return bool(lines) and all(_SNIPPET_ANY.match(s) for s in lines)


def _pages():
    return sorted(DOCS.glob("**/*.md"))


def _pages_with_examples():
    return [p for p in _pages() if any(mark == RUN_MARK for _, mark, _ in python_blocks(p.read_text("utf-8")))]


# ------------------------------------------------------------------ tests ----


def test_snippet_references_resolve():
    problems, count = check_snippet_references(DOCS, ROOT)
    assert count > 0, "no snippet references found: did the docs or this parser change?"
    assert not problems, "\n".join(problems)


def test_checker_catches_a_missing_marker(tmp_path):
    """The check above must fail when a marker disappears from the source."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        '```python\n--8<-- "pkg/mod.py:alpha"\n```\n\n```python\n--8<-- "pkg/mod.py:beta"\n```\n'
        '\n--8<-- "pkg/missing.py"\n\n;--8<-- "escaped/is/ignored.py"\n'
    )
    (tmp_path / "pkg" / "mod.py").write_text(
        "# --8<-- [start:alpha]\nx = 1\n# --8<-- [end:alpha]\n# --8<-- [start:beta]\ny = 2\n"
    )
    problems, count = check_snippet_references(tmp_path / "docs", tmp_path)
    assert count == 3
    assert len(problems) == 2, problems
    assert "[end:beta]" in problems[0] and "pkg/missing.py does not exist" in problems[1]


def test_python_blocks_follow_the_convention():
    bad = []
    for page in _pages():
        for lineno, mark, code in python_blocks(page.read_text(encoding="utf-8")):
            if mark in (RUN_MARK, NORUN_MARK):
                if mark == RUN_MARK and _SNIPPET_ANY.search(code):
                    bad.append(f"{page.relative_to(DOCS)}:{lineno}: a runnable block cannot include snippets")
            elif not _only_snippets(code):
                bad.append(
                    f"{page.relative_to(DOCS)}:{lineno}: python block is neither a snippet listing nor"
                    f" marked {RUN_MARK} / {NORUN_MARK}"
                )
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs_example__"}
    for lineno, mark, code in python_blocks(page.read_text(encoding="utf-8")):
        if mark == RUN_MARK:
            # Pad with blank lines so tracebacks point at the line in the .md file.
            exec(compile("\n" * lineno + code, str(page), "exec"), namespace)
