"""GGML's tensor storage types, and their dequantization to float32 in readable NumPy.

A GGUF tensor is stored row by row in *blocks*: a block packs ``block`` weights
of one row into ``size`` bytes, usually as small integers ``q`` and a float16
scale ``d`` (and an offset ``m``) shared by the block.  Each function below
turns an array of blocks ``[n, size]`` (uint8) into their weights
``[n, block]`` (float32), following llama.cpp's reference
``dequantize_row_*`` (``ggml-quants.c``) operation for operation, in float32:

* ``Q8_0``  (32 weights, 34 bytes): f16 ``d``, 32 int8 ``q``;            ``x = d*q``
* ``Q4_0``  (32, 18): f16 ``d``, 16 bytes of nibbles;                   ``x = d*(q-8)``
* ``Q4_1``  (32, 20): f16 ``d``, f16 ``m``, 16 bytes of nibbles;        ``x = d*q + m``
* ``Q5_0``  (32, 22): f16 ``d``, 4 bytes of 5th bits, 16 of nibbles;    ``x = d*(q-16)``
* ``Q5_1``  (32, 24): f16 ``d``, f16 ``m``, 4 + 16 bytes;               ``x = d*q + m``
* ``Q4_K``  (256, 144): f16 ``d``, ``dmin``, 12 bytes of eight 6-bit scales and mins,
  128 of nibbles; sub-block ``j`` of 32: ``x = (d*sc_j)*q - dmin*m_j``
* ``Q5_K``  (256, 176): as ``Q4_K`` plus 32 bytes of 5th bits
* ``Q6_K``  (256, 210): 128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales, f16 ``d``;
  sub-block ``j`` of 16: ``x = (d*sc_j)*(q-32)``

In the 32-weight types byte ``j`` holds weight ``j`` in its low nibble and
weight ``j + 16`` in its high one; in the K types each 32-byte group holds
two sub-blocks of 32 the same way.  Floats F32, F16 and BF16 are widened to
float32 exactly.  Every product ``d*q`` of an f16 scale (11 significant bits)
and a small integer is exact in float32, so a fused multiply-add in a C build
would give the same weights as these separate operations.

This module only decodes bytes already checked to be in the file; it knows
nothing of GGUF's layout (``gguf_file``).
"""

import numpy as np

#: Every GGML type id GGUF defines, by name (messages name a rejected type).
TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 4: "Q4_2", 5: "Q4_3", 6: "Q5_0", 7: "Q5_1",
              8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K",
              15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL",
              21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64",
              28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4"}


# --8<-- [start:block_parts]
def _f16(blocks, start):
    """The little-endian float16 at byte ``start`` of each block, as float32 ``[n, 1]``."""
    return blocks[:, start:start + 2].copy().view("<f2").astype(np.float32)


def _nibbles(packed):
    """``[n, k]`` bytes -> ``[n, 2k]`` values: the low nibbles of all bytes, then the high ones."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)
# --8<-- [end:block_parts]


def _f32(blocks):
    return blocks.copy().view("<f4").astype(np.float32)


def _f16_type(blocks):
    return blocks.copy().view("<f2").astype(np.float32)


def _bf16(blocks):
    """bfloat16 is the top half of a float32: shift its 16 bits up."""
    return (blocks.copy().view("<u2").astype(np.uint32) << 16).view(np.float32)


def _q8_0(blocks):
    d = _f16(blocks, 0)  # [n, 1]
    q = blocks[:, 2:34].view(np.int8).astype(np.float32)  # [n, 32]
    return q * d


def _q4_0(blocks):
    d = _f16(blocks, 0)  # [n, 1]
    q = _nibbles(blocks[:, 2:18]).astype(np.int8) - np.int8(8)  # [n, 32]
    return q.astype(np.float32) * d


# --8<-- [start:q4_1]
def _q4_1(blocks):
    d, m = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1] each
    q = _nibbles(blocks[:, 4:20]).astype(np.float32)  # [n, 32]
    return q * d + m
# --8<-- [end:q4_1]


def _fifth_bits(qh_bytes):
    """``[n, 4]`` bytes, one little-endian uint32 per block -> ``[n, 32]`` bits shifted to 16 (0 or 16)."""
    qh = qh_bytes.copy().view("<u4")  # [n, 1]
    return (((qh >> np.arange(32, dtype=np.uint32)) & 1) << 4).astype(np.uint8)  # [n, 32]


def _q5_0(blocks):
    d = _f16(blocks, 0)  # [n, 1]
    q = (_nibbles(blocks[:, 6:22]) | _fifth_bits(blocks[:, 2:6])).astype(np.int8) - np.int8(16)  # [n, 32]
    return q.astype(np.float32) * d


def _q5_1(blocks):
    d, m = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1] each
    q = (_nibbles(blocks[:, 8:24]) | _fifth_bits(blocks[:, 4:8])).astype(np.float32)  # [n, 32]
    return q * d + m


def _k_scales(scales):
    """The eight 6-bit scales and mins of a ``Q4_K``/``Q5_K`` block, from its 12 bytes ``[n, 12]``.

    llama.cpp's ``get_scale_min_k4``: for sub-block ``j < 4`` the scale is
    ``s[j] & 63`` and the min ``s[j+4] & 63``; for ``j >= 4`` the low four bits
    come from ``s[j+4]`` (scale: low nibble, min: high nibble) and the top two
    from the top bits of ``s[j-4]`` (scale) and ``s[j]`` (min).
    """
    s = scales.astype(np.uint8)
    lo_sc, lo_m, packed = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([lo_sc & 63, (packed & 0x0F) | ((lo_sc >> 6) << 4)], axis=1)  # [n, 8]
    m = np.concatenate([lo_m & 63, (packed >> 4) | ((lo_m >> 6) << 4)], axis=1)  # [n, 8]
    return sc.astype(np.float32), m.astype(np.float32)


def _k_nibbles(qs):
    """``[n, 128]`` bytes -> ``[n, 8, 32]``: group ``g`` of 32 bytes gives sub-blocks ``2g`` (low) and ``2g+1`` (high)."""
    g = qs.reshape(-1, 4, 1, 32)
    return np.concatenate([g & 0x0F, g >> 4], axis=2).reshape(-1, 8, 32)


def _q4_k(blocks):
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1] each
    sc, m = _k_scales(blocks[:, 4:16])  # [n, 8] each
    q = _k_nibbles(blocks[:, 16:144]).astype(np.float32)  # [n, 8, 32]
    scale, offset = (d * sc)[:, :, None], (dmin * m)[:, :, None]  # [n, 8, 1]
    return (scale * q - offset).reshape(-1, 256)


def _q5_k(blocks):
    d, dmin = _f16(blocks, 0), _f16(blocks, 2)  # [n, 1] each
    sc, m = _k_scales(blocks[:, 4:16])  # [n, 8] each
    qh = blocks[:, 16:48]  # [n, 32]: bit j of byte l is the 5th bit of weight l of sub-block j
    high = ((qh[:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1) << 4  # [n, 8, 32]
    q = (_k_nibbles(blocks[:, 48:176]) | high).astype(np.float32)  # [n, 8, 32]
    scale, offset = (d * sc)[:, :, None], (dmin * m)[:, :, None]  # [n, 8, 1]
    return (scale * q - offset).reshape(-1, 256)


def _q6_k(blocks):
    ql, qh = blocks[:, 0:128], blocks[:, 128:192]  # [n, 128], [n, 64]
    sc = blocks[:, 192:208].view(np.int8).astype(np.float32)  # [n, 16]
    d = _f16(blocks, 208)  # [n, 1]
    # Each half of 128 weights uses 64 bytes of ql and 32 of qh: weight 32*k + l of the
    # half (k = 0..3) takes ql[l + 32*(k&1)]'s low (k < 2) or high nibble and bits 2k, 2k+1 of qh[l].
    ql = ql.reshape(-1, 2, 2, 32)  # [n, half, k&1, l]
    low = np.concatenate([ql & 0x0F, ql >> 4], axis=2)  # [n, half, k, l]
    qh = qh.reshape(-1, 2, 1, 32)  # [n, half, 1, l]
    high = (qh >> (2 * np.arange(4, dtype=np.uint8))[None, None, :, None]) & 3  # [n, half, k, l]
    q = ((low | (high << 4)).astype(np.int8) - np.int8(32)).astype(np.float32)  # [n, 2, 4, 32]
    scale = (d * sc).reshape(-1, 2, 4, 2, 1)  # [n, half, k, l // 16, 1]: 16 weights per scale
    return (scale * q.reshape(-1, 2, 4, 2, 16)).reshape(-1, 256)


#: Supported types: id -> (name, weights per block, bytes per block, blocks -> float32 weights).
TYPES = {
    0: ("F32", 1, 4, _f32),
    1: ("F16", 1, 2, _f16_type),
    30: ("BF16", 1, 2, _bf16),
    8: ("Q8_0", 32, 34, _q8_0),
    2: ("Q4_0", 32, 18, _q4_0),
    3: ("Q4_1", 32, 20, _q4_1),
    6: ("Q5_0", 32, 22, _q5_0),
    7: ("Q5_1", 32, 24, _q5_1),
    12: ("Q4_K", 256, 144, _q4_k),
    13: ("Q5_K", 256, 176, _q5_k),
    14: ("Q6_K", 256, 210, _q6_k),
}

#: Weights decoded per step: bounds the temporaries to a few tens of MiB whatever the tensor's size.
CHUNK_WEIGHTS = 1 << 21


def type_name(type_id):
    """The GGML name of ``type_id`` (``"type 99"`` for an id GGUF does not define)."""
    return TYPE_NAMES.get(type_id, f"type {type_id}")


def dequantize(raw, type_id, n_weights):
    """The ``n_weights`` float32 weights stored as ``raw`` (uint8, exactly their bytes) in type ``type_id``.

    Returns a new 1-D float32 array; the blocks are decoded ``CHUNK_WEIGHTS`` at a
    time into it, so no temporary is larger than a chunk.

    Raises:
        ValueError: a type without a decoder here, or ``raw`` not the size ``n_weights`` needs.
    """
    if type_id not in TYPES:
        raise ValueError(f"GGML type {type_name(type_id)} is not supported "
                         f"(supported: {', '.join(t[0] for t in TYPES.values())})")
    _, block, size, decode = TYPES[type_id]
    if n_weights % block or raw.size != n_weights // block * size:
        raise ValueError(f"{n_weights} weights of {type_name(type_id)} do not fill {raw.size} bytes")
    blocks = raw.reshape(-1, size)  # [n_blocks, size]
    out = np.empty(n_weights, np.float32)
    step = max(1, CHUNK_WEIGHTS // block)
    for start in range(0, blocks.shape[0], step):
        part = blocks[start:start + step]
        out[start * block:(start + part.shape[0]) * block] = decode(part).reshape(-1)
    return out
