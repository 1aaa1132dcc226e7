"""The one progress-bar policy (``lmc_ref.progress``): True, False, or "auto" = a terminal and large work."""

import sys

import pytest

from lmc_ref import progress


@pytest.mark.parametrize("tty", [False, True])
def test_policy(tty, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    big, small = progress.PROGRESS_THRESHOLD + 1, progress.PROGRESS_THRESHOLD
    assert progress.wanted(True, small) and not progress.wanted(False, big) and not progress.wanted(None, big)
    assert progress.wanted("auto", big) == tty and not progress.wanted("auto", small)
    assert progress.wanted("auto", None) == tty  # unknown size counts as large
    assert progress.wanted("auto", 1, threshold=0) == tty  # callers counting steps or chunks set their own
    with pytest.raises(ValueError, match="progress"):
        progress.wanted("yes", 1)


def test_bar_draws_on_stderr_or_not_at_all(capsys):
    assert progress.progress_bar(10, False) is None
    assert progress.tick(None) is None
    progress.close(None)
    assert capsys.readouterr().err == ""
    bar = progress.progress_bar(10, True, "work", unit="step", leave=True)
    progress.tick(bar)(4)
    progress.tick(bar)(6)
    progress.close(bar)
    err = capsys.readouterr().err
    assert "work: 100%|" in err and "10/10" in err and "step" in err
