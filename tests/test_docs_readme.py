"""A reader's first messages: the README's quick starts and the offline download error.

* The README shows both ways to run Table 1: with ``--download`` and with
  local data (``LMC_REF_DATA=DIR lmc-ref reproduce --quick``), and the folder
  layout ``LMC_REF_DATA`` is read with (the names ``load_modalities`` and
  ``find_enwik`` really look for).
* Offline, the download fails with a message that names the URL and both
  alternatives (``LMC_REF_DATA``, ``--text``), and so does a search that finds
  no text.
"""

import urllib.error
from pathlib import Path

import pytest

from lmc_ref import data

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_shows_both_quick_starts():
    assert "lmc-ref reproduce --quick --download" in README
    assert "LMC_REF_DATA=DIR lmc-ref reproduce --quick" in README


def test_readme_layout_names_what_the_loaders_look_for():
    layout = README[README.index("DIR/\n") :].split("```")[0]
    names = [line.split()[0] for line in layout.splitlines()[1:] if line.strip()]
    assert names == ["enwik8", "images/", "audio/"], names
    assert "enwik8_head" in layout
    assert data.ENWIK_CANDIDATES["enwik8"] == ("enwik8", "enwik8_head")
    assert data.ENWIK_URL.format(name="enwik8") in README


def test_offline_download_names_the_url_and_the_alternatives(tmp_path):
    def offline(url):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(ConnectionError) as err:
        data.download_enwik("enwik8", tmp_path, progress=False, opener=offline)
    message = str(err.value)
    for part in (data.ENWIK_URL.format(name="enwik8"), "LMC_REF_DATA", "--text", "name resolution"):
        assert part in message, message
    assert list(tmp_path.iterdir()) == []   # nothing half-written left behind


def test_missing_text_names_the_url_and_the_alternatives(tmp_path, monkeypatch):
    monkeypatch.setenv("LMC_REF_DATA", str(tmp_path))
    monkeypatch.setattr(data, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(FileNotFoundError) as err:
        data.find_enwik("enwik8")
    message = str(err.value)
    for part in (data.ENWIK_URL.format(name="enwik8"), "LMC_REF_DATA", "--text", "--download"):
        assert part in message, message
