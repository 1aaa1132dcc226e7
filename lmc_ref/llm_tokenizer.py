"""A pretrained model's byte-level BPE over ANY bytes: symbols, byte mappings, an escape.

A pretrained language model such as SmolLM2-135M reads *tokens* of a GPT-2-style
byte-level BPE (Radford et al. 2019): text is UTF-8 encoded, each byte becomes one
character of a 256-character alphabet (:func:`byte_to_unicode`), a pre-tokenizer
cuts the text into words, and within each word adjacent tokens are merged by the
rank of their pair in the merge list.  To compress arbitrary data (image patches,
audio, random bytes) with such a model, the data must become a sequence the
model can score **and** the sequence must give back every byte.  Two obstacles:

* Some bytes have no token at all.  SmolLM2's vocabulary has no single-byte
  token for 21 byte values (4, 6, 19, 20, 22, 29, 192, 193, 241-255).  Hugging
  Face ``tokenizers`` silently drops such characters, so it must never stand on
  the coding path.  Here a byte without a token becomes an *escaped byte*.
* Data is not text.  How its bytes are read as characters (the *byte mapping*)
  decides what the pre-tokenizer and the merges see, hence how well the model
  predicts it.  :data:`MAPPINGS` holds several, each a bijection.

The symbol convention shared with the coder (``lmc_ref.transformer.llama_cpu``):

* a symbol ``s < V`` (``V`` = vocabulary size) is the token ``s``;
* a symbol ``V + b`` (``0 <= b < 256``) is the escaped byte ``b``: the coder codes
  it as :attr:`ByteLevelBPE.escape_token` under the model, then ``b`` under a
  uniform 8-bit code.  ``b`` is a byte of the mapping's *stream* (the bytes the
  tokens spell, see below), which for every mapping here equals the data byte.

Every mapping turns ``data`` into a *stream* of bytes cut into *words*; the BPE
merges within each word; :meth:`ByteLevelBPE.decode` concatenates the symbols'
bytes back into the stream, inverts the mapping, and re-encodes the result to
check that the symbols are exactly what :meth:`~ByteLevelBPE.encode` would have
produced, so any corrupted or foreign symbol sequence fails with one
``ValueError`` instead of decoding to something else.

The merge loop is a Numba kernel over the whole stream (a linked list of symbols
and a binary heap of candidate pairs per word, lowest rank first and leftmost on
ties, exactly as Hugging Face's ``Word.merge_all`` and llama.cpp's
``llm_tokenizer_bpe``), so a word of ``n`` bytes costs ``O(n log n)``: long
words of binary data are as cheap as short words of text, and no word cache is
needed.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np
import regex
from numba import njit

BYTES = 256
#: GGUF ``tokenizer.ggml.token_type`` of an ordinary token (llama.cpp's LLAMA_TOKEN_TYPE_NORMAL);
#: every other type (control, user-defined, unused, byte) is never produced by the merges.
NORMAL = 1


def byte_to_unicode():
    """GPT-2's byte -> character table: printable Latin-1 stays, the other 68 bytes move to U+0100...

    It exists so that every byte is a visible, non-space character in the
    vocabulary file; e.g. the space byte is ``Ġ`` (U+0120).
    """
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table, extra = {}, 0
    for b in range(BYTES):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(BYTES + extra)
            extra += 1
    return table


# ----------------------------------------------------------------- pre-tokenizers
#
# GPT-2's pattern (HF's ByteLevel pre-tokenizer, llama.cpp):
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# SmolLM2 (HF: Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)];
# llama.cpp: "\p{N}" then GPT-2's pattern) first isolates every digit, then
# applies GPT-2's pattern to each piece between digits.  One pattern does both:
# put "\p{N}" first, drop " ?\p{N}+" (no piece holds a digit), and let a digit
# end a whitespace run as the end of its piece would: "(?!\S)" becomes
# "(?![^\s\p{N}])" ("a  1" -> "a", "  ", "1", not "a", " ", " ", "1").
# The utf8 mapping breaks the text the same way at invalid bytes (the lone
# surrogates U+DC80-U+DCFF of Python's "surrogateescape"): each is a word of its
# own and no other word reaches across it.  tests/test_llm_tokenizer.py checks
# these patterns against the piecewise definitions and against Hugging Face.
ESCAPED = r"\udc80-\udcff"


def _pattern(digits, escapes):
    """The one-pass pattern of GPT-2's pre-tokenizer, with digits and/or escapes as piece breaks."""
    breaks = (r"\p{N}" if digits else "") + (ESCAPED if escapes else "")
    alternatives = ([r"\p{N}"] if digits else []) + ([f"[{ESCAPED}]"] if escapes else [])
    alternatives += ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", r" ?\p{L}+"]
    alternatives += [] if digits else [r" ?\p{N}+"]
    alternatives += [rf" ?[^\s\p{{L}}\p{{N}}{breaks}]+", rf"\s+(?![^\s{breaks}])", r"\s+"]
    return regex.compile("|".join(alternatives))


#: Pre-tokenizer name (GGUF ``tokenizer.ggml.pre``) -> (pattern for text, pattern for text with
#: escaped bytes as lone surrogates).  The matches of either tile the text.
PRETOKENIZERS = {name: (_pattern(digits, False), _pattern(digits, True))
                 for name, digits in (("gpt2", False), ("smollm", True))}


def _utf8_widths(text):
    """Stream bytes of each character of ``text``: its UTF-8 length, 1 for an escaped byte.  ``[len(text)]``."""
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    widths = 1 + (cp >= 0x80).astype(np.int64) + (cp >= 0x800) + (cp >= 0x10000)
    widths[(cp >= 0xDC80) & (cp <= 0xDCFF)] = 1
    return widths


def _words(text, pattern):
    """Stream byte offsets where each pre-token of ``text`` ends, and the per-character ends."""
    lengths = np.fromiter(map(len, pattern.findall(text)), np.int64)
    char_ends = np.cumsum(lengths)
    if char_ends.size and char_ends[-1] != len(text) or not char_ends.size and text:
        raise AssertionError("pre-tokenizer matches do not tile the text")
    byte_ends = np.cumsum(_utf8_widths(text))
    return byte_ends[char_ends - 1], byte_ends


# --------------------------------------------------------------------- BPE kernel

@njit(cache=True, inline="always")
def _slot(key, mask):
    """Start slot of ``key``: Fibonacci hashing (the product's high 32 bits), cut to the table size."""
    return np.int64((np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask


@njit(cache=True)
def _build_table(lefts, rights, n_tokens, bits):
    """Open-addressing hash table (pair key ``a * V + b`` -> rank) of the merges; -1 = empty.

    Returns ``(keys, ranks, duplicate)``: ``duplicate`` is the first rank whose
    pair already appeared, or -1.
    """
    mask = (1 << bits) - 1
    keys = np.full(1 << bits, -1, np.int64)
    ranks = np.full(1 << bits, -1, np.int64)
    for r in range(lefts.size):
        key = lefts[r] * n_tokens + rights[r]
        h = _slot(key, mask)
        while keys[h] != -1 and keys[h] != key:
            h = (h + 1) & mask
        if keys[h] == key:
            return keys, ranks, r
        keys[h] = key
        ranks[h] = r
    return keys, ranks, -1


@njit(cache=True, inline="always")
def _rank(keys, ranks, mask, n_tokens, a, b):
    """Rank of the merge of tokens ``(a, b)``, or -1 (also for escaped bytes, ``>= n_tokens``)."""
    if a >= n_tokens or b >= n_tokens:
        return -1
    key = a * n_tokens + b
    h = _slot(key, mask)
    while keys[h] != -1:
        if keys[h] == key:
            return ranks[h]
        h = (h + 1) & mask
    return -1


@njit(cache=True, inline="always")
def _push(heap, size, item):
    i = size
    heap[i] = item
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= item:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = item
    return size + 1


@njit(cache=True, inline="always")
def _pop(heap, size):
    """Remove the smallest item (``heap[0]``, read it first); returns the new size."""
    size -= 1
    item = heap[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= item:
            break
        heap[i] = heap[child]
        i = child
    if size > 0:
        heap[i] = item
    return size


# --8<-- [start:merge_words]
@njit(cache=True)
def _merge_words(init, ends, keys, ranks, results, mask, n_tokens):
    """Byte-level BPE of every word: ``init`` (one symbol per stream byte) -> the merged symbols.

    Word ``w`` is ``init[ends[w-1]:ends[w]]``.  Within a word the symbols form a
    linked list; a heap holds ``rank << 32 | position`` of every adjacent pair
    that has a merge, so the lowest rank comes out first and, on equal ranks,
    the leftmost.  A popped entry is stale (skipped) when its left symbol was
    absorbed or its pair no longer merges into the same token.  Escaped bytes
    (``>= n_tokens``) never merge.
    """
    n = init.size
    sym = init.copy()  # -1 marks a symbol absorbed by its left neighbour
    nxt = np.empty(n, np.int64)
    prv = np.empty(n, np.int64)
    heap = np.empty(3 * n + 1, np.int64)  # a word of L symbols pushes <= (L-1) + 2(L-1) entries
    out = np.empty(n, np.int32)
    n_out = 0
    start = 0
    for w in range(ends.size):
        end = ends[w]
        size = 0
        for i in range(start, end):
            prv[i] = i - 1
            nxt[i] = i + 1
            if i + 1 < end:
                r = _rank(keys, ranks, mask, n_tokens, sym[i], sym[i + 1])
                if r >= 0:
                    size = _push(heap, size, (r << 32) | i)
        prv[start] = -1
        nxt[end - 1] = -1
        while size > 0:
            top = heap[0]
            size = _pop(heap, size)
            r = top >> 32
            i = top & 0xFFFFFFFF
            j = nxt[i]
            if sym[i] < 0 or j < 0:
                continue
            now = _rank(keys, ranks, mask, n_tokens, sym[i], sym[j])
            if now < 0 or results[now] != results[r]:
                continue
            sym[i] = results[r]
            sym[j] = -1
            k = nxt[j]
            nxt[i] = k
            if k >= 0:
                prv[k] = i
                rk = _rank(keys, ranks, mask, n_tokens, sym[i], sym[k])
                if rk >= 0:
                    size = _push(heap, size, (rk << 32) | i)
            p = prv[i]
            if p >= 0:
                rp = _rank(keys, ranks, mask, n_tokens, sym[p], sym[i])
                if rp >= 0:
                    size = _push(heap, size, (rp << 32) | p)
        i = start
        while i >= 0:
            out[n_out] = sym[i]
            n_out += 1
            i = nxt[i]
        start = end
    return out[:n_out]
# --8<-- [end:merge_words]


# ------------------------------------------------------------------ byte mappings

@dataclass(frozen=True)
class ByteMapping:
    """How data bytes become the stream the tokens spell, and back.

    ``split(data, pre)`` (``pre`` a key of :data:`PRETOKENIZERS`) returns
    ``(stream, ends, forced)``: the stream (bytes), the end offset of each word
    in it (int64, increasing, the last is ``len(stream)``), and positions of
    stream bytes that must be escaped even if they have a token (int64 array or
    None).  ``join(stream)`` inverts it on its
    image and raises ``ValueError`` on streams no data maps to.  ``chars`` says
    that each data byte is one UTF-8 character of the stream (otherwise one
    stream byte), which is how :meth:`ByteLevelBPE.end_detector` counts.
    """

    name: str
    summary: str
    split: Callable
    join: Callable
    chars: bool


def _charmap(translate=None):
    """A mapping that reads each byte as one character: ``chr(b)``, or ``translate[b]`` (a char >= U+0100)."""
    forward = dict(translate or {})
    if len(set(forward.values())) != len(forward) or any(ord(c) < BYTES for c in forward.values()):
        raise AssertionError("a character mapping must send bytes to distinct characters >= U+0100")
    back = {ord(c): b for b, c in forward.items()}

    def split(data, pre):
        text = bytes(data).decode("latin-1")
        if forward:
            text = text.translate(forward)
        ends, _ = _words(text, PRETOKENIZERS[pre][0])
        return text.encode("utf-8"), ends, None

    def join(stream):
        try:
            text = stream.decode("utf-8")
            return (text.translate(back) if back else text).encode("latin-1")
        except UnicodeError as err:
            raise ValueError(f"symbols do not spell a valid stream for this mapping ({err.reason})") from None

    return split, join


def _split_raw(data, pre):
    data = bytes(data)
    return data, np.array([len(data)] if data else [], np.int64), None


def _split_utf8(data, pre):
    data = bytes(data)
    text = data.decode("utf-8", "surrogateescape")  # each invalid byte b -> U+DC00 + b
    ends, char_ends = _words(text, PRETOKENIZERS[pre][1])
    cp = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")
    forced = char_ends[(cp >= 0xDC80) & (cp <= 0xDCFF)] - 1  # stream offsets of the invalid bytes
    return data, ends, forced


def _identity(stream):
    return stream


#: Six characters for the token-less control bytes 4, 6, 19, 20, 22, 29 in the
#: mappings that need no escape: single SmolLM2 tokens, not letters, digits or
#: spaces (so they pre-tokenize as punctuation, as the control bytes they stand
#: for do), outside Latin-1 and Windows-1252 (so no other byte maps to them).
#: The choice among the 17 such tokens is ours; it is part of those mappings.
#: They are █ ─ ═ ● → − (full block, box drawings, black circle, arrow, minus sign).
CONTROL_STAND_INS = {4: "\u2588", 6: "\u2500", 19: "\u2550", 20: "\u25cf", 22: "\u2192", 29: "\u2212"}
#: Windows-1252's printable characters for bytes 0x80-0x9F (0x81, 0x8D, 0x8F, 0x90, 0x9D are undefined there).
CP1252_HIGH = {b: bytes([b]).decode("cp1252") for b in range(0x80, 0xA0) if b not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}

_latin1 = _charmap()
_latin1x = _charmap(CONTROL_STAND_INS)
_cp1252x = _charmap({**CP1252_HIGH, **CONTROL_STAND_INS})

# --8<-- [start:mappings]
#: Mapping name -> :class:`ByteMapping`.
MAPPINGS = {m.name: m for m in (
    ByteMapping("latin1", "each byte b is the character U+00b (Latin-1), and that text is pre-tokenized and "
                "merged as the model's own text is: ASCII stays ASCII, 0xA0-0xFF become accented letters and "
                "signs the model has read, so binary data turns into text-like words; the 6 control bytes "
                "without a token (4, 6, 19, 20, 22, 29) are escaped", *_latin1, chars=True),
    ByteMapping("raw", "the bytes themselves as one word, merged with no pre-split; bytes without a token "
                "(4, 6, 19, 20, 22, 29, 192, 193, 241-255) are escaped.  On UTF-8 text it is close to the "
                "model's own tokenization; on binary data it makes rare lone-byte tokens", _split_raw,
                _identity, chars=False),
    ByteMapping("utf8", "maximal valid UTF-8 runs are pre-tokenized as the text they are (the model's own "
                "tokenization of UTF-8 text); each invalid byte, and each byte without a token, is escaped",
                _split_utf8, _identity, chars=False),
    ByteMapping("latin1x", "latin1 with the 6 token-less control bytes read as CONTROL_STAND_INS: the same "
                "words as latin1 and never an escape", *_latin1x, chars=True),
    ByteMapping("cp1252x", "latin1x with bytes 0x80-0x9F read as Windows-1252 (euro sign, quotes, dashes, "
                "...) where it defines them: 27 C1 control codes, two tokens each in latin1 and unseen in "
                "text, become characters the model knows; never an escape", *_cp1252x, chars=True),
)}
# --8<-- [end:mappings]


def _mapping(name):
    try:
        return MAPPINGS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown byte mapping {name!r} (expected one of {sorted(MAPPINGS)})") from None


# ---------------------------------------------------------------------- tokenizer

class ByteLevelBPE:
    """GPT-2-style byte-level BPE of a pretrained vocabulary, as a bijection on any bytes.

    Args:
        tokens: token strings in the byte-level alphabet, index = token id.
        merges: ``"left right"`` strings, lowest rank first.
        token_types: GGUF token types (1 = normal); tokens of other types are
            never produced and never accepted.  ``None``: all normal.
        pre: pre-tokenizer name, a key of :data:`PRETOKENIZERS`.
        escape_token: the token string the coder codes before an escaped byte;
            it must be a token the merges can never produce.

    Raises:
        ValueError: duplicate tokens or merges, a merge whose parts or result are
            not normal tokens, a normal token outside the byte-level alphabet, an
            unknown pre-tokenizer, or an unusable escape token.
    """

    def __init__(self, tokens, merges, token_types=None, pre="smollm", escape_token="<|endoftext|>"):
        tokens = [str(t) for t in tokens]
        n = len(tokens)
        if n == 0:
            raise ValueError("the vocabulary is empty")
        if token_types is None:
            token_types = [NORMAL] * n
        token_types = [int(t) for t in token_types]
        if len(token_types) != n:
            raise ValueError(f"{len(token_types)} token types for {n} tokens")
        if pre not in PRETOKENIZERS:
            raise ValueError(f"unknown pre-tokenizer {pre!r} (supported: {sorted(PRETOKENIZERS)})")
        ids = {}
        for i, t in enumerate(tokens):
            if t in ids:
                raise ValueError(f"token {t!r} appears twice (ids {ids[t]} and {i})")
            ids[t] = i
        alphabet = {c: b for b, c in byte_to_unicode().items()}
        self._token_bytes = [None] * n  # None: never produced, never accepted
        for i, (t, kind) in enumerate(zip(tokens, token_types)):
            if kind == NORMAL:
                try:
                    self._token_bytes[i] = bytes(alphabet[c] for c in t)
                except KeyError:
                    raise ValueError(f"normal token {i} ({t!r}) has a character outside the byte-level alphabet") \
                        from None
        lefts, rights, results = (np.empty(len(merges), np.int64) for _ in range(3))
        for r, m in enumerate(merges):
            parts = str(m).split(" ")
            if len(parts) != 2 or not all(parts):
                raise ValueError(f"merge {r} ({m!r}) is not 'left right'")
            a, b = parts
            for part in (a, b, a + b):
                if part not in ids or self._token_bytes[ids[part]] is None:
                    raise ValueError(f"merge {r} ({m!r}): {part!r} is not a normal token")
            lefts[r], rights[r], results[r] = ids[a], ids[b], ids[a + b]
        bits = max(4, int(2 * max(len(merges), 1) - 1).bit_length())
        keys, ranks, duplicate = _build_table(lefts, rights, np.int64(n), bits)
        if duplicate >= 0:
            raise ValueError(f"merge {duplicate} ({merges[duplicate]!r}) repeats an earlier merge")
        if escape_token not in ids:
            raise ValueError(f"escape token {escape_token!r} is not in the vocabulary")
        escape = ids[escape_token]
        first = np.full(BYTES, -1, np.int64)  # byte -> its single-byte token, -1 if none
        for b, c in byte_to_unicode().items():
            if c in ids and self._token_bytes[ids[c]] is not None:
                first[b] = ids[c]
        if np.any(first == escape) or np.any(results == escape):
            raise ValueError(f"escape token {escape_token!r} can be produced by the merges")
        self.tokens = tokens
        self.pre = pre
        self.vocab_size = n
        self.escape_token = escape
        self._table = (keys, ranks, results, np.int64((1 << bits) - 1), np.int64(n))
        self._first = np.where(first >= 0, first, n + np.arange(BYTES)).astype(np.int64)  # missing -> escape
        #: the byte values that have no single-byte token (escaped wherever they occur unmerged)
        self.tokenless_bytes = [b for b in range(BYTES) if first[b] < 0]

    @classmethod
    def from_metadata(cls, tokenizer, escape_token="<|endoftext|>"):
        """Build from a GGUF tokenizer dict (``model``, ``pre``, ``tokens``, ``merges``, ``token_types``, ...)."""
        if not isinstance(tokenizer, dict):
            raise ValueError("tokenizer metadata must be a dict")
        for key in ("model", "pre", "tokens", "merges"):
            if key not in tokenizer:
                raise ValueError(f"tokenizer metadata has no {key!r}")
        if tokenizer["model"] != "gpt2":
            raise ValueError(f"tokenizer model {tokenizer['model']!r} is not byte-level BPE ('gpt2')")
        return cls(tokenizer["tokens"], tokenizer["merges"], tokenizer.get("token_types"), tokenizer["pre"],
                   escape_token)

    @property
    def n_symbols(self):
        """Number of distinct symbols: ``V`` tokens and ``256`` escaped bytes."""
        return self.vocab_size + BYTES

    def pretokenize(self, text):
        """The pre-tokenizer's words of ``text`` (a ``str``), in order; they concatenate to ``text``."""
        return PRETOKENIZERS[self.pre][0].findall(text)

    def encode(self, data, mapping="latin1"):
        """Symbols of ``data`` (any bytes) under ``mapping``: int32, tokens ``< V``, escaped bytes ``V + b``."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"data must be bytes, not {type(data).__name__}")
        stream, ends, forced = _mapping(mapping).split(data, self.pre)
        if not stream:
            return np.zeros(0, np.int32)
        raw = np.frombuffer(stream, np.uint8).astype(np.int64)
        init = self._first[raw]  # [len(stream)]
        if forced is not None and forced.size:
            init[forced] = self.vocab_size + raw[forced]
        keys, ranks, results, mask, n = self._table
        return _merge_words(init, ends, keys, ranks, results, mask, n)

    def symbol_bytes(self, symbol):
        """The stream bytes one symbol spells.  Raises ValueError for a symbol no encoding contains."""
        s = int(symbol)
        if self.vocab_size <= s < self.n_symbols:
            return bytes([s - self.vocab_size])
        if 0 <= s < self.vocab_size and self._token_bytes[s] is not None:
            return self._token_bytes[s]
        raise ValueError(f"symbol {s} is not a normal token or an escaped byte (0 <= s < {self.n_symbols})")

    def decode(self, symbols, mapping="latin1"):
        """The data whose encoding under ``mapping`` is ``symbols``; ValueError if there is none."""
        m = _mapping(mapping)
        symbols = np.asarray(symbols)
        if symbols.ndim != 1 or not (symbols.size == 0 or np.issubdtype(symbols.dtype, np.integer)):
            raise ValueError("symbols must be a 1-D array of integers")
        data = m.join(b"".join(map(self.symbol_bytes, symbols.tolist())))
        if not np.array_equal(self.encode(data, mapping), symbols):
            raise ValueError(f"symbols are not the {mapping} encoding of any data (corrupt or non-canonical)")
        return data

    def end_detector(self, n_bytes, mapping="latin1"):
        """A function ``done(symbol) -> bool``, told a chunk's symbols in order, True at its last symbol.

        The decoder of a chunk of known length ``n_bytes`` uses it to know when
        to stop.  A chunk is complete when its stream holds ``n_bytes`` data
        bytes (stream bytes, or whole UTF-8 characters for a character mapping);
        a symbol that goes past them raises ValueError (corrupt input).  An
        empty chunk has no symbols, so the caller never asks.
        """
        chars = _mapping(mapping).chars
        state = {"count": 0, "pending": 0}
        if n_bytes < 0:
            raise ValueError("n_bytes must be >= 0")

        def done(symbol):
            for byte in self.symbol_bytes(symbol):
                if not chars:
                    state["count"] += 1
                elif byte & 0xC0 == 0x80:
                    state["pending"] -= 1
                else:
                    state["count"] += 1
                    state["pending"] = (byte >= 0xC0) + (byte >= 0xE0) + (byte >= 0xF0)
            if state["count"] > n_bytes:
                raise ValueError(f"symbols spell more than the chunk's {n_bytes} bytes (corrupt input)")
            return state["count"] == n_bytes and state["pending"] <= 0

        return done

