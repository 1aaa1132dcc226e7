"""The driver every fused (compiled) coding path shares.

A predictor's fused path is one ``@njit`` function that predicts, quantizes,
codes and updates for positions ``[start, end)``; the same function serves
both directions (``decode`` picks the coder call), which is what keeps the
encoder's and the decoder's probabilities identical.  This module runs such a
function block by block: it allocates the output, grows it between blocks
(room for the block plus the pending E3 bits it may flush), reports progress,
and finishes the stream.

``code_block(hist, start, end, decode, st, buf, payload)`` is the predictor's
kernel with its model state bound in.
"""

import numpy as np

from ..coder import E_PENDING, E_POS, decoder_init, encoder_finish, encoder_init, max_encoded_bytes


def _reserve(buf, st, nbytes):
    """``buf``, grown if needed to hold ``nbytes`` more plus the pending bits."""
    need = int(st[E_POS]) + nbytes + (int(st[E_PENDING]) + 7) // 8
    if need <= buf.shape[0]:
        return buf
    grown = np.zeros(2 * need, np.uint8)
    grown[: buf.shape[0]] = buf
    return grown


def encode(data, code_block, block, bits_per_symbol, progress=None):
    """Run ``code_block`` over ``data`` (uint8 array) in blocks; return the payload bytes.

    ``bits_per_symbol`` bounds what one symbol can cost (``max_encoded_bytes``).
    """
    st = encoder_init()
    hist = np.array(data, dtype=np.uint8)  # a writable copy: one compiled kernel serves both directions
    no_payload = np.frombuffer(b"", np.uint8)  # read-only, like the decoder's payload
    buf = np.zeros(0, np.uint8)
    for start in range(0, hist.shape[0], block):
        end = min(hist.shape[0], start + block)
        buf = _reserve(buf, st, max_encoded_bytes(end - start, bits_per_symbol))
        code_block(hist, start, end, False, st, buf, no_payload)
        if progress is not None:
            progress(end - start)
    buf = _reserve(buf, st, max_encoded_bytes(0))
    return buf[: encoder_finish(st, buf)].tobytes()


def decode(payload, length, code_block, block, progress=None):
    """Decode ``length`` symbols from ``payload`` with ``code_block``; return a uint8 array."""
    data = np.frombuffer(bytes(payload), np.uint8)
    st = decoder_init(data)
    out = np.zeros(length, np.uint8)
    no_output = np.zeros(0, np.uint8)
    for start in range(0, length, block):
        end = min(length, start + block)
        code_block(out, start, end, True, st, no_output, data)
        if progress is not None:
            progress(end - start)
    return out
