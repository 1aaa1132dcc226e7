"""Runnable examples show their output: each is run when the site is built.

A fenced ``python`` or ``bash`` block directly preceded by the line
``<!-- run -->`` is a runnable example (the convention ``tests/test_docs.py``
checks and runs)::

    <!-- run -->
    ```python
    from lmc_ref.codec import compress
    print(len(compress(b"abc" * 100)))
    ```

Before a page is rendered, this mkdocs hook runs the page's runnable blocks in
order in one fresh Python process (the Python that runs mkdocs, so the
project's own), working in an empty temporary folder: the ``python`` blocks
share one namespace, like a doctest session, and a ``bash`` block runs in
``bash -e -o pipefail`` in the same folder, with that Python's ``bin`` folder
(hence the ``lmc-ref`` command) first on ``PATH`` and its standard error
merged into its output, as a terminal shows it.  What a block prints is
inserted right after it as a ``text`` block titled "Output" (nothing when it
prints nothing).  The environment is passed on, so an example that needs data
reads it from ``LMC_REF_DATA``.

An example that raises, exits with an error or runs longer than
``TIMEOUT`` seconds fails the build with a ``PluginError`` naming the page,
the block's line and the traceback, so a page cannot show an example that no
longer works (or output that is no longer what it prints).
"""

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError

RUN_MARK = "<!-- run -->"
#: Languages a runnable block may be written in.
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash"}
#: Seconds all the runnable examples of one page may take together.
TIMEOUT = 300

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\n]*)$")

# The child process: runs the blocks (JSON on stdin) in order and prints a
# separator line after each block's output.  A failure is reported on stderr
# as a line "FAILED <block index>" followed by the traceback or the shell's output.
_DRIVER = r'''
import json, subprocess, sys, traceback
spec = json.load(sys.stdin)
namespace = {"__name__": "__docs_example__"}
for i, block in enumerate(spec["blocks"]):
    try:
        if block["lang"] == "python":
            # Blank lines first, so that a traceback names the line in the .md file.
            exec(compile("\n" * block["line"] + block["code"], spec["page"], "exec"), namespace)
        else:
            sys.stdout.flush()
            proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            sys.stdout.write(proc.stdout)
            if proc.returncode:
                raise RuntimeError(f"bash exited with status {proc.returncode}; its output:\n{proc.stdout}")
    except BaseException:
        sys.stdout.flush()
        print(f"FAILED {i}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
    sys.stdout.flush()
    print(spec["separator"], flush=True)
'''


def runnable_blocks(markdown):
    """``[(language, first line of code, code, indent, index of the line after the fence)]``.

    Line numbers count from 1; ``code`` is dedented by the fence's indent.
    """
    lines = markdown.split("\n")
    blocks, i = [], 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m.group("indent"), m.group("fence")
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        info = m.group("info").strip().split()
        if i > 0 and lines[i - 1].strip() == RUN_MARK and info and info[0] in LANGUAGES:
            body = [s[len(indent):] if s.startswith(indent) else s.lstrip() for s in lines[i + 1 : j]]
            blocks.append((LANGUAGES[info[0]], i + 1, "\n".join(body) + "\n", indent, j + 1))
        i = j + 1
    return blocks


def run_blocks(blocks, page="page", timeout=TIMEOUT):
    """Run ``blocks`` (from :func:`runnable_blocks`) in one fresh process; each block's output.

    Raises ``PluginError`` naming the page and the line of the block that failed.
    """
    separator = f"<<< end of example {secrets.token_hex(8)} >>>"
    spec = {"page": page, "separator": separator,
            "blocks": [{"lang": lang, "line": line, "code": code} for lang, line, code, _, _ in blocks]}
    python_bin = str(Path(sys.executable).parent)
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PATH=python_bin + os.pathsep + os.environ.get("PATH", ""),
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="lmc_ref_docs_example_") as work:
        try:
            proc = subprocess.run([sys.executable, "-c", _DRIVER], input=json.dumps(spec), cwd=work, env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PluginError(f"{page}: its runnable examples took more than {timeout} s") from None
    if proc.returncode:
        failed = re.search(r"^FAILED (\d+)$", proc.stderr, re.M)
        where = f"{page}:{blocks[int(failed.group(1))][1]}" if failed else page
        detail = proc.stderr[failed.end():].strip() if failed else proc.stderr.strip()
        raise PluginError(f"{where}: the runnable example (<!-- run -->) failed:\n{detail}")
    outputs = proc.stdout.split(separator + "\n")
    if len(outputs) != len(blocks) + 1:
        raise PluginError(f"{page}: the examples' output could not be split per block")
    return outputs[:-1]


def output_block(text, indent=""):
    """``text`` as a fenced block titled "Output", with a fence longer than any backtick run in it."""
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", text)), default=0))
    lines = [f'{fence}text title="Output"', *text.split("\n"), fence]
    return "\n".join(indent + line if line else line for line in lines)


def with_outputs(markdown, page="page", timeout=TIMEOUT):
    """``markdown`` with each runnable block's output inserted after it."""
    blocks = runnable_blocks(markdown)
    if not blocks:
        return markdown
    outputs = run_blocks(blocks, page, timeout)
    lines = markdown.split("\n")
    for (_, _, _, indent, after), out in reversed(list(zip(blocks, outputs))):
        out = out.rstrip()
        if out:
            lines[after:after] = ["", output_block(out, indent)]
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    return with_outputs(markdown, page.file.src_uri)
