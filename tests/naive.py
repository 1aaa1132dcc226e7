"""Slow, obviously-correct oracles written in plain Python integers.

The Numba kernels in ``lmc_ref`` must agree with these byte for byte.  Nothing
here is clever: unbounded Python ints, lists of bits, one step at a time.
"""

PRECISION = 32
FULL = (1 << PRECISION) - 1
HALF = 1 << (PRECISION - 1)
QUARTER = 1 << (PRECISION - 2)


class NaiveEncoder:
    """Witten–Neal–Cleary arithmetic encoder over Python ints, output as a list of bits."""

    def __init__(self):
        self.low, self.high, self.pending, self.bits = 0, FULL, 0, []

    def _emit(self, bit):
        self.bits.append(bit)
        self.bits.extend([1 - bit] * self.pending)
        self.pending = 0

    def encode_interval(self, c_lo, c_hi, total_bits):
        rng = self.high - self.low + 1
        self.high = self.low + (rng * c_hi) // (1 << total_bits) - 1
        self.low = self.low + (rng * c_lo) // (1 << total_bits)
        assert 0 <= self.low <= self.high <= FULL
        while True:
            if self.high < HALF:
                self._emit(0)
            elif self.low >= HALF:
                self._emit(1)
                self.low -= HALF
                self.high -= HALF
            elif self.low >= QUARTER and self.high < 3 * QUARTER:
                self.pending += 1
                self.low -= QUARTER
                self.high -= QUARTER
            else:
                break
            self.low = 2 * self.low
            self.high = 2 * self.high + 1
        assert self.high - self.low + 1 > QUARTER

    def encode(self, cdf, symbol, total_bits):
        self.encode_interval(int(cdf[symbol]), int(cdf[symbol + 1]), total_bits)

    def encode_bit(self, bit, p1, prob_bits=16):
        split = (1 << prob_bits) - p1
        if bit:
            self.encode_interval(split, 1 << prob_bits, prob_bits)
        else:
            self.encode_interval(0, split, prob_bits)

    def finish(self):
        self.pending += 1
        self._emit(0 if self.low < QUARTER else 1)
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(
            int("".join(map(str, bits[i : i + 8])), 2) for i in range(0, len(bits), 8)
        )


class NaiveDecoder:
    """Decoder for ``NaiveEncoder``: a linear search over the CDF."""

    def __init__(self, data):
        self.bits = [(byte >> (7 - k)) & 1 for byte in data for k in range(8)]
        self.pos = 0
        self.low, self.high, self.value = 0, FULL, 0
        for _ in range(PRECISION):
            self.value = 2 * self.value + self._bit()

    def _bit(self):
        bit = self.bits[self.pos] if self.pos < len(self.bits) else 0
        self.pos += 1
        return bit

    def _target(self, total_bits):
        rng = self.high - self.low + 1
        return ((self.value - self.low + 1) * (1 << total_bits) - 1) // rng

    def _narrow(self, c_lo, c_hi, total_bits):
        rng = self.high - self.low + 1
        self.high = self.low + (rng * c_hi) // (1 << total_bits) - 1
        self.low = self.low + (rng * c_lo) // (1 << total_bits)
        while True:
            if self.high < HALF:
                pass
            elif self.low >= HALF:
                self.low -= HALF
                self.high -= HALF
                self.value -= HALF
            elif self.low >= QUARTER and self.high < 3 * QUARTER:
                self.low -= QUARTER
                self.high -= QUARTER
                self.value -= QUARTER
            else:
                break
            self.low, self.high = 2 * self.low, 2 * self.high + 1
            self.value = 2 * self.value + self._bit()

    def decode(self, cdf, total_bits):
        target = self._target(total_bits)
        symbol = next(s for s in range(len(cdf) - 1) if cdf[s] <= target < cdf[s + 1])
        self._narrow(int(cdf[symbol]), int(cdf[symbol + 1]), total_bits)
        return symbol

    def decode_bit(self, p1, prob_bits=16):
        split = (1 << prob_bits) - p1
        if self._target(prob_bits) >= split:
            self._narrow(split, 1 << prob_bits, prob_bits)
            return 1
        self._narrow(0, split, prob_bits)
        return 0


def _lane_sum(values):
    """Sixteen running sums folded in half, then the leftovers: the summation order of the rule."""
    m = len(values) - len(values) % 16
    lanes = [0.0] * 16
    for i in range(m):
        lanes[i % 16] += values[i]
    while len(lanes) > 1:
        half = len(lanes) // 2
        lanes = [lanes[j] + lanes[j + half] for j in range(half)]
    total = lanes[0]
    for i in range(m, len(values)):
        total += values[i]
    return total


def naive_quantize(pdf, total_bits):
    """The quantization rule of ``lmc_ref.quantize`` restated with Python floats."""
    import math

    n = len(pdf)
    total = 1 << total_bits
    spare = total - n
    usable = [float(p) if (p > 0 and p != math.inf) else 0.0 for p in pdf]
    s = _lane_sum(usable)
    if not (0 < s < math.inf):
        floors = [spare // n] * n
    elif spare / s < math.inf:
        floors = [int(p * (spare / s)) for p in usable]
    else:  # subnormal total
        floors = [int(p / s * spare) for p in usable]
    rem = spare - sum(floors)
    assert 0 <= rem <= n
    freqs = [1 + f for f in floors]
    freqs[-1] += rem  # the last symbol takes what rounding left over
    cdf = [0]
    for f in freqs:
        cdf.append(cdf[-1] + f)
    return cdf
