"""Word codes: a small tokenizer in front of the context-mixing model (XWRT-style word replacement).

Chapter 7 shows that a tokenizer is itself a compressor: it turns text into
fewer, richer symbols, and a model behind it then sees further back with the
same context length.  The byte-level ``cm`` compressor uses the same trick
without changing its alphabet: text leaves some byte values unused (control
characters, and bytes that UTF-8 never contains), and each of those can stand
for one frequent word.  "of the" becomes two code bytes and a space, so the
order-6 context now spans several words instead of one.

The transform is deliberately small:

* a *word* is a maximal run of ASCII letters; only all-lowercase words of 2 to
  ``MAX_WORD_LENGTH`` letters that occur at least ``MIN_COUNT`` times qualify;
* the most frequent of them (ties by the word itself) take the ``CODE_BYTES``
  that do not occur in the input, in increasing order;
* coding replaces each such word, as a whole run, by its byte; decoding
  replaces every code byte by its word.  Code bytes never occur in the input,
  so every code byte in the coded text came from a word: the transform is
  lossless for every input.

On enwik8 a coded word saves about a quarter of a bit per occurrence, while
its entry in the file costs about 40 bits, hence the high ``MIN_COUNT``: on small
inputs no word qualifies, and the file is the same as without the transform
(the container's flag says whether a word list is there).  The compressor
tells the model which bytes are codes (``use_word_codes``), and its word
models treat them as letters, so a coded word is still a word to them.

Format of the prefix that ``pack`` writes before the model's payload, when
the container header has ``FLAG_WORD_CODES``::

    1 byte   K, the number of words (1 .. len(CODE_BYTES))
    8 bytes  length of the coded text (little-endian)
    K times  code byte, word length L, then the L letters of the word
"""

import re
from collections import Counter

import numpy as np

# Bytes that neither ASCII text nor UTF-8 uses: control characters other than
# tab, LF and CR; DEL; and 0xC0, 0xC1, 0xF5-0xFF, which never occur in UTF-8.
CODE_BYTES = tuple([*range(0, 9), 11, 12, *range(14, 32), 127, 0xC0, 0xC1, *range(0xF5, 0x100)])
MIN_COUNT = 256         # a word must occur this often to earn a code (see the module docstring)
MAX_WORD_LENGTH = 32    # longer words are left as they are
BLOCK = 1 << 20          # inputs are split into words a block at a time, to bound memory
_WORDS = re.compile(rb"([A-Za-z]+)")   # split() keeps the words: [gap, word, gap, ..., word, gap]
_NON_LETTER = re.compile(rb"[^A-Za-z]")


def blocks(data):
    """``data`` in pieces of about ``BLOCK`` bytes, each cut where a word ends (so no word is cut)."""
    start = 0
    while start < len(data):
        m = _NON_LETTER.search(data, min(start + BLOCK, len(data)))
        end = m.start() if m else len(data)  # > start: the search starts after it
        yield data[start:end]
        start = end


# --8<-- [start:word_codes]
def choose(data):
    """The word -> code byte table for ``data`` (bytes): frequent lowercase words, unused code bytes."""
    used = np.bincount(np.frombuffer(data, np.uint8), minlength=256) > 0
    free = [b for b in CODE_BYTES if not used[b]]
    if not free:
        return {}
    counts = Counter()
    for block in blocks(data):
        counts.update(_WORDS.split(block)[1::2])  # the words: every other run
    ranked = sorted((w for w, n in counts.items() if n >= MIN_COUNT and 2 <= len(w) <= MAX_WORD_LENGTH
                     and w.islower()), key=lambda w: (-counts[w], w))
    return dict(zip(ranked, free))


def encode(data, codes):
    """Replace every whole lowercase word of ``data`` that has a code by its code byte."""
    if not codes:
        return bytes(data)
    table = {w: bytes([c]) for w, c in codes.items()}
    out = []
    for block in blocks(data):
        runs = _WORDS.split(block)
        runs[1::2] = [table.get(w, w) for w in runs[1::2]]
        out.append(b"".join(runs))
    return b"".join(out)


def decode(text, codes):
    """Replace every code byte of ``text`` by its word: the inverse of ``encode``."""
    if not codes:
        return bytes(text)
    table = {bytes([c]): w for w, c in codes.items()}
    pattern = re.compile(b"[" + b"".join(re.escape(k) for k in table) + b"]")
    return pattern.sub(lambda m: table[m.group()], text)
# --8<-- [end:word_codes]


def decoded_length(text, codes):
    """Length that ``decode(text, codes)`` will have, computed without building it (to check it first)."""
    counts = np.bincount(np.frombuffer(text, np.uint8), minlength=256)
    return len(text) + sum(int(counts[c]) * (len(w) - 1) for w, c in codes.items())


def pack(codes, coded_length):
    """The file prefix that records ``codes`` (at least one word) and the length of the coded text."""
    if not 1 <= len(codes) <= len(CODE_BYTES):
        raise ValueError(f"word codes: {len(codes)} words, not 1..{len(CODE_BYTES)}")
    out = bytearray([len(codes)]) + int(coded_length).to_bytes(8, "little")
    for w, c in codes.items():
        out += bytes([c, len(w)]) + w
    return bytes(out)


def unpack(buf, max_coded_length):
    """Parse a ``pack`` prefix: (codes, coded length, bytes used).  Raises ValueError if it is invalid.

    Every field is checked before use: at most ``len(CODE_BYTES)`` words of
    2..``MAX_WORD_LENGTH`` lowercase ASCII letters, each a distinct word with
    a distinct code from ``CODE_BYTES``, and a coded length of at most
    ``max_coded_length`` (coding only shortens text).
    """
    if len(buf) < 1:
        raise ValueError("word codes: the payload is empty (no word-code prefix)")
    k = buf[0]
    if not 1 <= k <= len(CODE_BYTES):
        raise ValueError(f"word codes: {k} words, not 1..{len(CODE_BYTES)}")
    if len(buf) < 9:
        raise ValueError("word codes: truncated prefix")
    coded_length = int.from_bytes(buf[1:9], "little")
    if coded_length > max_coded_length:
        raise ValueError(f"word codes: coded length {coded_length} exceeds the original length {max_coded_length}")
    codes, at = {}, 9
    for _ in range(k):
        if at + 2 > len(buf):
            raise ValueError("word codes: truncated word list")
        code, n = buf[at], buf[at + 1]
        word = bytes(buf[at + 2:at + 2 + n])
        if code not in CODE_BYTES:
            raise ValueError(f"word codes: byte {code} is not a code byte")
        if not (2 <= n <= MAX_WORD_LENGTH and len(word) == n and word.isalpha() and word.islower()):
            raise ValueError("word codes: invalid word")
        if word in codes or code in codes.values():
            raise ValueError("word codes: repeated word or code")
        codes[word] = code
        at += 2 + n
    return codes, coded_length, at
