"""The experiments' epilogue (``lmc_ref.experiments.report``): JSON, Markdown and figure, one call."""

import json

from lmc_ref.experiments import report


def test_write_report_writes_json_markdown_and_figure(tmp_path):
    from PIL import Image

    def figure(path):
        plt = report.pyplot()
        fig, ax = plt.subplots(figsize=(2, 1))
        ax.plot([0, 1], [1, 0])
        report.save_figure(fig, path, dpi=50)

    lines = []
    result = {"meta": {"seconds": 1.5}, "rows": [{"a": 1}]}
    paths = report.write_report(tmp_path / "out", "demo", result, "| a |\n", figure, log=lines.append)
    assert paths == {k: tmp_path / "out" / f"demo.{k}" for k in ("json", "md", "png")}
    assert json.loads(paths["json"].read_text()) == result and paths["md"].read_text() == "| a |\n"
    with Image.open(paths["png"]) as png:
        assert png.size == (100, 50)
    assert lines == [f"wrote demo.json, demo.md and demo.png to {tmp_path / 'out'} in 1.5 s"]
    assert report.pyplot().get_backend().lower() == "agg"
    assert report.pyplot().get_fignums() == []  # save_figure closed it


def test_write_report_without_figure(tmp_path):
    lines = []
    paths = report.write_report(tmp_path, "g", {"text": "x"}, "md", also=["g/"], log=lines.append)
    assert set(paths) == {"json", "md"} and not (tmp_path / "g.png").exists()
    assert lines == [f"wrote g.json, g.md and g/ to {tmp_path}"]
