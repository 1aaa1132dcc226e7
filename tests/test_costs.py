"""Per-byte code lengths of the context-mixing model and the 'where the bits go' breakdown."""

import numpy as np
import pytest

from lmc_ref.experiments import costs
from lmc_ref.predictors.context_mixing import ContextMixingPredictor

PAGE = (b"<page>\n  <title>Fox</title>\n  <id>12</id>\n  <text xml:space=\"preserve\">"
        b"The [[fox]] jumps {{cite}} over 42 dogs.\n* item\n{| class\n| cell\n</text>\n</page>\n")


def test_byte_costs_sum_to_the_ideal_length_and_follow_surprise():
    data = np.frombuffer(b"abababababababababab" * 20 + b"Z", np.uint8)
    model = ContextMixingPredictor(12)
    per_byte = model.byte_costs(data)
    assert per_byte.shape == data.shape and (per_byte > 0).all()
    assert per_byte.sum() == pytest.approx(model.ideal_bits(data), rel=1e-12)
    # the repeated pattern becomes cheap; the surprise at the end costs more than any late repeat
    assert per_byte[300:-1].max() < 0.5 < per_byte[0] and per_byte[-1] > 4


def test_classify_regions_and_characters():
    regions, characters = costs.classify(PAGE)
    text = PAGE.decode()

    def region_of(s):
        i = text.index(s)
        return costs.REGIONS[regions[i]]

    assert region_of("<title>") == region_of("Fox</title>") == "page headers (XML)"
    assert region_of("[[fox]]") == region_of("fox]]") == "links [[...]]"
    assert region_of("{{cite}}") == "templates {{...}}"
    assert region_of("The") == region_of("42") == "prose"
    assert region_of("* item") == "lists and headings"
    assert region_of("{| class") == region_of("| cell") == "table rows"
    assert (characters[regions == costs.REGIONS.index("page headers (XML)")] == -1).all()
    names = [costs.CHARACTERS[c] if c >= 0 else None for c in characters]
    i = text.index("jumps")
    assert names[i:i + 6] == ["first letter of a word"] + ["later letters"] * 4 + ["spaces"]
    assert names[text.index("42")] == "digits" and names[text.index("{{")] == "other"


def test_report_tables_add_up():
    md = costs.report(PAGE * 3, mem=12)
    rows = [line.split("|") for line in md.splitlines() if line.startswith("| ")]
    region_rows = [r for r in rows if r[1].strip() in costs.REGIONS]
    assert len(region_rows) == 6 and len([r for r in rows if r[1].strip() in costs.CHARACTERS]) == 5
    assert sum(int(r[2].replace(",", "")) for r in region_rows) == len(PAGE) * 3
    assert sum(float(r[5]) for r in region_rows) == pytest.approx(100, abs=0.5)
