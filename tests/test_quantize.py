"""Property tests of ``lmc_ref.quantize``: the one place where floats become integers."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lmc_ref.constants import CDF_BITS, CDF_TOTAL
from numba import njit

from lmc_ref.quantize import (
    _block_floor_sum,
    _lane_total,
    quantize,
    quantize_interval,
    quantize_into,
    quantize_search,
)
from naive import naive_quantize

SPECIAL = [0.0, -0.0, np.nan, np.inf, -np.inf, -1.0, 5e-324, 1e-310, 1e300, 1.7e308]

alphabet_sizes = st.one_of(st.integers(1, 4), st.integers(1, 300), st.just(256))

# Anything a buggy model could emit: NaN, +-inf, negatives, subnormals, huge values.
wild_pdfs = hnp.arrays(np.float64, alphabet_sizes, elements=st.floats(width=64))
# Model-like output: probabilities in [0, 1], with special values sprinkled in.
realistic_pdfs = hnp.arrays(
    np.float64,
    alphabet_sizes,
    elements=st.one_of(st.floats(0.0, 1.0), st.floats(0.0, 1e-6), st.sampled_from(SPECIAL)),
)
float32_pdfs = hnp.arrays(np.float32, alphabet_sizes, elements=st.floats(width=32))
any_pdf = st.one_of(wild_pdfs, realistic_pdfs, float32_pdfs)
# Valid but unnormalised: positive finite entries (zeros allowed), scaled by a factor.
positive_pdfs = hnp.arrays(
    np.float64, alphabet_sizes, elements=st.one_of(st.just(0.0), st.floats(1e-3, 1.0))
).filter(lambda p: p.sum() > 0)


def freqs(cdf):
    return np.diff(np.asarray(cdf, dtype=np.int64))


def check_invariants(pdf, cdf):
    assert cdf.dtype == np.int64
    assert cdf.shape == (len(pdf) + 1,)
    assert cdf[0] == 0
    assert cdf[-1] == CDF_TOTAL
    assert freqs(cdf).min() >= 1  # every symbol codable, cdf strictly increasing


# ------------------------------------------------------------- invariants ----

@given(any_pdf)
def test_invariants_hold_for_any_input(pdf):
    check_invariants(pdf, quantize(pdf))


@given(any_pdf)
def test_equals_naive_oracle(pdf):
    assert quantize(pdf).tolist() == naive_quantize(pdf.astype(np.float64).tolist(), CDF_BITS)


@given(any_pdf)
def test_deterministic_and_pure(pdf):
    before = pdf.copy()
    first = quantize(pdf)
    assert np.array_equal(quantize(pdf), first)
    assert np.array_equal(quantize(pdf.copy()), first)
    assert np.array_equal(quantize(list(pdf)), first)
    # A strided (non-contiguous) view of the same values gives the same CDF.
    doubled = np.repeat(pdf, 2)
    assert np.array_equal(quantize(doubled[::2]), first)
    # The input is not modified.
    np.testing.assert_array_equal(pdf, before)


@given(any_pdf)
def test_quantize_into_matches_quantize(pdf):
    cdf = np.full(len(pdf) + 1, -7, dtype=np.int64)
    quantize_into(pdf, cdf)  # float32 input is used as is inside njit loops
    assert np.array_equal(cdf, quantize(pdf))


@given(float32_pdfs)
def test_float32_input_equals_float64_of_same_values(pdf):
    assert np.array_equal(quantize(pdf), quantize(pdf.astype(np.float64)))


@given(positive_pdfs, st.floats(1e-200, 1e200))
def test_unnormalised_input_is_proportional(pdf, factor):
    scaled = pdf * factor
    cdf = quantize(scaled)
    check_invariants(scaled, cdf)
    n = len(pdf)
    # Floor rounding, the 1-per-symbol floor and the remainder move each frequency
    # by at most 2n + 1 units away from the exact proportional share.
    exact = pdf / pdf.sum() * CDF_TOTAL
    assert np.all(np.abs(freqs(cdf) - exact) <= 2 * n + 1)


@given(realistic_pdfs)
def test_invalid_entries_get_the_minimum_frequency(pdf):
    valid = np.isfinite(pdf) & (pdf > 0)
    with np.errstate(over="ignore"):  # huge entries may sum to inf: that case is skipped below
        total = float(np.sum(pdf[valid]))  # order does not matter for this check
    if not (0 < total < float("inf") and (CDF_TOTAL - len(pdf)) / total < float("inf")):
        return  # degenerate: uniform, tested below
    f = freqs(quantize(pdf))
    # An unusable entry gets its guaranteed unit only; the last symbol also takes
    # the rounding remainder (at most n units).
    n = len(pdf)
    head = ~valid[:-1]
    assert np.all(f[:-1][head] == 1)
    if not valid[-1]:
        assert 1 <= f[-1] <= 1 + n
    assert f.argmax() in np.flatnonzero(valid) or f.max() <= 1 + n


# ------------------------------------------------------ degenerate inputs ----

def assert_uniform(cdf, n):
    f = freqs(cdf)
    base = 1 + (CDF_TOTAL - n) // n
    extra = (CDF_TOTAL - n) % n  # the rounding remainder: all to the last symbol
    assert np.all(f[:-1] == base)
    assert f[-1] == base + extra


@pytest.mark.parametrize("n", [1, 2, 3, 255, 256, 257])
@pytest.mark.parametrize(
    "fill", [0.0, -0.0, -1.0, np.nan, np.inf, -np.inf, 1e308, 5e-324], ids=repr
)
def test_degenerate_pdf_becomes_uniform(n, fill):
    pdf = np.full(n, fill)
    cdf = quantize(pdf)
    check_invariants(pdf, cdf)
    assert_uniform(cdf, n)
    assert cdf.tolist() == naive_quantize(pdf.tolist(), CDF_BITS)


def test_mixed_garbage_without_mass_is_uniform():
    pdf = np.array([0.0, np.nan, -np.inf, -3.0, np.inf, -0.0])
    assert_uniform(quantize(pdf), len(pdf))


def test_single_symbol_alphabet():
    assert quantize(np.array([0.3])).tolist() == [0, CDF_TOTAL]
    assert quantize(np.array([np.nan])).tolist() == [0, CDF_TOTAL]


def test_two_symbol_alphabet_extremes():
    assert quantize(np.array([1.0, 0.0])).tolist() == [0, CDF_TOTAL - 1, CDF_TOTAL]
    assert quantize(np.array([0.0, 1.0])).tolist() == [0, 1, CDF_TOTAL]
    assert quantize(np.array([0.5, 0.5])).tolist() == [0, CDF_TOTAL // 2, CDF_TOTAL]


def test_one_hot_256():
    for hot in (0, 97, 255):
        pdf = np.zeros(256, dtype=np.float32)
        pdf[hot] = 1.0
        f = freqs(quantize(pdf))
        assert f[hot] == CDF_TOTAL - 255
        assert np.all(np.delete(f, hot) == 1)


def test_remainder_goes_to_the_last_symbol():
    pdf = np.array([0.086, 0.237, 0.801, 0.582, 0.094, 0.433, 0.479])
    n = len(pdf)
    f = freqs(quantize(pdf))
    floors = np.floor(pdf * ((CDF_TOTAL - n) / pdf.sum())).astype(np.int64)
    remainder = CDF_TOTAL - n - floors.sum()
    assert 2 <= remainder <= n
    assert f.tolist() == (1 + floors + (np.arange(n) == n - 1) * remainder).tolist()


@pytest.mark.parametrize("bad", [np.array([]), np.zeros((2, 3)), np.zeros((1, 1)), np.zeros((0, 4))])
def test_rejects_empty_and_non_1d(bad):
    with pytest.raises(ValueError):
        quantize(bad)


# ------------------------------------------------------ quantization cost ----

def relative_cost(pdfs, cdfs):
    """Average KL(p || q) over average entropy H(p), both in bits."""
    kl = ent = 0.0
    for p, cdf in zip(pdfs, cdfs):
        p = p / p.sum()
        q = freqs(cdf) / float(cdf[-1])
        m = p > 0
        kl += float(np.sum(p[m] * np.log2(p[m] / q[m])))
        ent += float(-np.sum(p[m] * np.log2(p[m])))
    return kl / ent


def realistic_family(kind, param, count=100, n=256):
    """Softmax of Gaussian logits (std ``param``) or Dirichlet(``param``) pdfs over n symbols."""
    rng = np.random.default_rng(1234)
    if kind == "softmax":
        z = rng.normal(size=(count, n)) * param
        p = np.exp(z - z.max(axis=1, keepdims=True))
    else:
        p = rng.dirichlet(np.full(n, param), size=count)
    return list(p)


FAMILIES = [("softmax", 1.0), ("softmax", 2.0), ("softmax", 4.0), ("softmax", 8.0),
            ("dirichlet", 0.05), ("dirichlet", 0.1), ("dirichlet", 0.5), ("dirichlet", 1.0)]


@pytest.mark.parametrize("kind,param", FAMILIES)
def test_quantization_cost_below_a_thousandth_of_entropy(kind, param):
    pdfs = realistic_family(kind, param)
    cost = relative_cost(pdfs, [quantize(p) for p in pdfs])
    assert cost < 1e-3, f"KL/H = {cost:.2e} with CDF_BITS={CDF_BITS}"


@pytest.mark.parametrize("kind,param", FAMILIES)
def test_cost_bound_would_reject_10_bit_cdfs(kind, param):
    """The bound above has teeth: the same rule with 2**10 totals fails it on every family
    (2**12 fails it on all but the flattest family)."""
    pdfs = realistic_family(kind, param, count=30)
    cost = relative_cost(pdfs, [np.array(naive_quantize(list(p), 10)) for p in pdfs])
    assert cost > 1e-3


# ----------------------------------------------------------- lazy kernels ----

@given(any_pdf, st.data())
def test_interval_and_search_agree_with_the_full_cdf(pdf, data):
    """The lazy kernels used by fused coding loops give exactly quantize_into's numbers."""
    cdf = np.empty(len(pdf) + 1, dtype=np.int64)
    quantize_into(pdf, cdf)
    symbols = data.draw(st.lists(st.integers(0, len(pdf) - 1), min_size=1, max_size=5))
    for s in symbols + [0, len(pdf) - 1]:
        assert quantize_interval(pdf, s) == (cdf[s], cdf[s + 1])
    targets = data.draw(st.lists(st.integers(0, CDF_TOTAL - 1), min_size=1, max_size=5))
    for s in symbols:  # the edges of each symbol's interval, and random targets
        targets += [int(cdf[s]), int(cdf[s + 1]) - 1]
    for t in targets:
        s = int(np.searchsorted(cdf, t, side="right")) - 1
        assert quantize_search(pdf, t) == (s, cdf[s], cdf[s + 1])


@given(any_pdf, st.data())
def test_strided_pdfs_take_the_scalar_path_to_the_same_numbers(pdf, data):
    """A non-contiguous pdf (a column of a 2-D array) cannot use the vector loads;
    the scalar fallback must give exactly the same CDF, interval and search."""
    grid = np.zeros((len(pdf), 3), dtype=pdf.dtype)
    grid[:, 1] = pdf
    column = grid[:, 1]
    assert not column.flags.c_contiguous or len(pdf) == 1
    cdf = quantize(pdf)
    s = data.draw(st.integers(0, len(pdf) - 1))
    assert quantize_interval(column, s) == (cdf[s], cdf[s + 1])
    t = data.draw(st.integers(0, CDF_TOTAL - 1))
    k = int(np.searchsorted(cdf, t, side="right")) - 1
    assert quantize_search(column, t) == (k, cdf[k], cdf[k + 1])


# ------------------------------------------------- vector kernels vs twins ----

@njit
def _compiled_lane_total(x, clean):
    return _lane_total(x, clean)


@njit
def _compiled_block_floor_sum(x, start, factor):
    return _block_floor_sum(x, start, factor)


@given(any_pdf, st.booleans())
def test_lane_total_matches_its_plain_python_twin(pdf, clean):
    """The 16-wide LLVM vector sum does the rule's additions in the rule's order:
    bit-identical to the plain-Python loop (NaN where it is NaN)."""
    want_total, want_negative = _lane_total(pdf, clean)  # the plain-Python body
    for x in (pdf, np.repeat(pdf, 2)[::2]):  # contiguous (vector path) and strided (scalar path)
        total, negative = _compiled_lane_total(x, clean)
        assert negative == want_negative
        assert total == want_total or (np.isnan(total) and np.isnan(want_total))


@given(hnp.arrays(st.sampled_from([np.float32, np.float64]), st.integers(16, 80),
                  elements=st.floats(0.0, 1.0, width=32)), st.floats(0.0, 2.0**20), st.data())
def test_block_floor_sum_matches_its_plain_python_twin(pdf, factor, data):
    start = data.draw(st.integers(0, len(pdf) - 16))
    want = _block_floor_sum(pdf, start, factor)  # the plain-Python body
    assert _compiled_block_floor_sum(pdf, start, factor) == want
    assert _compiled_block_floor_sum(np.repeat(pdf, 2)[::2], start, factor) == want
