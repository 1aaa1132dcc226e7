"""The built site in a real browser: every page loaded in headless Chromium.

``tests/test_docs_site.py`` reads the HTML the build writes; this test reads
what a reader sees once scripts have run.  The site is built (``mkdocs build
--strict``, the fixture of ``test_docs_site``), served on 127.0.0.1 by
``http.server`` in a thread, and every page is loaded in Debian's
``chromium``, driven over the DevTools protocol through a pipe
(``--remote-debugging-pipe``: no WebSocket client, no browser download).
A page fails on:

* a console error, an uncaught exception, or a resource that failed to load;
* a request to any host other than the local server (every other host is
  also mapped to "not found", so nothing ever leaves the machine);
* math MathJax did not render: a formula left as TeX, TeX delimiters or
  commands in the text outside code, a TeX error or an undefined macro;
* a code listing outside ``<pre>``: every source region the page includes
  must sit whole in one ``<pre>``, none of its lines in the prose, and no
  highlighted block may lack its ``<pre>``;
* more or fewer than one ``<h1>``.

A screenshot of every whole page (JPEG, 1280 pixels wide, in tiles of 8000
pixels when it is taller) goes to ``$LMC_REF_DOCS_SCREENSHOTS`` (default: a
temporary folder, named in the output of ``pytest -s``) for a person to look
at.  Without ``chromium`` on the PATH the test skips, except
under ``CI=true``, where it fails: ``.ci/run`` installs the package.
Marked ``docs``: about a minute, so not in the default run; ``pytest -m docs``
runs it (``.ci/run`` does).
"""

import base64
import contextlib
import functools
import http.server
import json
import os
import re
import select
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from test_docs import _SECTION_TARGET, _marker, snippet_references
from test_docs_site import DOCS, ROOT, _hook, _squash, html_of, site  # noqa: F401  (site: the built site, a fixture)

pytestmark = pytest.mark.docs

#: Width of the browser window; a page taller than TILE pixels is screenshotted in tiles
#: (``NAME-1.jpg``, ``NAME-2.jpg``, ...: one image may not exceed Chromium's 16384 pixels).
WIDTH, TILE = 1280, 8000


def chromium_or_skip():
    """The Chromium executable, or a skip (a failure under ``CI=true``) naming the package."""
    exe = os.environ.get("LMC_REF_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if exe:
        return exe
    reason = "chromium is not installed (apt-get install chromium): the docs were not checked in a browser"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason + " (CI=true: this must not skip)")
    pytest.skip(reason)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fd 3 in, fd 4 out)."""

    def __init__(self, exe, profile):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()
        args = [exe, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--mute-audio",
                # Any host but the local server resolves to nothing: the page cannot reach the network.
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                f"--user-data-dir={profile}", "about:blank"]
        self._log = open(Path(profile) / "chromium.log", "wb")
        # bash (not sh: dash takes one-digit descriptors only) puts the pipe ends on fds 3 and 4.
        self._proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{to_browser} 4>&{from_browser}', "bash", *args],
                                      pass_fds=(to_browser, from_browser), stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=self._log)
        os.close(to_browser)
        os.close(from_browser)
        self._buffer, self._next_id, self.events = b"", 0, []

    def _receive(self, deadline):
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise EOFError(f"chromium exited (rc {self._proc.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def call(self, method, session=None, timeout=30, **params):
        """Send one command and return its result; events that arrive meanwhile go to ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._receive(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
            elif "error" in answer:
                raise RuntimeError(f"{method}: {answer['error']}")
            else:
                return answer["result"]

    def wait_for(self, method, session, timeout=30):
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self.events):
            self.events.append(self._receive(deadline))

    def close(self):
        try:
            self.call("Browser.close", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._read)
        os.close(self._write)
        self._log.close()


# What one page looks like once its scripts ran (and MathJax typeset, when the page has math).
DOM_FACTS = r"""
(async () => {
  const t0 = Date.now(), sleep = ms => new Promise(r => setTimeout(r, ms));
  const untypeset = () => [...document.querySelectorAll('.arithmatex')].filter(e => !e.querySelector('mjx-container'));
  if (document.querySelector('.arithmatex')) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise) && Date.now() - t0 < 20000) await sleep(50);
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
    while (untypeset().length && Date.now() - t0 < 20000) await sleep(50);
  }
  await document.fonts.ready;
  const prose = [], walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n; (n = walker.nextNode());)
    if (!n.parentElement.closest('script, style, pre, code, kbd, textarea, noscript, mjx-container')) prose.push(n.data);
  return {
    h1: document.querySelectorAll('h1').length,
    formulas: document.querySelectorAll('.arithmatex').length,
    untypeset: untypeset().map(e => e.textContent.slice(0, 80)),
    tex_errors: [...document.querySelectorAll('mjx-merror, mjx-container [style*="color: red"]')]
      .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80)),
    prose: prose.join(''),
    pres: [...document.querySelectorAll('pre')].map(e => e.textContent),
    highlights_without_pre: [...document.querySelectorAll('div.highlight, .highlighttable')]
      .filter(e => !e.querySelector('pre')).map(e => e.textContent.slice(0, 80)),
  };
})()
"""


def load(browser, url, screenshot=None):
    """Load ``url`` in a new tab: ``(DOM facts, console errors, requested URLs)``.

    With ``screenshot`` (a path ending ``.jpg``) the whole page is saved there, in tiles if it is tall.
    """
    target = browser.call("Target.createTarget", url="about:blank")["targetId"]
    session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        browser.call(f"{domain}.enable", session)
    browser.call("Emulation.setDeviceMetricsOverride", session, width=WIDTH, height=900, deviceScaleFactor=1,
                 mobile=False)
    browser.events.clear()
    browser.call("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired", session)
    result = browser.call("Runtime.evaluate", session, timeout=60, expression=DOM_FACTS, awaitPromise=True,
                          returnByValue=True)
    if "exceptionDetails" in result:
        raise RuntimeError(f"{url}: the page checks did not run: {result['exceptionDetails']}")
    facts = result["result"]["value"]
    if screenshot:
        height = max(1, int(browser.call("Page.getLayoutMetrics", session)["cssContentSize"]["height"]))
        tops = range(0, height, TILE)
        for k, top in enumerate(tops, 1):
            clip = {"x": 0, "y": top, "width": WIDTH, "height": min(TILE, height - top), "scale": 1}
            jpeg = browser.call("Page.captureScreenshot", session, timeout=60, format="jpeg", quality=80,
                                clip=clip, captureBeyondViewport=True)["data"]
            path = Path(screenshot)
            if len(tops) > 1:
                path = path.with_name(f"{path.stem}-{k}{path.suffix}")
            path.write_bytes(base64.b64decode(jpeg))
    browser.call("Target.closeTarget", targetId=target)
    errors, requests = [], []
    for event in browser.events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            requests.append(params["request"]["url"])
    return facts, errors, requests


def page_problems(name, facts, errors, requests, origin, regions=()):
    """Everything wrong with one loaded page, one line each."""
    bad = [f"{name}: {e}" for e in errors]
    bad += [f"{name}: request to another host: {u}" for u in requests
            if not (u.startswith(origin + "/") or u.startswith(("data:", "blob:", "about:")))]
    if facts["h1"] != 1:
        bad.append(f"{name}: {facts['h1']} <h1> elements")
    bad += [f"{name}: formula not typeset: {t!r}" for t in facts["untypeset"]]
    bad += [f"{name}: TeX error or undefined macro: {t!r}" for t in facts["tex_errors"]]
    prose = facts["prose"]
    for m in re.finditer(r"\\[()\[\]]|\\[A-Za-z]{2,}", prose):
        bad.append(f"{name}: TeX left in the text: ...{prose[max(0, m.start() - 40) : m.end() + 40]!r}")
    bad += [f"{name}: highlighted code without <pre>: {t!r}" for t in facts["highlights_without_pre"]]
    pres, squashed_prose = [_squash(p) for p in facts["pres"]], _squash(prose)
    for target, region in regions:
        if not any(_squash(region) in p for p in pres):
            bad.append(f"{name}: listing {target} is not inside one <pre>")
        # Lines of code, not of comments or docstrings (the prose may quote those).
        code = [s.strip() for s in region.splitlines()
                if len(s.strip()) >= 25 and not s.strip().startswith("#") and re.search(r"[=(\[{]|:$", s.strip())]
        leaked = [s for s in code if _squash(s) in squashed_prose]
        bad += [f"{name}: a line of listing {target} is in the prose: {s!r}" for s in leaked[:3]]
    return bad


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def serve(folder):
    """Serve ``folder`` on 127.0.0.1 (a free port) from a thread; yields the origin URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    exe = chromium_or_skip()
    chromium = Chromium(exe, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def listings(md):
    """``(target, source text)`` of every source region a Markdown page includes (marker lines dropped)."""
    found = []
    for _, target in snippet_references(md.read_text(encoding="utf-8")):
        if target is None or target.endswith(".md"):
            continue   # Markdown fragments (results tables) render as Markdown
        m = _SECTION_TARGET.match(target)
        path, section = (m.group("path"), m.group("section")) if m else (target, None)
        lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
        if section is not None:
            start = next(i for i, s in enumerate(lines) if _marker("start", section).search(s))
            end = next(i for i, s in enumerate(lines) if _marker("end", section).search(s))
            lines = lines[start + 1 : end]
        text = "\n".join(s for s in lines if not re.search(r"-+8<-+\s+\[\s*(start|end)\s*:", s))
        if text.strip():
            found.append((target, text))
    return found


def test_every_page_renders_in_chromium(browser, site, tmp_path_factory):
    """Every page of the built site, screenshotted, with none of the problems ``page_problems`` names."""
    shots = Path(os.environ.get("LMC_REF_DOCS_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    regions = {html_of(md): listings(md) for md in DOCS.glob("**/*.md")}
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                   if not p.relative_to(site).as_posix().startswith(("assets/", "javascripts/")))
    bad, formulas, listed = [], 0, 0
    with serve(site) as origin:
        for name in pages:
            stem = name.removesuffix("index.html").removesuffix(".html").strip("/").replace("/", "_")
            shot = shots / f"{stem or 'index'}.jpg"
            facts, errors, requests = load(browser, f"{origin}/{name.removesuffix('index.html')}", shot)
            bad += page_problems(name, facts, errors, requests, origin, regions.get(name, ()))
            if not (shot.is_file() or shot.with_name(f"{shot.stem}-1.jpg").is_file()):
                bad.append(f"{name}: no screenshot written to {shots}")
            formulas += facts["formulas"]
            listed += len(regions.get(name, ()))
    print(f"\nscreenshots of {len(pages)} pages in {shots}")
    assert len(pages) >= 14, pages
    assert formulas > 150, f"only {formulas} formulas: is arithmatex still on?"
    assert listed >= 30, f"only {listed} listings: did the docs or this test's parser change?"
    assert not bad, "\n".join(bad)


BROKEN_PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<h1>One</h1><h1>Two</h1>
<p>A formula nobody typeset: \(x^2\) and \frac{1}{2}.</p>
<div class="highlight"><code>def f(x):</code></div>
<p>    return g(x) + 1  # this line belongs to a listing</p>
<img src="http://cdn.example.com/x.png">
<script>console.error("boom")</script>
<script>throw new Error("uncaught")</script>
</body></html>
"""

GOOD_PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<h1>One</h1><p>Prose with <code>\(inline code\)</code>.</p>
<div class="highlight"><pre><code>def f(x):
    return g(x) + 1  # this line belongs to a listing</code></pre></div>
</body></html>
"""


def test_a_broken_page_is_caught_and_a_sound_one_passes(browser, tmp_path):
    """Each kind of problem the site test looks for is reported on a page made to have it, and none on a sound one."""
    (tmp_path / "broken.html").write_text(BROKEN_PAGE, encoding="utf-8")
    (tmp_path / "good.html").write_text(GOOD_PAGE, encoding="utf-8")
    listing = [("m.py:f", "def f(x):\n    return g(x) + 1  # this line belongs to a listing\n")]
    with serve(tmp_path) as origin:
        broken = page_problems("broken", *load(browser, f"{origin}/broken.html"), origin, listing)
        good = page_problems("good", *load(browser, f"{origin}/good.html"), origin, listing)
    assert good == []
    text = "\n".join(broken)
    for complaint in ("console: boom", "exception: Error: uncaught", "log: Failed to load resource",
                      "request to another host: http://cdn.example.com/x.png", "2 <h1> elements",
                      "TeX left in the text", "highlighted code without <pre>",
                      "listing m.py:f is not inside one <pre>", "a line of listing m.py:f is in the prose"):
        assert complaint in text, f"{complaint!r} not reported:\n{text}"
    assert sum("TeX left in the text" in line for line in broken) == 3   # \\(, \\) and \\frac


MATH_PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head><body>
<h1>Math</h1>
<p>Fine: <span class="arithmatex">\(x^2\)</span>; undefined: <span class="arithmatex">\(\nosuchmacro{x}\)</span>;
broken: <span class="arithmatex">\(x^2^3\)</span>.</p>
<script src="mathjax.js"></script><script src="es5/tex-mml-chtml.js"></script>
</body></html>
"""


def test_math_that_mathjax_cannot_render_is_caught(browser, tmp_path):
    """The site's own MathJax copy and configuration, given one good and two bad formulas."""
    (tmp_path / "es5").symlink_to(_hook("mathjax").es5_folder())
    (tmp_path / "mathjax.js").symlink_to(DOCS / "javascripts" / "mathjax.js")
    (tmp_path / "math.html").write_text(MATH_PAGE, encoding="utf-8")
    with serve(tmp_path) as origin:
        facts, errors, requests = load(browser, f"{origin}/math.html")
        problems = page_problems("math", facts, errors, requests, origin)
    assert facts["formulas"] == 3 and facts["untypeset"] == []
    assert len([p for p in problems if "TeX error or undefined macro" in p]) == 2, problems
    assert not [p for p in problems if "TeX error" not in p], problems
