"""NNX models: invariances (causality, padding, packing), cached decoding == full forward, dropout, presets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from transformer_jax import layers, masks
from transformer_jax.models import (DecoderOnly, EncoderDecoder, TransformerConfig, shift_right,
                                    tokens_to_logits_fn)

VARIANTS = {
    "paper": {},
    "pre_rms_rope": {"pre_norm": True, "norm": "rmsnorm", "positional": "rope", "activation": "gelu"},
    "learned_untied": {"positional": "learned", "share_embeddings": False, "logits_via_embedding": False},
}


def tiny(**kw):
  return TransformerConfig.tiny(dropout_rate=0.0, **kw)


def ids(rng, b, length, lengths=None, vocab=64):
  x = rng.integers(4, vocab, size=(b, length)).astype(np.int32)
  if lengths is not None:
    for i, n in enumerate(lengths):
      x[i, n:] = 0
  return jnp.asarray(x)


@pytest.fixture(scope="module")
def models():
  return {name: (EncoderDecoder(tiny(**kw), rngs=nnx.Rngs(0)), DecoderOnly(tiny(**kw), rngs=nnx.Rngs(1)))
          for name, kw in VARIANTS.items()}


@pytest.mark.parametrize("variant", VARIANTS)
def test_causality(models, variant):
  ed, lm = models[variant]
  rng = np.random.default_rng(0)
  x, y = ids(rng, 2, 7), ids(rng, 2, 6)
  t = 3
  y2 = y.at[:, t].set((y[:, t] + 1 - 4) % 60 + 4)
  for a, b in ((ed(x, y), ed(x, y2)), (lm(y), lm(y2))):
    # logits[t] predicts targets[t] from targets[<t]: changing targets[t] leaves logits[<=t] unchanged.
    np.testing.assert_allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not np.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_invariance(models, variant):
  ed, lm = models[variant]
  rng = np.random.default_rng(1)
  x, y = ids(rng, 2, 5), ids(rng, 2, 4)
  pad = lambda a, n: jnp.pad(a, ((0, 0), (0, n)))
  np.testing.assert_allclose(ed(pad(x, 3), pad(y, 2))[:, :4], ed(x, y), atol=1e-5)
  np.testing.assert_allclose(lm(pad(y, 5))[:, :4], lm(y), atol=1e-5)


def pack(seqs):
  """Packs 1-D id arrays into one row with segment ids and positions."""
  row = np.concatenate(seqs)[None]
  seg = np.concatenate([np.full(len(s), i + 1) for i, s in enumerate(seqs)])[None]
  pos = np.concatenate([np.arange(len(s)) for s in seqs])[None]
  return jnp.asarray(row, jnp.int32), jnp.asarray(seg, jnp.int32), jnp.asarray(pos, jnp.int32)


@pytest.mark.parametrize("variant", VARIANTS)
def test_packed_equals_separate(models, variant):
  ed, lm = models[variant]
  rng = np.random.default_rng(2)
  src = [rng.integers(4, 64, n) for n in (3, 5, 2)]
  tgt = [rng.integers(4, 64, n) for n in (4, 2, 3)]
  x, xs, xp = pack(src)
  y, ys, yp = pack(tgt)
  packed_ed = ed(x, y, xs, ys, xp, yp)[0]
  packed_lm = lm(y, ys, yp)[0]
  offset = 0
  for s, t in zip(src, tgt):
    alone_ed = ed(jnp.asarray(s[None], jnp.int32), jnp.asarray(t[None], jnp.int32))[0]
    alone_lm = lm(jnp.asarray(t[None], jnp.int32))[0]
    np.testing.assert_allclose(packed_ed[offset:offset + len(t)], alone_ed, atol=1e-5)
    np.testing.assert_allclose(packed_lm[offset:offset + len(t)], alone_lm, atol=1e-5)
    offset += len(t)


def test_shift_right_puts_bos_at_segment_starts():
  t = jnp.array([[5, 6, 3, 7, 3, 0]])
  seg = jnp.array([[1, 1, 1, 2, 2, 0]])
  np.testing.assert_array_equal(shift_right(t, seg, 2), [[2, 5, 6, 2, 7, 3]])


def test_encoder_ignores_targets_and_masked_sources_get_zero_weight(models):
  ed, _ = models["paper"]
  rng = np.random.default_rng(3)
  x = ids(rng, 2, 6, lengths=[6, 3])
  np.testing.assert_allclose(ed.encode(x), ed.encode(x), atol=0)  # encode takes no targets at all
  for layer in ed.decoder.layers:
    layer.cross_attention.capture_weights = True
  _, weights = nnx.capture(ed, nnx.Intermediate)(x, ids(rng, 2, 4))
  for layer in ed.decoder.layers:
    layer.cross_attention.capture_weights = False
  cross = [v for path, v in nnx.to_flat_state(weights) if "cross_attention" in path]
  assert len(cross) == 2
  for w in cross:
    w = np.asarray(jax.tree.leaves(w)[0])
    np.testing.assert_array_equal(w[1, :, :, 3:], 0.0)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5)
  # changing a source token that the segmentation marks as padding changes nothing
  y = ids(rng, 2, 4)
  valid = (x != 0).astype(jnp.int32)
  np.testing.assert_allclose(ed(x.at[1, 4].set(9), y, inputs_segmentation=valid)[1], ed(x, y)[1], atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_matches_full_forward(models, variant):
  ed, lm = models[variant]
  rng = np.random.default_rng(4)
  x = ids(rng, 2, 5, lengths=[5, 3])
  bos = jnp.full((2, 1), 2, jnp.int32)
  y = ids(rng, 2, 6)
  for model, full in ((ed, ed(x, y)), (lm, lm(y))):
    if model is ed:
      model.init_cache(x, 8)
    else:
      model.init_cache(2, 8)
    step, cache = tokens_to_logits_fn(model)
    step = jax.jit(step)
    dec_in = jnp.concatenate([bos, y[:, :-1]], axis=1)
    for t in range(6):
      logits, cache = step(dec_in[:, t:t + 1], cache)
      np.testing.assert_allclose(logits[:, 0], full[:, t], atol=1e-4)
    # one-pass prefill of the whole prefix gives the same logits too
    if model is ed:
      model.init_cache(x, 8)
    else:
      model.init_cache(2, 8)
    step, cache = tokens_to_logits_fn(model)
    logits, cache = step(dec_in, cache)
    np.testing.assert_allclose(logits, full, atol=1e-4)


def test_prefill_with_right_padded_prompts_matches_separate_rows(models):
  _, lm = models["pre_rms_rope"]
  rng = np.random.default_rng(5)
  prompts = ids(rng, 2, 5, lengths=[5, 2]).at[:, 0].set(2)
  lm.init_cache(2, 10)
  step, cache = tokens_to_logits_fn(lm)
  _, cache = step(prompts, cache)
  np.testing.assert_array_equal(cache["decoder"]["cache_index"].get_value(), [5, 2])
  nxt = jnp.array([[7], [8]], jnp.int32)
  logits, _ = step(nxt, cache)
  for row, n in ((0, 5), (1, 2)):
    seq = jnp.concatenate([prompts[row:row + 1, 1:n], nxt[row:row + 1], jnp.array([[5]])], axis=1)
    full = lm(seq)  # shift_right puts BOS first, so the next token is the input at index n
    np.testing.assert_allclose(logits[row, 0], full[0, n], atol=1e-4)


def test_dropout_deterministic_and_stochastic():
  cfg = TransformerConfig.tiny(dropout_rate=0.3, attention_dropout_rate=0.2)
  model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(6)
  x, y = ids(rng, 2, 5), ids(rng, 2, 4)
  np.testing.assert_array_equal(model(x, y), model(x, y))
  a = model(x, y, deterministic=False, rngs=nnx.Rngs(dropout=1))
  b = model(x, y, deterministic=False, rngs=nnx.Rngs(dropout=1))
  c = model(x, y, deterministic=False, rngs=nnx.Rngs(dropout=2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_dropout_keeps_the_expectation():
  x = jnp.ones((4000, 8))
  y = layers._dropout(x, 0.3, False, nnx.Rngs(dropout=0))
  np.testing.assert_allclose(np.unique(np.asarray(y)), [0.0, 1 / 0.7], rtol=1e-6)
  np.testing.assert_allclose(y.mean(), 1.0, atol=0.02)


def count(model_cls, cfg):
  abstract = nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def test_preset_parameter_counts():
  assert 63e6 <= count(EncoderDecoder, TransformerConfig.base(vocab_size=37_000)) <= 65e6
  assert 209e6 <= count(EncoderDecoder, TransformerConfig.big(vocab_size=37_000)) <= 217e6


def test_every_param_has_logical_axis_names():
  model = EncoderDecoder(TransformerConfig.tiny(positional="learned", logits_via_embedding=False,
                                                share_embeddings=False), rngs=nnx.Rngs(0))
  for path, p in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    names = p.get_metadata()["out_sharding"]
    assert len(names) == p.get_value().ndim, path
    assert set(names) <= {"embed", "vocab", "heads", "head_dim", "mlp", "length"}, path


def test_bf16_compute_keeps_float32_params():
  cfg = TransformerConfig.tiny(dtype=jnp.bfloat16, param_dtype=jnp.float32)
  model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(7)
  x, y = ids(rng, 2, 5), ids(rng, 2, 4)

  def loss(m):
    return m(x, y).astype(jnp.float32).mean()

  grads = nnx.grad(loss)(model)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  assert all(g.dtype == jnp.float32 and np.isfinite(g).all() for g in jax.tree.leaves(grads))
  ref = EncoderDecoder(TransformerConfig.tiny(), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(model(x, y), ref(x, y), atol=0.1)


@pytest.mark.parametrize("kw, field", [
    ({"d_model": 30, "num_heads": 4}, "num_heads"),
    ({"positional": "alibi"}, "positional"),
    ({"norm": "batchnorm"}, "norm"),
    ({"dropout_rate": 1.0}, "dropout_rate"),
    ({"d_model": 36, "num_heads": 4, "positional": "rope"}, "rope"),
])
def test_bad_config_raises_naming_the_field(kw, field):
  with pytest.raises(ValueError, match=field):
    TransformerConfig.tiny(**kw)


def test_config_is_hashable_and_jit_static():
  cfg = TransformerConfig.tiny()
  assert hash(cfg) == hash(TransformerConfig.tiny())
  f = jax.jit(lambda c, x: x * c.d_model, static_argnums=0)
  assert f(cfg, 1.0) == 32.0


def test_masks_module_is_used_for_cross_masks():
  seg_t, seg_s = jnp.array([[1, 1, 2]]), jnp.array([[1, 2, 2, 0]])
  m = masks.segment_mask(seg_t, seg_s)[0, 0]
  np.testing.assert_array_equal(m, [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0]])
