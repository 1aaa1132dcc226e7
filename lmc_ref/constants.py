"""Numeric constants shared by every part of the coding loop.

Each constant says *why* it has its value: these numbers are part of the file
format, so changing one changes the bytes every compressor emits.
"""

# The paper codes every modality in independent 2048-byte chunks, so that a
# language model's context window (2048 tokens) covers a whole chunk.
CHUNK_SIZE = 2048

# The paper's arithmetic coder works in base 2 with 32 bits of precision.  Our
# coder keeps `low` and `high` as 32-bit integers inside 64-bit machine words, so
# that `range * cumulative_frequency` (32 + CDF_BITS bits) never overflows.
CODER_PRECISION = 32

# Total of every quantized CDF is 2**CDF_BITS.  Chosen by measurement
# (`python bench/quantization.py`, 256 symbols each given a frequency of at
# least 1, 200,000 symbols per family): for a confident model (softmax of
# N(0, 8**2) logits, 1.07 bit/symbol, the regime of the paper's language models)
# 2**16 costs 0.49 % over the float model's ideal length, 2**20 0.030 % and
# 2**24 0.0018 %; for order-2/3 models of enwik8 text (3.2-3.8 bit/byte) the
# realised difference at 2**24 is within 0.0008 % either way.  24 bits is the
# largest value for which every symbol interval is still at least
# 2**30 / 2**24 = 64 units of the coder's range, which keeps the coder's own
# rounding loss below 1e-6 bit/symbol on average (see the invariants in coder.py).
CDF_BITS = 24
CDF_TOTAL = 1 << CDF_BITS

# Binary interface (bitwise context mixing): the probability that the next bit
# is 1 is a 16-bit fixed-point integer in [1, 2**16 - 1].  Both outcomes keep a
# non-zero interval, so no bit can ever be "impossible".
BIT_PROB_BITS = 16
BIT_PROB_ONE = 1 << BIT_PROB_BITS
