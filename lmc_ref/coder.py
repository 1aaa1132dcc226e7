# --8<-- [start:invariants]
"""Integer arithmetic coding (binary output, 32-bit state), as Numba kernels.

This is the coder of Witten, Neal & Cleary (1987), in the form the paper uses:
base 2, 32 bits of precision, "underflow" (the E3 case, where the interval
straddles the middle) handled by counting *pending* bits, which also removes
the need for carry propagation.

Coder invariants (checked by ``tests/test_coder.py`` against the plain-Python
oracle ``tests/naive.py``)::

    0 <= low <= high < 2**32              the current interval is [low, high]
    after normalisation:  low < HALF <= high  and  not (QUARTER <= low and high < 3*QUARTER)
      => range = high - low + 1 > QUARTER = 2**30
    every symbol interval is non-empty: with total T = 2**CDF_BITS <= 2**24
      and frequency f >= 1, width >= floor(range*f/T) >= 2**30 / 2**24 = 64
    range * cdf <= 2**32 * 2**24 < 2**63     (fits an unsigned 64-bit word)
    pending = number of E3 expansions whose output bit is not known yet; the
      next known bit b is followed by `pending` copies of (1 - b)

Code length: each symbol costs -log2(width / range) bits, and width differs
from range*f/T by less than 1, so the loss per symbol is below
1.44 * alphabet_size / 2**30 bits (about 3e-7 bit for 256 symbols);
termination adds 2 bits and the byte padding at most 7.

The encoder state is a small ``uint64`` array (see the ``E_*`` indices) and the
output is written into a caller-supplied ``uint8`` buffer.  That keeps every
kernel a plain function of arrays, so predictor loops compiled with ``@njit``
can call ``encode_symbol`` / ``decode_symbol`` / ``encode_bit`` /
``decode_bit`` directly and run fused with the coder.  The caller must leave
room in the buffer: counted from ``encoder_init``, a symbol never adds more
than ``CDF_BITS + 2`` bits to the output (a bit never more than
``BIT_PROB_BITS + 2``), so ``max_encoded_bytes(n)`` bounds the whole output of
the first ``n`` symbols, finish included.  Size the buffer by the total count,
not per block: pending E3 bits of earlier symbols are written out later, all
at once.
"""
# --8<-- [end:invariants]

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros  # LLVM's ctlz: 64 for a zero word

from .constants import BIT_PROB_BITS, BIT_PROB_ONE, CDF_BITS, CODER_PRECISION

# --8<-- [start:constants]
FULL = np.uint64((1 << CODER_PRECISION) - 1)  # 0xFFFFFFFF
HALF = np.uint64(1 << (CODER_PRECISION - 1))
QUARTER = np.uint64(1 << (CODER_PRECISION - 2))
THREE_QUARTERS = np.uint64(3 << (CODER_PRECISION - 2))
# --8<-- [end:constants]

# Encoder state layout: one uint64 array of E_SIZE words.
E_LOW, E_HIGH, E_PENDING, E_BITBUF, E_NBITS, E_POS = 0, 1, 2, 3, 4, 5
E_SIZE = 6
# Decoder state layout: one uint64 array of D_SIZE words.
D_LOW, D_HIGH, D_VALUE, D_BITPOS = 0, 1, 2, 3
D_SIZE = 4


def max_encoded_bytes(n_symbols, bits_per_symbol=CDF_BITS + 2):
    """Upper bound on the bytes that ``n_symbols`` coded symbols can add."""
    return (n_symbols * bits_per_symbol + 7) // 8 + 8


def max_stream_bytes(n_symbols, bits_per_symbol=CDF_BITS + 2):
    """Upper bound on a whole stream of ``n_symbols`` symbols from a fresh encoder, flush included."""
    return max_encoded_bytes(n_symbols, bits_per_symbol) + max_encoded_bytes(0)


# ---------------------------------------------------------------- encoder ----

@njit(cache=True, inline="always")
def _put_bits(out, pos, buf, nbits, value, count):
    """Append the low ``count`` (<= 32) bits of ``value``, most significant first.

    ``buf`` holds the ``nbits`` (< 8) bits not yet written as a whole byte;
    ``pos`` is the next byte of ``out``.  They travel as local variables, so
    the hot loop keeps them in registers.
    """
    buf = (buf << count) | value
    nbits += count
    while nbits >= 8:
        nbits -= 8
        out[pos] = (buf >> nbits) & 0xFF
        pos += 1
    buf &= (1 << nbits) - 1
    return pos, buf, nbits


# --8<-- [start:pending]
@njit(cache=True, inline="always")
def _put_bit_plus_pending(out, pos, buf, nbits, pending, bit):
    """Emit a known bit, then the ``pending`` opposite bits owed by E3 expansions."""
    pos, buf, nbits = _put_bits(out, pos, buf, nbits, bit, 1)
    opposite = 0 if bit else 0xFFFFFFFF
    while pending > 0:
        count = min(pending, 32)
        pos, buf, nbits = _put_bits(out, pos, buf, nbits, opposite >> (32 - count), count)
        pending -= count
    return pos, buf, nbits
# --8<-- [end:pending]


@njit(cache=True)
def encoder_init():
    """A fresh encoder state: the interval is the whole 32-bit range."""
    st = np.zeros(E_SIZE, dtype=np.uint64)
    st[E_HIGH] = FULL
    return st


# --8<-- [start:renormalise]
@njit(cache=True, inline="always")
def _leading_agreed_bits(low, high):
    """How many E1/E2 steps apply: the number of leading bits where low and high agree
    (one count-leading-zeros instruction, instead of a loop with a hard-to-predict exit)."""
    return np.int64(leading_zeros(low ^ high)) - (64 - CODER_PRECISION)


@njit(cache=True, inline="always")
def _underflow_bits(low, high, n):
    """How many E3 steps follow ``n`` E1/E2 steps: after the shift, low reads 0 1 1 1...
    and high reads 1 0 0 0... for that many bits below the top one.

    Counted on the unshifted words: the bits from position ``30 - n`` down where
    low has a 1 and high a 0.  ``stops`` marks every position where that fails;
    its leading zeros below position ``31 - n`` are the run.
    """
    below = (np.uint64(1) << np.uint64(CODER_PRECISION - 1 - n)) - np.uint64(1)
    stops = (~low | high) & below
    return np.int64(leading_zeros(stops)) - (64 - CODER_PRECISION + 1 + n)


@njit(cache=True, inline="always")
def _shift_out(low, high, n):
    """n E1/E2 doublings at once: drop the n agreed leading bits (high shifts in ones)."""
    ones = (np.uint64(1) << np.uint64(n)) - np.uint64(1)
    return (low << np.uint64(n)) & FULL, ((high << np.uint64(n)) & FULL) | ones


@njit(cache=True, inline="always")
def _expand_middle(low, high, m):
    """m E3 doublings at once: keep the top bit, drop the m bits below it."""
    ones = (np.uint64(1) << np.uint64(m)) - np.uint64(1)
    low = (low << np.uint64(m)) & (HALF - np.uint64(1))
    high = ((high << np.uint64(m)) & (HALF - np.uint64(1))) | HALF | ones
    return low, high
# --8<-- [end:renormalise]


# --8<-- [start:encode_interval]
@njit(cache=True, inline="always")
def narrow(low, high, c_lo, c_hi, total_bits):
    """The interval [low, high] narrowed to the part [c_lo, c_hi) of a total of 2**total_bits.

    The one step of coding, shared by the encoder and the decoder so that both
    compute the same interval from the same numbers.
    """
    rng = high - low + np.uint64(1)
    return (low + ((rng * np.uint64(c_lo)) >> np.uint64(total_bits)),
            low + ((rng * np.uint64(c_hi)) >> np.uint64(total_bits)) - np.uint64(1))


@njit(cache=True, inline="always")
def _encode_interval(st, out, c_lo, c_hi, total_bits):
    """Narrow [low, high] to the sub-interval [c_lo, c_hi) of a total of 2**total_bits."""
    low, high = narrow(st[E_LOW], st[E_HIGH], c_lo, c_hi, total_bits)
    # Renormalise.  E1/E2: the n leading bits on which low and high agree are
    # decided; shift them out (the first one followed by the pending bits).
    n = _leading_agreed_bits(low, high)
    # E3: then m more doublings around the middle, while low = 01... and high = 10...
    m = _underflow_bits(low, high, n)
    if n == 0 and m == 0:  # common case: the interval is still wide, nothing to do
        st[E_LOW] = low
        st[E_HIGH] = high
        return
    pending = np.int64(st[E_PENDING])
    pos, buf, nbits = np.int64(st[E_POS]), np.int64(st[E_BITBUF]), np.int64(st[E_NBITS])
    if n > 0:
        pos, buf, nbits = _put_bit_plus_pending(out, pos, buf, nbits, pending, np.int64(low >> np.uint64(31)))
        pending = 0
        rest = np.int64(low >> np.uint64(32 - n)) & ((1 << (n - 1)) - 1)  # the other n - 1 agreed bits
        pos, buf, nbits = _put_bits(out, pos, buf, nbits, rest, n - 1)
        low, high = _shift_out(low, high, n)
    if m > 0:
        pending += m  # their bits are decided later, as the opposite of the next known bit
        low, high = _expand_middle(low, high, m)
    st[E_LOW] = low
    st[E_HIGH] = high
    st[E_PENDING] = pending
    st[E_POS] = pos
    st[E_BITBUF] = buf
    st[E_NBITS] = nbits
# --8<-- [end:encode_interval]


@njit(cache=True, inline="always")
def encode_symbol(st, out, cdf, symbol):
    """Encode ``symbol`` with the integer CDF ``cdf`` (total ``2**CDF_BITS``)."""
    _encode_interval(st, out, cdf[symbol], cdf[symbol + 1], CDF_BITS)


@njit(cache=True, inline="always")
def encode_interval(st, out, lo, hi):
    """Encode a symbol given only its bounds ``cdf[s], cdf[s+1]`` (see ``quantize_interval``)."""
    _encode_interval(st, out, lo, hi, CDF_BITS)


# --8<-- [start:encode_bit]
@njit(cache=True, inline="always")
def encode_bit(st, out, bit, p1):
    """Encode one ``bit`` given P(bit = 1) = p1 / 2**BIT_PROB_BITS, 0 < p1 < 2**16.

    The interval is split as a two-symbol CDF: 0 -> [0, 2**16 - p1), 1 -> [2**16 - p1, 2**16).
    """
    split = BIT_PROB_ONE - p1
    if bit:
        _encode_interval(st, out, split, BIT_PROB_ONE, BIT_PROB_BITS)
    else:
        _encode_interval(st, out, 0, split, BIT_PROB_BITS)
# --8<-- [end:encode_bit]


# --8<-- [start:finish]
@njit(cache=True)
def encoder_finish(st, out):
    """Flush: two more bits select a point inside the final interval; pad the byte with zeros.

    Returns the number of bytes written.
    """
    pending = np.int64(st[E_PENDING]) + 1
    pos, buf, nbits = np.int64(st[E_POS]), np.int64(st[E_BITBUF]), np.int64(st[E_NBITS])
    bit = 0 if st[E_LOW] < QUARTER else 1
    pos, buf, nbits = _put_bit_plus_pending(out, pos, buf, nbits, pending, bit)
    pos, buf, nbits = _put_bits(out, pos, buf, nbits, 0, (8 - nbits) % 8)
    st[E_PENDING] = 0
    st[E_POS] = pos
    st[E_BITBUF] = buf
    st[E_NBITS] = nbits
    return pos
# --8<-- [end:finish]


# ---------------------------------------------------------------- decoder ----

@njit(cache=True, inline="always")
def _get_bits(data, pos, count):
    """``count`` (<= 32) input bits starting at bit ``pos``, as an integer, most
    significant first; reading past the end gives zeros (the encoder's padding)."""
    index = pos >> 3
    if index + 8 <= data.shape[0]:  # usual case: one 64-bit big-endian window holds them all
        word = np.uint64(0)
        for k in range(8):
            word = (word << np.uint64(8)) | np.uint64(data[index + k])
        return (word << np.uint64(pos & 7)) >> np.uint64(64 - count) if count > 0 else np.uint64(0)
    value = np.uint64(0)
    while count > 0:  # near the end: byte by byte
        index = pos >> 3
        byte = np.uint64(data[index]) if index < data.shape[0] else np.uint64(0)
        take = min(8 - (pos & 7), count)
        chunk = (byte >> np.uint64(8 - (pos & 7) - take)) & np.uint64((1 << take) - 1)
        value = (value << np.uint64(take)) | chunk
        pos += take
        count -= take
    return value


@njit(cache=True)
def decoder_init(data):
    """A decoder state positioned at the start of ``data`` (a uint8 array)."""
    st = np.zeros(D_SIZE, dtype=np.uint64)
    st[D_HIGH] = FULL
    st[D_VALUE] = _get_bits(data, 0, CODER_PRECISION)
    st[D_BITPOS] = CODER_PRECISION
    return st


# --8<-- [start:decode_target]
@njit(cache=True, inline="always")
def _decode_target(st, total_bits):
    """The cumulative count c with cdf[s] <= c < cdf[s+1] for the coded symbol s."""
    rng = st[D_HIGH] - st[D_LOW] + np.uint64(1)
    offset = st[D_VALUE] - st[D_LOW]
    return (((offset + np.uint64(1)) << np.uint64(total_bits)) - np.uint64(1)) // rng
# --8<-- [end:decode_target]


# --8<-- [start:decode_interval]
@njit(cache=True, inline="always")
def _decode_interval(st, data, c_lo, c_hi, total_bits):
    """Mirror of ``_encode_interval``: same arithmetic, bits read instead of written."""
    low, high = narrow(st[D_LOW], st[D_HIGH], c_lo, c_hi, total_bits)
    n = _leading_agreed_bits(low, high)
    m = _underflow_bits(low, high, n)
    if n > 0 or m > 0:
        value = st[D_VALUE]
        pos = np.int64(st[D_BITPOS])
        if n > 0:  # value shares the n agreed bits: shift them out, read n new ones
            low, high = _shift_out(low, high, n)
            value = ((value << np.uint64(n)) & FULL) | _get_bits(data, pos, n)
            pos += n
        if m > 0:  # value reads 01... or 10... like low and high: keep its top bit, drop m below
            low, high = _expand_middle(low, high, m)
            value = (value & HALF) | ((value << np.uint64(m)) & (HALF - np.uint64(1))) | _get_bits(data, pos, m)
            pos += m
        st[D_VALUE] = value
        st[D_BITPOS] = pos
    st[D_LOW] = low
    st[D_HIGH] = high
# --8<-- [end:decode_interval]


# --8<-- [start:decode_symbol]
@njit(cache=True, inline="always")
def decode_symbol(st, data, cdf):
    """Decode one symbol coded with the integer CDF ``cdf``.

    Binary search for the symbol whose interval holds the target.  Whatever the
    input bytes, ``low <= value <= high`` holds (value is shifted exactly like
    the interval), so the target lies in [0, 2**CDF_BITS): corrupt input decodes
    to wrong symbols, never to an out-of-range index or an endless loop.
    """
    target = _decode_target(st, CDF_BITS)
    n = cdf.shape[0] - 1
    lo = 0
    hi = n  # invariant: cdf[lo] <= target < cdf[hi]
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if np.uint64(cdf[mid]) <= target:
            lo = mid
        else:
            hi = mid
    _decode_interval(st, data, cdf[lo], cdf[lo + 1], CDF_BITS)
    return lo
# --8<-- [end:decode_symbol]


@njit(cache=True, inline="always")
def decoder_target(st):
    """The cumulative count that identifies the next symbol (for ``quantize_search``)."""
    return np.int64(_decode_target(st, CDF_BITS))


@njit(cache=True, inline="always")
def decode_interval(st, data, lo, hi):
    """Consume the symbol whose bounds ``lo <= decoder_target(st) < hi`` were found."""
    _decode_interval(st, data, lo, hi, CDF_BITS)


@njit(cache=True, inline="always")
def decode_bit(st, data, p1):
    """Decode one bit coded by ``encode_bit`` with the same ``p1``."""
    split = BIT_PROB_ONE - p1
    target = _decode_target(st, BIT_PROB_BITS)
    if target >= np.uint64(split):
        _decode_interval(st, data, split, BIT_PROB_ONE, BIT_PROB_BITS)
        return 1
    _decode_interval(st, data, 0, split, BIT_PROB_BITS)
    return 0


# --------------------------------------------------------- Python API -------

class ArithmeticEncoder:
    """Thin Python wrapper over the kernels, for readable (slow) predictor loops.

    Example:
        >>> enc = ArithmeticEncoder()
        >>> enc.encode(np.array([0, 1 << 23, 1 << 24]), 1)
        >>> payload = enc.finish()
    """

    def __init__(self, capacity=4096):
        self._st = encoder_init()
        self._out = np.zeros(capacity, dtype=np.uint8)

    def _reserve(self, nbytes):
        # Pending E3 bits are written out together with the next known bit, so
        # they need room too (a long run of them can be arbitrarily long).
        need = int(self._st[E_POS]) + nbytes + (int(self._st[E_PENDING]) + 7) // 8
        if need > self._out.shape[0]:
            grown = np.zeros(max(need, 2 * self._out.shape[0]), dtype=np.uint8)
            grown[: self._out.shape[0]] = self._out
            self._out = grown

    def encode(self, cdf, symbol):
        """Encode ``symbol`` with integer CDF ``cdf`` (from ``quantize``)."""
        cdf = np.asarray(cdf, dtype=np.int64)
        if not 0 <= symbol < cdf.shape[0] - 1:
            raise ValueError(f"symbol {symbol} outside alphabet of {cdf.shape[0] - 1}")
        self._reserve(max_encoded_bytes(1))
        encode_symbol(self._st, self._out, cdf, symbol)

    def encode_bit(self, bit, p1):
        """Encode a bit with P(1) = p1 / 2**16."""
        if not 0 < p1 < BIT_PROB_ONE:
            raise ValueError(f"p1={p1} must be in (0, {BIT_PROB_ONE})")
        self._reserve(max_encoded_bytes(1, BIT_PROB_BITS + 2))
        encode_bit(self._st, self._out, int(bit), p1)

    def finish(self):
        """Flush the coder and return the payload bytes."""
        self._reserve(max_encoded_bytes(0))
        n = encoder_finish(self._st, self._out)
        return self._out[:n].tobytes()


class ArithmeticDecoder:
    """Decoder matching ``ArithmeticEncoder``; reads zeros past the end of ``data``."""

    def __init__(self, data):
        self._data = np.frombuffer(bytes(data), dtype=np.uint8)
        self._st = decoder_init(self._data)

    def decode(self, cdf):
        """Decode one symbol with integer CDF ``cdf``."""
        return int(decode_symbol(self._st, self._data, np.asarray(cdf, dtype=np.int64)))

    def decode_bit(self, p1):
        """Decode one bit with P(1) = p1 / 2**16."""
        if not 0 < p1 < BIT_PROB_ONE:
            raise ValueError(f"p1={p1} must be in (0, {BIT_PROB_ONE})")
        return int(decode_bit(self._st, self._data, p1))
