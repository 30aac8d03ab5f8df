"""Plain-numpy re-implementations of IFC's layers from docs/model.md, used as test references.

Written loop-by-loop from the spec text, independently of the Flax modules.
"""

from __future__ import annotations

import math

import numpy as np


def sine_position(mask: np.ndarray, channels: int) -> np.ndarray:
    """docs/model.md#position-encoding for one frame.

    mask: (h, w) bool, True = padded. Returns (h, w, channels).
    """
    h, w = mask.shape
    feats = channels // 2
    not_mask = (~mask).astype(np.float64)
    y = np.cumsum(not_mask, axis=0)
    x = np.cumsum(not_mask, axis=1)
    y = y / (y[-1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, -1:] + 1e-6) * 2 * math.pi
    out = np.zeros((h, w, channels))
    for i in range(feats):
        dim_t = 10000.0 ** (2 * (i // 2) / feats)
        fn = np.sin if i % 2 == 0 else np.cos
        out[:, :, i] = fn(y / dim_t)
        out[:, :, feats + i] = fn(x / dim_t)
    return out


def layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float = 1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def dense(x: np.ndarray, params: dict) -> np.ndarray:
    return x @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"], np.float64)


def multi_head_attention(q_in, k_in, v_in, params, num_heads, key_padding_mask=None):
    """PyTorch nn.MultiheadAttention (eval). q_in: (Sq, C); k_in, v_in: (Sk, C)."""
    q, k, v = (dense(x, params[n]) for x, n in ((q_in, "query"), (k_in, "key"), (v_in, "value")))
    sq, c = q.shape
    d = c // num_heads
    out = np.zeros((sq, c))
    for head in range(num_heads):
        cols = slice(head * d, (head + 1) * d)
        logits = (q[:, cols] / math.sqrt(d)) @ k[:, cols].T
        if key_padding_mask is not None:
            logits = np.where(key_padding_mask[None, :], -np.inf, logits)
        logits -= logits.max(-1, keepdims=True)
        weights = np.exp(logits)
        weights /= weights.sum(-1, keepdims=True)
        out[:, cols] = weights @ v[:, cols]
    return dense(out, params["out"])


def feed_forward(x, params):
    return dense(np.maximum(dense(x, params["linear1"]), 0.0), params["linear2"])


def norm(x, params):
    return layer_norm(x, np.asarray(params["scale"]), np.asarray(params["bias"]))


def encoder_layer(x, pos, params, num_heads, key_padding_mask=None):
    """DETR post-norm encoder layer (docs/model.md#encoder-layer).

    x, pos: (S, C); pos may be None.
    """
    qk = x if pos is None else x + pos
    x = norm(x + multi_head_attention(qk, qk, x, params["self_attn"], num_heads,
                                      key_padding_mask), params["norm1"])
    return norm(x + feed_forward(x, params["ffn"]), params["norm2"])


def decoder_layer(tgt, query_pos, memory, memory_pos, params, num_heads, memory_mask=None):
    """DETR post-norm decoder layer (docs/model.md#decoder). tgt: (N, C); memory: (S, C)."""
    qk = tgt + query_pos
    tgt = norm(tgt + multi_head_attention(qk, qk, tgt, params["self_attn"], num_heads),
               params["norm1"])
    attended = multi_head_attention(tgt + query_pos, memory + memory_pos, memory,
                                    params["cross_attn"], num_heads, memory_mask)
    tgt = norm(tgt + attended, params["norm2"])
    return norm(tgt + feed_forward(tgt, params["ffn"]), params["norm3"])


def conv2d(x, kernel, stride=1, pad=0, bias=None, groups=1):
    """NHWC conv with explicit symmetric zero padding (PyTorch semantics). kernel: HWIO."""
    n, h, w, cin = x.shape
    kh, kw, cin_g, cout = kernel.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    cout_g = cout // groups
    for g in range(groups):
        xin = xp[..., g * cin_g:(g + 1) * cin_g]
        kern = kernel[..., g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                patch = xin[:, i:i + stride * oh:stride, j:j + stride * ow:stride, :]
                out[..., g * cout_g:(g + 1) * cout_g] += patch @ kern[i, j]
    return out if bias is None else out + bias


def frozen_bn(x, scale, bias, mean, var, eps=1e-5):
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def torch_bilinear_1d_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) interpolation matrix of PyTorch bilinear, align_corners=False, no antialias."""
    matrix = np.zeros((out_size, in_size))
    scale = in_size / out_size
    for i in range(out_size):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(np.floor(src)), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        lam = src - i0
        matrix[i, i0] += 1 - lam
        matrix[i, i1] += lam
    return matrix


def torch_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the two trailing axes like F.interpolate(mode='bilinear', align_corners=False)."""
    rows = torch_bilinear_1d_weights(x.shape[-2], height)
    cols = torch_bilinear_1d_weights(x.shape[-1], width)
    return np.einsum("ih,...hw,jw->...ij", rows, x, cols)
