"""Pure functions (masks, attention, positions) against independent float64 NumPy references."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import attention, masks, positions

jax.config.update("jax_enable_x64", False)


def naive_attention(q, k, v, mask=None, bias=None):
  """Float64 NumPy reference, one (batch, head, query) at a time."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  b, lq, h, d = q.shape
  lk = k.shape[1]
  mask = np.ones((b, h, lq, lk), bool) if mask is None else np.broadcast_to(np.asarray(mask), (b, h, lq, lk))
  bias = np.zeros((b, h, lq, lk)) if bias is None else np.broadcast_to(np.asarray(bias, np.float64), (b, h, lq, lk))
  out = np.zeros((b, lq, h, d))
  weights = np.zeros((b, h, lq, lk))
  for bi in range(b):
    for hi in range(h):
      for qi in range(lq):
        allowed = mask[bi, hi, qi]
        if not allowed.any():
          continue
        s = np.array([q[bi, qi, hi] @ k[bi, j, hi] / np.sqrt(d) + bias[bi, hi, qi, j] for j in range(lk)])
        s = np.where(allowed, s, -np.inf)
        w = np.exp(s - s.max())
        w /= w.sum()
        weights[bi, hi, qi] = w
        out[bi, qi, hi] = w @ v[bi, :, hi]
  return out, weights


def random_qkv(seed, b=2, lq=5, lk=7, h=3, d=4):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, lq, h, d)).astype(np.float32), rng.normal(size=(b, lk, h, d)).astype(np.float32),
          rng.normal(size=(b, lk, h, d)).astype(np.float32))


def all_masks(seed, b=2, lq=5, lk=7):
  rng = np.random.default_rng(seed)
  qv, kv = rng.random((b, lq)) > 0.2, rng.random((b, lk)) > 0.3
  qseg, kseg = rng.integers(0, 3, (b, lq)), rng.integers(0, 3, (b, lk))
  causal = masks.causal_mask(lq, lk)
  return {
      "none": None,
      "causal": causal,
      "padding": masks.padding_mask(jnp.asarray(qv), jnp.asarray(kv)),
      "segment": masks.segment_mask(jnp.asarray(qseg), jnp.asarray(kseg)),
      "combined": masks.combine_masks(causal, masks.segment_mask(jnp.asarray(qseg), jnp.asarray(kseg))),
  }


def test_mask_shapes_and_values():
  c = masks.causal_mask(3)
  np.testing.assert_array_equal(c[0, 0], np.tril(np.ones((3, 3), bool)))
  p = masks.padding_mask(jnp.array([[True, False]]), jnp.array([[True, True, False]]))
  np.testing.assert_array_equal(p[0, 0], [[True, True, False], [False, False, False]])
  s = masks.segment_mask(jnp.array([[1, 1, 2, 0]]), jnp.array([[1, 1, 2, 0]]))
  np.testing.assert_array_equal(s[0, 0], [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
  assert masks.combine_masks(None, None) is None
  np.testing.assert_array_equal(masks.combine_masks(c, None), c)


@pytest.mark.parametrize("mask_name", ["none", "causal", "padding", "segment", "combined"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_attention_matches_float64_reference(mask_name, with_bias):
  q, k, v = random_qkv(0)
  mask = all_masks(1)[mask_name]
  bias = np.random.default_rng(2).normal(size=(1, 3, 5, 7)).astype(np.float32) if with_bias else None
  out, w = jax.jit(lambda *a: attention.dot_product_attention(*a, return_weights=True))(q, k, v, mask, bias)
  ref_out, ref_w = naive_attention(q, k, v, mask, bias)
  np.testing.assert_allclose(out, ref_out, atol=2e-5)
  np.testing.assert_allclose(w, ref_w, atol=2e-6)
  assert out.shape == (2, 5, 3, 4)


@pytest.mark.parametrize("mask_name", ["none", "causal", "padding", "combined"])
def test_attention_matches_jax_nn_and_jax_impl(mask_name):
  q, k, v = random_qkv(3)
  mask = all_masks(4)[mask_name]
  ours = attention.dot_product_attention(q, k, v, mask)
  if mask is not None:  # jax.nn spreads fully masked rows uniformly; compare rows that see at least one key.
    full = np.broadcast_to(np.asarray(mask), (2, 3, 5, 7))
    rows = full.any(-1).transpose(0, 2, 1)[..., None]
  else:
    rows = np.ones((2, 5, 3, 1), bool)
  theirs = jax.nn.dot_product_attention(q, k, v, mask=mask)
  np.testing.assert_allclose(np.where(rows, ours, 0), np.where(rows, theirs, 0), atol=2e-5)
  np.testing.assert_allclose(attention.dot_product_attention(q, k, v, mask, implementation="jax"), ours, atol=2e-5)


def test_fully_masked_rows_are_finite_forward_and_backward():
  q, k, v = random_qkv(5)
  mask = jnp.zeros((2, 1, 5, 7), bool).at[:, :, :2].set(True)  # rows 2.. see nothing
  for impl in ("xla", "jax"):
    f = lambda q, k, v: attention.dot_product_attention(q, k, v, mask, implementation=impl).sum()
    out = attention.dot_product_attention(q, k, v, mask, implementation=impl)
    grads = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
    assert np.isfinite(out).all() and all(np.isfinite(g).all() for g in grads)
    np.testing.assert_array_equal(out[:, 2:], 0.0)


def test_attention_gradients_match_reference_gradient():
  q, k, v = random_qkv(6, b=1, lq=3, lk=4, h=2, d=3)
  mask = masks.causal_mask(3, 4)
  f = lambda q, k, v: (attention.dot_product_attention(q, k, v, mask) ** 2).sum()
  jax.config.update("jax_enable_x64", True)
  try:
    args64 = [jnp.asarray(a, jnp.float64) for a in (q, k, v)]
    ref = jax.grad(lambda *a: f(*a), argnums=(0, 1, 2))(*args64)
    chex.assert_numerical_grads(f, args64, order=1, atol=1e-6, rtol=1e-6, eps=1e-6)
  finally:
    jax.config.update("jax_enable_x64", False)
  ours = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_softmax_runs_in_float32_for_bf16_inputs():
  q, k, v = (a.astype(jnp.bfloat16) for a in random_qkv(7))
  out, w = attention.dot_product_attention(q, k, v, return_weights=True)
  assert out.dtype == jnp.bfloat16 and w.dtype == jnp.float32
  ref, _ = naive_attention(*(np.asarray(a, np.float32) for a in (q, k, v)))
  np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)


def test_attention_dropout_expectation_and_determinism():
  q, k, v = random_qkv(8, b=1, lq=2, lk=3, h=1, d=2)
  det = attention.dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=True)
  np.testing.assert_allclose(det, attention.dot_product_attention(q, k, v), atol=1e-6)
  keys = jax.random.split(jax.random.key(0), 4000)
  outs = jax.vmap(lambda r: attention.dot_product_attention(q, k, v, dropout_rate=0.5, dropout_rng=r,
                                                           deterministic=False))(keys)
  assert not np.allclose(outs[0], outs[1])
  np.testing.assert_allclose(outs.mean(0), det, atol=0.1)
  with pytest.raises(ValueError, match="dropout_rng"):
    attention.dot_product_attention(q, k, v, dropout_rate=0.5, deterministic=False)


def test_split_merge_heads_roundtrip():
  x = jnp.arange(2 * 3 * 12.0).reshape(2, 3, 12)
  s = attention.split_heads(x, 4)
  assert s.shape == (2, 3, 4, 3)
  np.testing.assert_array_equal(s[:, :, 1], x[:, :, 3:6])
  np.testing.assert_array_equal(attention.merge_heads(s), x)


def test_sinusoidal_matches_paper_formula():
  pos = np.arange(50)
  d = 16
  ref = np.zeros((50, d))
  for p in pos:
    for i in range(d // 2):
      ref[p, 2 * i] = np.sin(p / 10000 ** (2 * i / d))
      ref[p, 2 * i + 1] = np.cos(p / 10000 ** (2 * i / d))
  np.testing.assert_allclose(positions.sinusoidal(jnp.asarray(pos), d), ref, atol=1e-4)


def test_rope_matches_complex_rotation_and_is_relative():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 6, 2, 8)).astype(np.float32)
  pos = np.arange(6)[None] + 3
  ours = positions.apply_rope(jnp.asarray(x), jnp.asarray(pos))
  z = x[..., 0::2] + 1j * x[..., 1::2]
  theta = pos[0][:, None, None] / 10000 ** (np.arange(0, 8, 2) / 8)
  rz = z * np.exp(1j * theta)
  ref = np.stack([rz.real, rz.imag], -1).reshape(x.shape)
  np.testing.assert_allclose(ours, ref, atol=1e-5)
  q, k = jnp.asarray(x[:, :1]), jnp.asarray(x[:, 1:2])
  dot = lambda pq, pk: (positions.apply_rope(q, jnp.array([[pq]])) * positions.apply_rope(k, jnp.array([[pk]]))).sum()
  np.testing.assert_allclose(dot(5, 2), dot(13, 10), atol=1e-4)
