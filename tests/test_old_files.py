"""Files written before the redesign still decode, and model versions live in the spec.

``tests/fixtures/v7_*.lmc`` were written at commit c4896fd (file format 7),
when specs carried no model version (``cm:mem=22``).  They must decode to the
same bytes today; the fixture text is rebuilt here from its seed.  A spec that
names a model version this code does not implement is refused, naming it.
"""

import hashlib
import random
from pathlib import Path

import pytest

from lmc_ref import container
from lmc_ref.codec import compress, decompress
from lmc_ref.predictors import make_predictor

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE_SHA256 = "53d6ca5f46e20232b835c8b585e9da3d9d1f040004100ba7cd565266b469dc58"


def fixture_text():
    """The original bytes of the fixtures: 6000 seeded random words, then every byte value."""
    rng = random.Random(16)
    words = "the of and to in a is that for it as was with be by on".split()
    return " ".join(rng.choice(words) for _ in range(6000)).encode() + bytes(range(256))


def test_fixture_text_is_what_the_fixtures_coded():
    assert hashlib.sha256(fixture_text()).hexdigest() == FIXTURE_SHA256


@pytest.mark.parametrize("name, spec", [("v7_ngram", "ngram:order=6,mem=20"),
                                        ("v7_ngram_order3", "ngram:order=3,mem=16"),
                                        ("v7_cm", "cm:mem=22"), ("v7_cm_mem16", "cm:mem=16")])
def test_format_7_files_without_a_model_version_decode(name, spec):
    blob = (FIXTURES / f"{name}.lmc").read_bytes()
    header, payload = container.unpack(blob)
    assert header.version == 7 and header.spec == spec  # written before specs carried v=
    assert decompress(blob, progress=False) == fixture_text()


@pytest.mark.parametrize("name, new_spec", [("v7_ngram", "ngram:v=1,order=6,mem=20"),
                                            ("v7_cm_mem16", "cm:v=7,mem=16")])
def test_the_same_model_today_writes_the_same_payload(name, new_spec):
    """Only the spec string in the header changed: the model's bits are the same."""
    old_header, old_payload = container.unpack((FIXTURES / f"{name}.lmc").read_bytes())
    new_header, new_payload = container.unpack(compress(fixture_text(), old_header.spec, progress=False))
    assert new_header.spec == new_spec and new_header.version == old_header.version
    assert new_payload == old_payload


def test_canonical_specs_carry_the_model_version():
    assert make_predictor("cm:mem=12").spec == "cm:v=7,mem=12"
    assert make_predictor("ngram:order=2,mem=10").spec == "ngram:v=1,order=2,mem=10"


@pytest.mark.parametrize("spec, message", [("cm:v=6,mem=12", "cm model version 6 is not implemented"),
                                           ("ngram:v=2", "ngram model version 2 is not implemented"),
                                           ("cm:v=x", "is not an integer")])
def test_an_unknown_model_version_is_refused_naming_it(spec, message):
    with pytest.raises(ValueError, match=message):
        make_predictor(spec)


def test_a_file_with_an_unknown_model_version_is_refused_naming_it():
    blob = compress(b"abc", "ngram:order=2,mem=10", progress=False)
    header, payload = container.unpack(blob)
    forged = container.pack(container.Header(spec="ngram:v=9,order=2,mem=10", backend=header.backend,
                                             length=header.length, crc32=header.crc32), payload)
    with pytest.raises(ValueError, match="ngram model version 9 is not implemented by this lmc_ref"):
        decompress(forged, progress=False)


def test_a_stored_spec_without_version_means_the_format_7_model(monkeypatch):
    """A new spec without ``v=`` means the newest model; a stored one, the model of format-7 files."""
    cls = type(make_predictor("ngram:order=1,mem=10"))
    monkeypatch.setattr(cls, "model_version", 2)  # as if the n-gram model had changed since
    with pytest.raises(ValueError, match="ngram model version 1 is not implemented"):
        make_predictor("ngram:order=1,mem=10", stored=True)
    assert make_predictor("ngram:order=1,mem=10").spec == "ngram:v=2,order=1,mem=10"
