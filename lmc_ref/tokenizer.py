"""Byte-level BPE: the tokenizer of the paper's tokenization experiment.

Byte-pair encoding starts from the 256 byte values and repeatedly replaces the
most frequent adjacent pair of tokens by a new token, until the vocabulary has
the requested size.  A token stream is shorter than the byte stream, so a model
with a fixed context sees more text; whether that helps *compression* (the
rate is always measured against the original bytes) is the paper's question.

Lossless by construction: every byte is a token, and each merged token
expands to a fixed byte string, so ``decode(encode(x)) == x`` for any bytes.

Training is a Numba loop over a compacted token array with incrementally
maintained pair counts and a lazy max-heap, so a 5K vocabulary on 1 MB takes
seconds.  Ties between equally frequent pairs go to the smaller pair
``(left, right)``, so training is deterministic.
"""

import heapq

import numpy as np
from numba import njit, types
from numba.typed import Dict

BYTES = 256


# --8<-- [start:merge_pass]
@njit(cache=True)
def _merge_pass(tokens, n, a, b, new, counts, heap, base):
    """Replace every non-overlapping (a, b) in tokens[:n] by ``new``, left to right.

    Keeps ``counts`` (pair key -> occurrences) exact: each merge removes the
    pairs it breaks (left neighbour with ``a``, ``b`` with the right neighbour)
    and adds the pairs it creates, pushing the new counts on the heap.
    Returns the new length.
    """
    out = 0
    i = 0
    while i < n:
        if i + 1 < n and tokens[i] == a and tokens[i + 1] == b:
            if out > 0:
                left = tokens[out - 1]
                _bump(counts, heap, left * base + a, -1)
                _bump(counts, heap, left * base + new, 1)
            if i + 2 < n:
                right = tokens[i + 2]
                _bump(counts, heap, b * base + right, -1)
                _bump(counts, heap, new * base + right, 1)
            tokens[out] = new
            i += 2
        else:
            tokens[out] = tokens[i]
            i += 1
        out += 1
    counts[a * base + b] = 0
    return out
# --8<-- [end:merge_pass]


@njit(cache=True, inline="always")
def _bump(counts, heap, key, delta):
    c = counts.get(key, 0) + delta
    counts[key] = c
    if delta > 0 and c > 0:
        heapq.heappush(heap, (-c, key))


@njit(cache=True)
def _train(tokens, n_merges, base):
    counts = Dict.empty(key_type=types.int64, value_type=types.int64)
    n = tokens.shape[0]
    for i in range(n - 1):
        key = tokens[i] * base + tokens[i + 1]
        counts[key] = counts.get(key, 0) + 1
    heap = [(-c, k) for k, c in counts.items()]
    heapq.heapify(heap)
    merges = np.zeros((n_merges, 2), dtype=np.int64)
    done = 0
    while done < n_merges and len(heap) > 0:
        neg, key = heapq.heappop(heap)
        if counts.get(key, 0) != -neg or -neg < 2:
            continue  # stale entry (or nothing worth merging)
        a, b = key // base, key % base
        merges[done, 0] = a
        merges[done, 1] = b
        n = _merge_pass(tokens, n, a, b, BYTES + done, counts, heap, base)
        done += 1
    return merges[:done]


@njit(cache=True)
def _apply(tokens, merges, base):
    """Apply the merges in training order (encoding new data the way training did)."""
    counts = Dict.empty(key_type=types.int64, value_type=types.int64)
    heap = [(np.int64(0), np.int64(0))]
    heap.pop()
    n = tokens.shape[0]
    for m in range(merges.shape[0]):
        n = _merge_pass(tokens, n, merges[m, 0], merges[m, 1], BYTES + m, counts, heap, base)
        heap.clear()
    return n


class BPETokenizer:
    """Byte-level BPE with ``256 + len(merges)`` tokens."""

    def __init__(self, merges):
        merges = np.asarray(merges, dtype=np.int64).reshape(-1, 2)  # [k, 2]
        k = merges.shape[0]
        if k and (merges.min() < 0 or np.any(merges.max(axis=1) >= BYTES + np.arange(k))):
            raise ValueError("a merge refers to a token that does not exist yet")
        self.merges = merges
        self._pieces = [bytes([i]) for i in range(BYTES)]
        for a, b in merges:
            self._pieces.append(self._pieces[a] + self._pieces[b])

    @property
    def vocab_size(self):
        return BYTES + self.merges.shape[0]

    @classmethod
    def train(cls, data, vocab_size):
        """Learn ``vocab_size - 256`` merges from ``data`` (fewer if pairs run out)."""
        if vocab_size < BYTES:
            raise ValueError(f"vocab_size must be at least {BYTES}")
        tokens = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
        return cls(_train(tokens, vocab_size - BYTES, np.int64(vocab_size)))

    def encode(self, data):
        """Token ids (int64 array) of ``data``."""
        tokens = np.frombuffer(bytes(data), dtype=np.uint8).astype(np.int64)
        n = _apply(tokens, self.merges, np.int64(max(self.vocab_size, BYTES + 1)))
        return tokens[:n].copy()

    def decode(self, tokens):
        """The bytes that ``tokens`` stand for."""
        pieces = self._pieces
        try:
            return b"".join(pieces[int(t)] for t in tokens)
        except IndexError:
            raise ValueError(f"token id outside the vocabulary of {self.vocab_size}") from None

    def save(self, path):
        np.savez(path, merges=self.merges)

    @classmethod
    def load(cls, path):
        with np.load(path, allow_pickle=False) as f:
            return cls(f["merges"])
