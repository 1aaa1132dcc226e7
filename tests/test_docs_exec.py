"""The docs' runnable examples show their output: ``docs/hooks/examples.py``.

The hook is tested on Markdown made here (output inserted after each block, a
shared namespace, bash blocks, a failing block named by page and line), then
inside a real ``mkdocs build --strict`` of a one-page site, where a failing
example must fail the build.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[1]
HOOK = ROOT / "docs" / "hooks" / "examples.py"


@pytest.fixture(scope="module")
def hook():
    spec = importlib.util.spec_from_file_location("docs_hook_examples", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGE = """# A page

<!-- run -->
```python
x = 6 * 7
print("x is", x)
```

Not run (no marker):

```python
raise SystemExit("must not run")
```

<!-- run -->
```python
y = x + 1  # the namespace is shared with the block above
```

!!! note

    <!-- run -->
    ```bash
    echo "from bash: $((6 * 7))"
    ```

<!-- run -->
```python
print(f"y = {y}; a fence: ```")
```
"""


def test_output_follows_each_block_that_prints(hook):
    out = hook.with_outputs(PAGE, "page.md")
    assert out.count('title="Output"') == 3
    first = out.index("x is 42")
    assert out.index('print("x is", x)') < first < out.index("Not run")
    assert "must not run" in out and out.count("must not run") == 1  # shown, not run
    # inside the admonition the output is indented like its block
    assert '    ```text title="Output"\n    from bash: 42\n    ```' in out
    # a fence longer than the backticks the output contains
    assert '````text title="Output"\ny = 43; a fence: ```\n````' in out


def test_page_without_examples_is_unchanged(hook):
    text = "# Title\n\n```python\nprint(1)\n```\n"
    assert hook.with_outputs(text, "plain.md") == text


def test_a_failing_block_names_its_page_and_line(hook):
    page = "# P\n\n<!-- run -->\n```python\nprint('fine')\n```\n\n<!-- run -->\n```python\n\n1 / 0\n```\n"
    with pytest.raises(PluginError) as err:
        hook.with_outputs(page, "broken.md")
    message = str(err.value)
    assert "broken.md:9" in message and "ZeroDivisionError" in message
    assert 'File "broken.md", line 11' in message  # the traceback points into the page


def test_a_failing_bash_block_fails_too(hook):
    with pytest.raises(PluginError, match=r"bash exited with status 3"):
        hook.with_outputs("<!-- run -->\n```bash\necho before\nexit 3\n```\n", "sh.md")


def test_a_slow_block_fails(hook):
    with pytest.raises(PluginError, match="took more than 1 s"):
        hook.with_outputs("<!-- run -->\n```python\nimport time\ntime.sleep(30)\n```\n", "slow.md", timeout=1)


def _site(tmp_path, page):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(page)
    (tmp_path / "mkdocs.yml").write_text(
        f"site_name: t\ntheme:\n  name: mkdocs\nhooks:\n  - {HOOK}\n"
        "markdown_extensions:\n  - pymdownx.superfences\n  - pymdownx.highlight\n")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)


def test_mkdocs_build_shows_the_output(tmp_path):
    proc = _site(tmp_path, "# Hi\n\n<!-- run -->\n```python\nprint(sum(range(10)))\n```\n")
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "site" / "index.html").read_text()
    assert "Output" in html and ">45" in html


def test_mkdocs_build_fails_on_a_failing_example(tmp_path):
    proc = _site(tmp_path, "# Hi\n\n<!-- run -->\n```python\nraise ValueError('stale example')\n```\n")
    assert proc.returncode != 0
    assert "index.md:4" in proc.stderr and "ValueError: stale example" in proc.stderr
