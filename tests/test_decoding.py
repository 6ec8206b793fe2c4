"""Tests of transformer_jax.decoding: greedy search, beam search and sampling.

Most tests use a small self-contained toy LM (below) whose cache is the full token history, checked against an
uncached reference that recomputes from the whole prefix; the last ones run the real tiny models.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transformer_jax import decoding
from transformer_jax.tokens import BOS_ID, EOS_ID

VOCAB, DIM, CACHE_LEN = 12, 16, 48


@jax.tree_util.register_pytree_node_class
class ToyLM:
  """Attention-free LM: logits_t = tanh(mean(emb[x_0..x_t]) + pos[t]) @ out + bias.

  Cached form: cache = {"tokens": int32[B, CACHE_LEN] history, "index": int32[B] number of tokens fed}.
  Uncached form (`full_logits`) recomputes every position with a cumulative sum.
  A pytree of its weights, so that jitted helpers compile once for every seed.
  """

  def __init__(self, seed: int, eos_bias: float = 0.0, scale: float = 2.0):
    k_emb, k_pos, k_out = jax.random.split(jax.random.key(seed), 3)
    self.emb = jax.random.normal(k_emb, (VOCAB, DIM))
    self.pos = jax.random.normal(k_pos, (CACHE_LEN, DIM))
    self.out = scale * jax.random.normal(k_out, (DIM, VOCAB)) / np.sqrt(DIM)
    self.bias = jnp.zeros(VOCAB).at[EOS_ID].set(eos_bias)

  def tree_flatten(self):
    return (self.emb, self.pos, self.out, self.bias), None

  @classmethod
  def tree_unflatten(cls, _, weights):
    model = object.__new__(cls)
    model.emb, model.pos, model.out, model.bias = weights
    return model

  def init_cache(self, batch: int) -> dict:
    return {"tokens": jnp.zeros((batch, CACHE_LEN), jnp.int32), "index": jnp.zeros((batch,), jnp.int32)}

  def tokens_to_logits(self, ids, cache):
    """ids int32[B, T] (0 = no token) -> logits float32[B, T, V], fed one column at a time."""

    def feed(cache, column):
      valid = column != 0
      rows = jnp.arange(column.shape[0])
      tokens = jnp.where(valid[:, None], cache["tokens"].at[rows, cache["index"]].set(column), cache["tokens"])
      index = cache["index"] + valid
      last = jnp.maximum(index - 1, 0)
      seen = jnp.arange(CACHE_LEN)[None, :] < index[:, None]
      mean = jnp.sum(self.emb[tokens] * seen[..., None], axis=1) / jnp.maximum(index, 1)[:, None]
      logits = jnp.tanh(mean + self.pos[last]) @ self.out + self.bias
      return {"tokens": tokens, "index": index}, logits

    cache, logits = jax.lax.scan(feed, cache, ids.T)
    return logits.transpose(1, 0, 2), cache

  def full_logits(self, seqs: np.ndarray) -> np.ndarray:
    """Uncached reference: seqs int[B, L] without padding -> logits float[B, L, V] (logits[:, t] after seqs[:, :t+1])."""
    length = seqs.shape[1]
    mean = jnp.cumsum(self.emb[seqs], axis=1) / jnp.arange(1, length + 1)[None, :, None]
    return np.asarray(jnp.tanh(mean + self.pos[:length]) @ self.out + self.bias)


def reference_decode(full_logits, prefixes, *, max_len, limits=None) -> np.ndarray:
  """Uncached greedy: recompute all logits of each row's whole prefix for every new token (id 0 excluded)."""
  out = np.zeros((len(prefixes), max_len), np.int32)
  for row, prefix in enumerate(prefixes):
    seq = list(prefix)
    for step in range(max_len if limits is None else min(limits[row], max_len)):
      token = int(np.argmax(full_logits(np.array([seq]))[0, -1, 1:])) + 1
      out[row, step] = token
      seq.append(token)
      if token == EOS_ID:
        break
  return out


def reference_score(full_logits, start, seq) -> float:
  """Uncached sum of log-probs (id 0 excluded from the softmax) of the tokens of seq up to its first 0."""
  seq = [t for t in seq if t != 0]
  logits = full_logits(np.array([[start] + seq[:-1]]))[0].astype(np.float64)[:, 1:]
  log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  return float(sum(log_probs[t, tok - 1] for t, tok in enumerate(seq)))


@functools.partial(jax.jit, static_argnames=("max_len",))
def _greedy(model, start, max_lengths=None, *, max_len):
  cache = model.init_cache(start.shape[0])
  return decoding.greedy_search(model.tokens_to_logits, cache, start, max_len=max_len, eos_id=EOS_ID,
                                max_lengths=max_lengths)


@functools.partial(jax.jit, static_argnames=("beam_size", "alpha", "max_len"))
def _beam(model, start, max_lengths=None, *, beam_size, alpha, max_len):
  cache = model.init_cache(start.shape[0])
  return decoding.beam_search(model.tokens_to_logits, cache, start, beam_size=beam_size, alpha=alpha,
                              max_len=max_len, eos_id=EOS_ID, max_lengths=max_lengths)


@functools.partial(jax.jit, static_argnames=("max_len", "top_k"))
def _sample(model, prompt, rng, temperature=1.0, top_p=1.0, *, max_len, top_k=0):
  cache = model.init_cache(prompt.shape[0])
  return decoding.sample(model.tokens_to_logits, cache, prompt, rng, max_len=max_len, eos_id=EOS_ID,
                         temperature=temperature, top_k=top_k, top_p=top_p)


@jax.jit
def _score(model, start, seqs):
  return decoding.score_sequences(model.tokens_to_logits, model.init_cache(start.shape[0]), start, seqs)


def _starts(batch):
  return jnp.full((batch,), BOS_ID, jnp.int32)


def _assert_zero_after_eos(seqs):
  for seq in np.asarray(seqs).reshape(-1, seqs.shape[-1]):
    eos = np.flatnonzero(seq == EOS_ID)
    end = eos[0] + 1 if eos.size else np.count_nonzero(seq)
    assert np.all(seq[:end] != 0) and np.all(seq[end:] == 0), seq


# ---------------------------------------------------------------------------------------------------------------------
# The toy model itself and the scoring helper.


def test_toy_cache_matches_full_recomputation():
  model = ToyLM(0)
  seqs = np.array([[BOS_ID, 5, 7, 4, 9, 11], [BOS_ID, 6, 6, 1, 8, 10]])
  expected = model.full_logits(seqs)
  # One-pass prefill of a right-padded prefix, then one token per step.
  prompt = jnp.array([[BOS_ID, 5, 7, 0], [BOS_ID, 6, 6, 1]])
  logits, cache = model.tokens_to_logits(prompt, model.init_cache(2))
  np.testing.assert_allclose(logits[0, :3], expected[0, :3], atol=1e-5)
  np.testing.assert_allclose(logits[1], expected[1, :4], atol=1e-5)
  np.testing.assert_array_equal(cache["index"], [3, 4])
  logits, cache = model.tokens_to_logits(jnp.array([[4], [8]]), cache)
  np.testing.assert_allclose(logits[:, 0], np.stack([expected[0, 3], expected[1, 4]]), atol=1e-5)


def test_score_sequences_matches_uncached_log_probs():
  model = ToyLM(1)
  seqs = jnp.array([[5, 7, EOS_ID, 0, 0], [6, 4, 9, 10, 11]])
  scores = _score(model, _starts(2), seqs)
  for row in range(2):
    assert scores[row] == pytest.approx(reference_score(model.full_logits, BOS_ID, seqs[row]), abs=1e-4)


def test_max_lengths_from_inputs_is_input_length_plus_offset():
  inputs = jnp.array([[5, 6, EOS_ID, 0], [7, EOS_ID, 0, 0]])
  np.testing.assert_array_equal(decoding.max_lengths_from_inputs(inputs), [53, 52])
  np.testing.assert_array_equal(decoding.max_lengths_from_inputs(inputs, offset=1), [4, 3])


def test_length_penalty_is_gnmt():
  assert float(decoding.length_penalty(7, 0.6)) == pytest.approx(2.0**0.6)
  assert float(decoding.length_penalty(7, 0.0)) == 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Greedy search.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_cached_equals_uncached_recomputation(seed):
  model = ToyLM(seed, eos_bias=1.0)
  # Different start tokens per row make the rows differ.
  starts = jnp.array([BOS_ID, 5, 7, 9])
  out = _greedy(model, starts, max_len=12)
  np.testing.assert_array_equal(out, reference_decode(model.full_logits, [[int(s)] for s in starts], max_len=12))
  _assert_zero_after_eos(out)


def test_greedy_eos_handling_and_padding_after_eos():
  model = ToyLM(3)
  starts = jnp.array([BOS_ID, 4, 5, 6, 7, 8, 9, 10])
  out = np.asarray(_greedy(model, starts, max_len=16))
  finished = np.any(out == EOS_ID, axis=1)
  assert finished.any() and not finished.all(), "pick a model where some rows end with EOS and some do not"
  _assert_zero_after_eos(out)
  assert np.all(out[~finished] != 0)  # rows without EOS run to max_len


def test_greedy_per_example_max_lengths():
  model = ToyLM(4, eos_bias=-5.0)  # never ends by itself
  starts = jnp.array([BOS_ID, 5, 6])
  full = np.asarray(_greedy(model, starts, max_len=10))
  assert not np.any(full == EOS_ID)
  out = np.asarray(_greedy(model, starts, jnp.array([3, 12, 0]), max_len=10))
  np.testing.assert_array_equal(out[0], np.concatenate([full[0, :3], np.zeros(7)]))
  np.testing.assert_array_equal(out[1], full[1])  # limit above max_len: max_len wins
  np.testing.assert_array_equal(out[2], np.zeros(10))


class _CountingLM(ToyLM):
  """A ToyLM that counts its (traced) calls at run time through a host callback."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.calls = 0

  def tokens_to_logits(self, ids, cache):
    jax.debug.callback(self._count)
    return super().tokens_to_logits(ids, cache)

  def _count(self):
    self.calls += 1


def test_greedy_and_beam_exit_early_when_all_finished():
  model = _CountingLM(5, eos_bias=8.0)  # EOS is (almost) always the most likely token
  out = decoding.greedy_search(model.tokens_to_logits, model.init_cache(3), _starts(3), max_len=40, eos_id=EOS_ID)
  jax.effects_barrier()
  np.testing.assert_array_equal(out[:, 0], EOS_ID)
  assert model.calls == 1
  model.calls = 0
  seqs, _ = decoding.beam_search(model.tokens_to_logits, model.init_cache(3), _starts(3), beam_size=2, alpha=0.6,
                                 max_len=40, eos_id=EOS_ID)
  jax.effects_barrier()
  np.testing.assert_array_equal(seqs[:, 0, 0], EOS_ID)
  assert model.calls < 10


# ---------------------------------------------------------------------------------------------------------------------
# Beam search.


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_beam_size_one_equals_greedy(seed):
  model = ToyLM(seed, eos_bias=1.0)
  starts = jnp.array([BOS_ID, 4, 5, 6, 7, 8])
  limits = jnp.array([12, 3, 12, 5, 12, 1])
  greedy = _greedy(model, starts, limits, max_len=12)
  seqs, _ = _beam(model, starts, limits, beam_size=1, alpha=0.0, max_len=12)
  np.testing.assert_array_equal(seqs[:, 0], greedy)


def test_beam_scores_are_length_penalised_model_scores_best_first():
  model = ToyLM(6, eos_bias=1.0)
  starts = jnp.array([BOS_ID, 5, 6])
  limits = jnp.array([10, 4, 10])
  alpha = 0.6
  seqs, scores = _beam(model, starts, limits, beam_size=3, alpha=alpha, max_len=10)
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  _assert_zero_after_eos(seqs)
  assert np.all(np.diff(scores, axis=1) <= 0)  # best first
  for row, beam in itertools.product(range(3), range(3)):
    seq = seqs[row, beam]
    length = np.count_nonzero(seq)
    assert seq[length - 1] == EOS_ID or length == limits[row]
    assert length <= limits[row]
    expected = reference_score(model.full_logits, int(starts[row]), seq) / ((5 + length) / 6) ** alpha
    assert scores[row, beam] == pytest.approx(expected, abs=1e-4)
  assert len({tuple(s) for s in seqs[0]}) == 3  # distinct hypotheses


@pytest.mark.parametrize("seed", range(4))
def test_beam_score_at_least_greedy(seed):
  model = ToyLM(10 + seed, eos_bias=0.5)
  starts = jnp.array([BOS_ID, 4, 5, 6, 7, 8, 9, 10])
  alpha = 0.6
  greedy = _greedy(model, starts, max_len=16)
  lengths = jnp.sum(greedy != 0, axis=1)
  greedy_scores = _score(model, starts, greedy) / decoding.length_penalty(lengths, alpha)
  _, scores = _beam(model, starts, beam_size=4, alpha=alpha, max_len=16)
  assert np.all(np.asarray(scores[:, 0]) >= np.asarray(greedy_scores) - 1e-5)


def test_beam_search_finds_the_exhaustive_optimum():
  # With a beam wider than all hypotheses, beam search must return the best one (found here by enumeration).
  model = ToyLM(20, eos_bias=1.5)
  max_len, alpha = 3, 0.6
  seqs, scores = _beam(model, _starts(1), beam_size=VOCAB**2, alpha=alpha, max_len=max_len)
  # Every hypothesis is a prefix of some full-length sequence of real ids: score all of those prefixes at once.
  full = np.array(list(itertools.product(range(1, VOCAB), repeat=max_len)))
  logits = model.full_logits(np.concatenate([np.full((len(full), 1), BOS_ID), full[:, :-1]], axis=1))
  logits = logits[..., 1:].astype(np.float64)
  log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  cum = np.cumsum(np.take_along_axis(log_probs, full[..., None] - 1, axis=-1)[..., 0], axis=1)
  is_eos = full == EOS_ID
  length = np.where(is_eos.any(axis=1), np.argmax(is_eos, axis=1) + 1, max_len)
  hyp_scores = cum[np.arange(len(full)), length - 1] / ((5 + length) / 6) ** alpha
  best = np.argmax(hyp_scores)
  expected = np.where(np.arange(max_len) < length[best], full[best], 0)
  np.testing.assert_array_equal(seqs[0, 0], expected)
  assert scores[0, 0] == pytest.approx(hyp_scores[best], abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------------
# Sampling.


def _prompts():
  return jnp.array([[BOS_ID, 5, 7, 0, 0], [BOS_ID, 0, 0, 0, 0], [BOS_ID, 4, 6, 8, 10], [BOS_ID, 9, 0, 0, 0]])


def test_sample_is_reproducible_and_depends_on_the_seed():
  model = ToyLM(7)
  a = _sample(model, _prompts(), jax.random.key(0), max_len=12)
  b = _sample(model, _prompts(), jax.random.key(0), max_len=12)
  c = _sample(model, _prompts(), jax.random.key(1), max_len=12)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  _assert_zero_after_eos(a)


@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(top_k=1), dict(top_p=1e-6)])
def test_sample_degenerate_settings_are_greedy(kwargs):
  model = ToyLM(8, eos_bias=1.0)
  prompts = _prompts()
  expected = reference_decode(model.full_logits, [[int(t) for t in p if t] for p in prompts], max_len=10)
  out = _sample(model, prompts, jax.random.key(3), max_len=10, **kwargs)
  np.testing.assert_array_equal(out, expected)


def test_prompts_of_different_lengths_continue_as_each_prompt_alone():
  model = ToyLM(9, eos_bias=0.5)
  prompts = _prompts()
  batched = _sample(model, prompts, jax.random.key(0), 0.0, max_len=8)
  for row, prompt in enumerate(prompts):
    alone = _sample(model, prompt[None], jax.random.key(0), 0.0, max_len=8)
    np.testing.assert_array_equal(batched[row], alone[0])


def _fixed_logits_model(logits):
  return lambda ids, cache: (jnp.broadcast_to(logits, ids.shape + logits.shape), cache)


@pytest.mark.parametrize("top_k, top_p, temperature", [(0, 1.0, 1.0), (3, 1.0, 1.0), (0, 0.8, 1.0), (0, 1.0, 2.0)])
def test_sample_distribution_matches_filtered_softmax(top_k, top_p, temperature):
  logits = jnp.array([5.0, 1.0, 0.5, -1.0, 2.0, 0.0, 1.5, -0.5])  # id 0 (padding) must never be drawn
  rows = 20_000
  prompt = jnp.full((rows, 1), BOS_ID, jnp.int32)
  tokens = decoding.sample(_fixed_logits_model(logits), {"unused": jnp.zeros(rows)}, prompt, jax.random.key(42),
                           max_len=1, eos_id=EOS_ID, temperature=temperature, top_k=top_k, top_p=top_p)
  counts = np.bincount(np.asarray(tokens[:, 0]), minlength=len(logits))
  # Independent expectation in float64: softmax over ids 1.. at the temperature, then top-k / nucleus truncation.
  probs = np.exp(np.asarray(logits[1:], np.float64) / temperature)
  probs /= probs.sum()
  order = np.argsort(-probs)
  keep = np.zeros_like(probs, bool)
  mass = 0.0
  for rank, token in enumerate(order):
    if (top_k and rank >= top_k) or mass >= top_p:
      break
    keep[token], mass = True, mass + probs[token]
  expected = np.concatenate([[0.0], np.where(keep, probs, 0.0) / probs[keep].sum()]) * rows
  assert np.all(counts[expected == 0] == 0)
  seen = expected > 0
  chi2 = np.sum((counts[seen] - expected[seen]) ** 2 / expected[seen])
  assert chi2 < 30.0, (chi2, counts, expected)  # df <= 6: p < 1e-4 for a correct sampler


# ---------------------------------------------------------------------------------------------------------------------
# The real tiny models, through `models.tokens_to_logits_fn`, against their uncached full forward pass.

SOURCES = np.array([[5, 6, 7, EOS_ID, 0, 0], [8, 9, EOS_ID, 0, 0, 0], [4, 4, 4, 4, 10, EOS_ID],
                    [10, 11, 12, 13, EOS_ID, 0]])


def _tiny_model(kind: str, seed: int = 0):
  from flax import nnx

  from transformer_jax import models

  # Pre-LN with an untied output layer gives a random model that does not just repeat one token.
  config = models.TransformerConfig.tiny(vocab_size=16, pre_norm=True, logits_via_embedding=False)
  cls = models.EncoderDecoder if kind == "encdec" else models.DecoderOnly
  return cls(config, rngs=nnx.Rngs(seed))


def _cached(model, batch: int, max_decode_len: int):
  """(tokens_to_logits, cache) of the model for the first `batch` SOURCES (encoder-decoder) or `batch` rows."""
  from transformer_jax import models

  if isinstance(model, models.EncoderDecoder):
    model.init_cache(jnp.asarray(SOURCES[:batch]), max_decode_len)
  else:
    model.init_cache(batch, max_decode_len)
  return models.tokens_to_logits_fn(model)


def _forward(model):
  """Uncached teacher-forced logits for targets int[B, L] (BOS is inserted by the model's right shift)."""
  from transformer_jax import models

  if isinstance(model, models.EncoderDecoder):
    return jax.jit(lambda targets: model(jnp.asarray(SOURCES[:targets.shape[0]]), targets))
  return jax.jit(model)


def _reference_continuations(model, prompts, *, max_len, limits=None) -> np.ndarray:
  """Uncached greedy: for each new token, a full forward pass over (prompt after BOS + tokens so far).

  prompts: int[B, P] starting with BOS, right-padded. Later positions are filled with 1 (causal, so unseen).
  """
  forward = _forward(model)
  lengths = np.count_nonzero(prompts, axis=1) - 1  # prompt tokens after BOS
  batch, rows = len(prompts), np.arange(len(prompts))
  targets = np.ones((batch, lengths.max() + max_len), np.int32)
  for row in rows:
    targets[row, :lengths[row]] = prompts[row, 1:lengths[row] + 1]
  limits = np.full(batch, max_len) if limits is None else np.minimum(limits, max_len)
  out, done = np.zeros((batch, max_len), np.int32), limits <= 0
  for step in range(max_len):
    logits = np.asarray(forward(jnp.asarray(targets)))[rows, lengths + step]
    token = np.where(done, 0, np.argmax(logits[:, 1:], axis=-1) + 1)
    out[:, step] = token
    targets[rows, lengths + step] = np.where(done, 1, token)
    done |= (token == EOS_ID) | (step + 1 >= limits)
  return out


@pytest.mark.parametrize("kind", ["encdec", "lm"])
def test_real_model_cached_logits_match_full_forward(kind):
  model = _tiny_model(kind)
  seqs = np.array([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 4], [6, 6, 8, 8, 10, 10], [7, 5, 9, 4, 11, 13]])
  expected = np.asarray(_forward(model)(jnp.asarray(seqs)))  # expected[:, t]: after BOS, seqs[:, :t]
  prompt_lens = np.array([1, 4, 2, 3])  # BOS included
  prompts = np.zeros((4, 4), np.int32)
  for row, length in enumerate(prompt_lens):
    prompts[row, :length] = [BOS_ID] + list(seqs[row, :length - 1])
  tokens_to_logits, cache = _cached(model, 4, 16)
  logits, cache = jax.jit(tokens_to_logits)(jnp.asarray(prompts), cache)
  for row, length in enumerate(prompt_lens):
    np.testing.assert_allclose(logits[row, :length], expected[row, :length], atol=1e-4)
  rows = np.arange(4)
  for step in range(2):
    logits, cache = jax.jit(tokens_to_logits)(jnp.asarray(seqs[rows, prompt_lens - 1 + step])[:, None], cache)
    np.testing.assert_allclose(logits[:, 0], expected[rows, prompt_lens + step], atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])  # seed 0: some rows end with EOS; seed 1: rows run to their limits
def test_real_encoder_decoder_greedy_beam_and_scores(seed):
  model = _tiny_model("encdec", seed)
  max_len, batch = 10, len(SOURCES)
  starts = _starts(batch)
  limits = decoding.max_lengths_from_inputs(jnp.asarray(SOURCES), offset=2)
  tokens_to_logits, cache = _cached(model, batch, max_len)
  greedy = jax.jit(lambda c: decoding.greedy_search(tokens_to_logits, c, starts, max_len=max_len, eos_id=EOS_ID,
                                                     max_lengths=limits))(cache)
  expected = _reference_continuations(model, np.full((batch, 1), BOS_ID), max_len=max_len, limits=np.asarray(limits))
  np.testing.assert_array_equal(greedy, expected)

  @functools.partial(jax.jit, static_argnames=("beam_size", "alpha"))
  def beam(cache, beam_size, alpha):
    return decoding.beam_search(tokens_to_logits, cache, starts, beam_size=beam_size, alpha=alpha, max_len=max_len,
                                eos_id=EOS_ID, max_lengths=limits)

  np.testing.assert_array_equal(beam(cache, 1, 0.0)[0][:, 0], greedy)
  alpha = 0.6
  seqs, scores = beam(cache, 3, alpha)
  # Scores agree with the uncached forward pass on the repeated sources (checks the per-beam cache gathering).
  flat = np.asarray(seqs).reshape(batch * 3, max_len)
  sources = jnp.asarray(np.repeat(SOURCES, 3, axis=0))
  logits = np.asarray(jax.jit(model)(sources, jnp.asarray(flat)), np.float64)[..., 1:]
  log_probs = logits - np.log(np.sum(np.exp(logits), axis=-1, keepdims=True))
  token_lp = np.take_along_axis(log_probs, np.maximum(flat, 1)[..., None] - 1, axis=-1)[..., 0]
  lengths = np.count_nonzero(flat, axis=1)
  expected_scores = np.sum(np.where(flat != 0, token_lp, 0.0), axis=1) / ((5 + lengths) / 6) ** alpha
  np.testing.assert_allclose(np.asarray(scores).reshape(-1), expected_scores, atol=1e-4)
  # score_sequences (one teacher-forced prefill through the cache) gives the same unnormalised scores.
  repeated = jax.tree.map(lambda x: jnp.repeat(x, 3, axis=0), cache)
  model_scores = jax.jit(lambda c: decoding.score_sequences(tokens_to_logits, c, jnp.repeat(starts, 3),
                                                            jnp.asarray(flat)))(repeated)
  np.testing.assert_allclose(model_scores, expected_scores * ((5 + lengths) / 6) ** alpha, atol=1e-4)
  # (Beam search may score below greedy on some examples: e.g. seed 1, source 2 with beam_size 3 or 4. The
  # "beam >= greedy" property is therefore tested on the fixed toy models above.)


def test_real_tokens_to_logits_does_not_mutate_its_input_cache():
  tokens_to_logits, cache = _cached(_tiny_model("lm"), 2, 8)
  before = jax.tree.map(np.asarray, cache)
  first, _ = tokens_to_logits(jnp.full((2, 1), BOS_ID), cache)
  second, _ = tokens_to_logits(jnp.full((2, 1), BOS_ID), cache)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, cache), before)
  np.testing.assert_array_equal(first, second)


def test_real_decoder_only_sampling_with_prompts_of_different_lengths():
  model = _tiny_model("lm", seed=1)
  prompts = np.array([[BOS_ID, 5, 7, 0, 0], [BOS_ID, 0, 0, 0, 0], [BOS_ID, 4, 6, 8, 10], [BOS_ID, 9, 0, 0, 0]])
  max_len = 8
  tokens_to_logits, cache = _cached(model, len(prompts), prompts.shape[1] + max_len)

  @jax.jit
  def run(cache, rng, temperature):
    return decoding.sample(tokens_to_logits, cache, jnp.asarray(prompts), rng, max_len=max_len, eos_id=EOS_ID,
                           temperature=temperature, top_k=5, top_p=0.9)

  np.testing.assert_array_equal(run(cache, jax.random.key(0), 0.0),
                                _reference_continuations(model, prompts, max_len=max_len))
  a, b = run(cache, jax.random.key(1), 1.0), run(cache, jax.random.key(1), 1.0)
  np.testing.assert_array_equal(a, b)
  _assert_zero_after_eos(a)
