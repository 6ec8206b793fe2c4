"""Model-agnostic autoregressive decoding: greedy search, beam search and sampling.

Every function is driven by a callback

    tokens_to_logits(ids: int32[B, T], cache) -> (logits: float32[B, T, V], new_cache)

where `cache` is any pytree whose leaves all have leading dimension B, and which the callback must not mutate (it
returns a new one). Id 0 in `ids` means "no token": the model does not advance that row's position for it. T is the prompt length for the one-pass prefill and 1 for a generation step.
The cache must have room for the prompt (or start token) plus `max_len` generated tokens.

All functions are pure, use `lax.while_loop` with an early exit once every sequence (or beam) has finished, and can be
wrapped in `jax.jit` with `tokens_to_logits` and the integer keyword arguments static. To keep parameters out of the
compiled program as constants, jit a wrapper that takes the parameters as an argument and builds `tokens_to_logits`
inside it.

Generated sequences hold the tokens after the start token, EOS included, and 0 after EOS. The padding id 0 is never
generated: it is excluded from the model's distribution (also when scoring).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from transformer_jax.tokens import PAD_ID

TokensToLogits = Callable[[jax.Array, Any], tuple[jax.Array, Any]]
NEG_INF = -1.0e7  # finite "minus infinity" for log-probabilities (avoids inf - inf = nan)


def length_penalty(length: jax.Array | int, alpha: float) -> jax.Array:
  """GNMT length penalty ((5 + length) / 6) ** alpha; beam scores are log-probabilities divided by it."""
  return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def max_lengths_from_inputs(inputs: jax.Array, offset: int = 50) -> jax.Array:
  """Per-example output length limits as in the paper: input length + offset.

  inputs: int32[B, L], 0-padded. Returns int32[B].
  """
  return jnp.sum(inputs != 0, axis=1, dtype=jnp.int32) + offset


def _without_pad(logits: jax.Array) -> jax.Array:
  """float32 logits [..., V] with the padding id 0 made (practically) impossible."""
  return logits.astype(jnp.float32).at[..., PAD_ID].set(NEG_INF)


def _log_probs(logits: jax.Array) -> jax.Array:
  """float32 log-softmax over the vocabulary with the padding id 0 excluded (it is never a real token)."""
  return jax.nn.log_softmax(_without_pad(logits))


def score_sequences(tokens_to_logits: TokensToLogits, cache: Any, start_ids: jax.Array,
                    sequences: jax.Array) -> jax.Array:
  """Sum of log-probabilities of `sequences` under the model, teacher-forced in one call through the cache.

  start_ids: int32[B]; sequences: int32[B, L] (tokens after the start token, 0 after EOS). Returns float32[B].
  """
  ids = jnp.concatenate([start_ids[:, None], sequences[:, :-1]], axis=1)
  logits, _ = tokens_to_logits(ids, cache)
  token_log_probs = jnp.take_along_axis(_log_probs(logits), sequences[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(sequences != 0, token_log_probs, 0.0), axis=1)


# --------------------------------------------------------------------------------------------------------------------
# Greedy search and sampling share one loop, differing only in how a token is picked from the logits.


class _State(NamedTuple):
  step: jax.Array  # int32[]: index of the next token to write
  tokens: jax.Array  # int32[B, max_len]
  done: jax.Array  # bool[B]
  cache: Any


def _emit(state: _State, logits: jax.Array, pick, eos_id: int, limits: jax.Array) -> _State:
  """Picks one token per row from logits float32[B, V] and records it (0 for finished rows)."""
  token = jnp.where(state.done, 0, pick(logits, state.step))
  done = state.done | (token == eos_id) | (state.step + 1 >= limits)
  return _State(state.step + 1, state.tokens.at[:, state.step].set(token), done, state.cache)


def _decode(tokens_to_logits: TokensToLogits, cache: Any, prompt: jax.Array, pick, *, max_len: int, eos_id: int,
            limits: jax.Array) -> jax.Array:
  """Prefills from prompt int32[B, P] (right-padded) in one call, then decodes; returns int32[B, max_len]."""
  batch = prompt.shape[0]
  logits, cache = tokens_to_logits(prompt, cache)
  last = jnp.sum(prompt != 0, axis=1) - 1
  start = _State(jnp.int32(0), jnp.zeros((batch, max_len), jnp.int32), limits <= 0, cache)
  state = _emit(start, logits[jnp.arange(batch), last], pick, eos_id, limits)

  def cond(s: _State) -> jax.Array:
    return (s.step < max_len) & ~jnp.all(s.done)

  def body(s: _State) -> _State:
    logits, cache = tokens_to_logits(s.tokens[:, s.step - 1, None], s.cache)
    return _emit(s._replace(cache=cache), logits[:, -1], pick, eos_id, limits)

  return lax.while_loop(cond, body, state).tokens


def _limits(batch: int, max_len: int, max_lengths: jax.Array | None) -> jax.Array:
  """Per-row length limits int32[B]: max_lengths clipped to max_len (max_len where not given)."""
  if max_lengths is None:
    return jnp.full((batch,), max_len, jnp.int32)
  return jnp.minimum(max_lengths, max_len).astype(jnp.int32)


def greedy_search(tokens_to_logits: TokensToLogits, cache: Any, start_ids: jax.Array, *, max_len: int, eos_id: int,
                  max_lengths: jax.Array | None = None) -> jax.Array:
  """Greedy decoding with the cache, one token per step.

  start_ids: int32[B] (e.g. BOS); max_lengths: optional int32[B] per-example limits (see `max_lengths_from_inputs`).
  Returns int32[B, max_len]: tokens after the start token, EOS included, 0 after EOS or past a row's limit.
  """
  limits = _limits(start_ids.shape[0], max_len, max_lengths)

  def pick(logits: jax.Array, step: jax.Array) -> jax.Array:
    return jnp.argmax(_without_pad(logits), axis=-1)

  return _decode(tokens_to_logits, cache, start_ids[:, None], pick, max_len=max_len, eos_id=eos_id, limits=limits)


def filter_logits(logits: jax.Array, *, top_k: int = 0, top_p: float | jax.Array = 1.0) -> jax.Array:
  """Sets logits outside the top-k / nucleus (top-p) set to -inf. logits: float32[B, V].

  top_k = 0 disables top-k; top_p = 1 disables nucleus filtering; the most likely token is always kept.
  """
  if top_k > 0:
    kth = lax.top_k(logits, top_k)[0][:, -1:]
    logits = jnp.where(logits < kth, -jnp.inf, logits)
  sorted_logits = jnp.sort(logits, axis=-1)[..., ::-1]
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  threshold = jnp.min(jnp.where(mass_before < top_p, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  threshold = jnp.where(top_p >= 1.0, -jnp.inf, threshold)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def sample(tokens_to_logits: TokensToLogits, cache: Any, prompt: jax.Array, rng: jax.Array, *, max_len: int,
           eos_id: int, temperature: float | jax.Array = 1.0, top_k: int = 0,
           top_p: float | jax.Array = 1.0) -> jax.Array:
  """Samples continuations of prompts with temperature, top-k and nucleus (top-p) filtering.

  prompt: int32[B, P], right-padded with 0, starting with the start token (BOS); rows may have different lengths.
  The cache is prefilled from the whole prompt in one call; generation starts from the logits of each row's last
  prompt token. rng: a typed key (`jax.random.key`); the same key gives the same samples. temperature 0 = greedy.
  temperature and top_p may be traced; top_k must be static. Returns int32[B, max_len] (0 after EOS).
  """
  safe_temperature = jnp.where(temperature > 0, temperature, 1.0)

  def pick(logits: jax.Array, step: jax.Array) -> jax.Array:
    logits = filter_logits(_without_pad(logits) / safe_temperature, top_k=top_k, top_p=top_p)
    sampled = jax.random.categorical(jax.random.fold_in(rng, step), logits, axis=-1)
    return jnp.where(temperature > 0, sampled, jnp.argmax(logits, axis=-1))

  limits = _limits(prompt.shape[0], max_len, None)
  return _decode(tokens_to_logits, cache, prompt, pick, max_len=max_len, eos_id=eos_id, limits=limits)


# --------------------------------------------------------------------------------------------------------------------
# Beam search, with alive / finished bookkeeping as in Flax's WMT example.


class _BeamState(NamedTuple):
  step: jax.Array  # int32[]: index of the next token to write
  last: jax.Array  # int32[B, K]: token each alive beam feeds next
  alive_seqs: jax.Array  # int32[B, K, L]
  alive_log_probs: jax.Array  # float32[B, K]
  finished_seqs: jax.Array  # int32[B, K, L], best first
  finished_scores: jax.Array  # float32[B, K], length-penalised, NEG_INF for empty slots
  done: jax.Array  # bool[B]
  cache: Any  # leaves with leading dimension B * K (beams of an example adjacent)


def _take_beams(x: jax.Array, indices: jax.Array) -> jax.Array:
  """Gathers beams: x [B, N, ...], indices int32[B, M] -> [B, M, ...]."""
  return jax.vmap(lambda row, idx: row[idx])(x, indices)


def _gather_cache(cache: Any, beam_indices: jax.Array) -> Any:
  """Reorders cache leaves [B*K, ...] so that beam k of example b comes from beam beam_indices[b, k]."""
  batch, beams = beam_indices.shape
  flat = (jnp.arange(batch)[:, None] * beams + beam_indices).reshape(-1)
  return jax.tree.map(lambda x: x[flat], cache)


def _top_k_by(scores: jax.Array, k: int, *arrays: jax.Array) -> tuple[jax.Array, ...]:
  """The k best entries per row by scores [B, N] (best first), with the matching beams of each array [B, N, ...]."""
  top_scores, indices = lax.top_k(scores, k)
  return (top_scores, indices) + tuple(_take_beams(a, indices) for a in arrays)


def _beam_step(tokens_to_logits: TokensToLogits, state: _BeamState, *, alpha: float, eos_id: int,
               limits: jax.Array) -> _BeamState:
  """Extends every alive beam by one token, keeping the K best alive and the K best finished hypotheses."""
  batch, beams = state.last.shape
  logits, cache = tokens_to_logits(state.last.reshape(-1, 1), state.cache)
  vocab = logits.shape[-1]
  log_probs = _log_probs(logits[:, -1]).reshape(batch, beams, vocab)
  log_probs = log_probs + state.alive_log_probs[..., None]
  # 2K candidates: enough that K of them do not end with EOS.
  cand_log_probs, cand_flat = lax.top_k(log_probs.reshape(batch, beams * vocab), 2 * beams)
  cand_beams, cand_tokens = cand_flat // vocab, cand_flat % vocab
  cand_seqs = _take_beams(state.alive_seqs, cand_beams).at[:, :, state.step].set(cand_tokens)
  length = state.step + 1
  ending = (cand_tokens == eos_id) | (length >= limits)[:, None]

  alive_log_probs, alive_idx, alive_seqs, alive_tokens = _top_k_by(
      jnp.where(ending, NEG_INF, cand_log_probs), beams, cand_seqs, cand_tokens)

  # A hypothesis finishes only if it ranks among the K best candidates (so beam size 1 is exactly greedy at alpha 0).
  finishes = ending & (jnp.arange(2 * beams) < beams)
  new_scores = jnp.where(finishes, cand_log_probs / length_penalty(length, alpha), NEG_INF)
  finished_scores, _, finished_seqs = _top_k_by(
      jnp.concatenate([state.finished_scores, new_scores], axis=1), beams,
      jnp.concatenate([state.finished_seqs, cand_seqs], axis=1))
  finished_scores = jnp.where(state.done[:, None], state.finished_scores, finished_scores)
  finished_seqs = jnp.where(state.done[:, None, None], state.finished_seqs, finished_seqs)

  # Early stopping: the best alive beam cannot beat the worst finished one (its log-prob can only decrease, and
  # its penalty is at most the largest one among its possible final lengths).
  best_possible = alive_log_probs[:, 0] / jnp.maximum(length_penalty(length + 1, alpha),
                                                      length_penalty(limits, alpha))
  done = state.done | (length >= limits) | (finished_scores[:, -1] >= best_possible)
  last = jnp.where(done[:, None], 0, alive_tokens)
  cache = _gather_cache(cache, jnp.take_along_axis(cand_beams, alive_idx, axis=1))
  return _BeamState(length, last, alive_seqs, alive_log_probs, finished_seqs, finished_scores, done, cache)


def beam_search(tokens_to_logits: TokensToLogits, cache: Any, start_ids: jax.Array, *, beam_size: int, alpha: float,
                max_len: int, eos_id: int, max_lengths: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Beam search with the GNMT length penalty, the cache repeated per beam and gathered with the chosen beams.

  start_ids: int32[B]; the cache is given for batch B (leaves [B, ...]) and repeated to B * beam_size inside.
  Hypotheses end with EOS or at their example's limit (max_lengths int32[B], clipped to max_len); their score is
  sum(log p) / ((5 + length) / 6) ** alpha with the length counting EOS. Needs vocab size >= 2 * beam_size.
  Returns (sequences int32[B, beam_size, max_len], scores float32[B, beam_size]), best first, 0 after EOS.
  """
  batch = start_ids.shape[0]
  limits = _limits(batch, max_len, max_lengths)
  state = _BeamState(
      step=jnp.int32(0),
      last=jnp.repeat(start_ids[:, None], beam_size, axis=1),
      alive_seqs=jnp.zeros((batch, beam_size, max_len), jnp.int32),
      # All beams start identical: only the first one is expanded at the first step.
      alive_log_probs=jnp.tile(jnp.array([0.0] + [NEG_INF] * (beam_size - 1)), (batch, 1)),
      finished_seqs=jnp.zeros((batch, beam_size, max_len), jnp.int32),
      finished_scores=jnp.full((batch, beam_size), NEG_INF),
      done=limits <= 0,
      cache=jax.tree.map(lambda x: jnp.repeat(x, beam_size, axis=0), cache),
  )

  def cond(s: _BeamState) -> jax.Array:
    return (s.step < max_len) & ~jnp.all(s.done)

  def body(s: _BeamState) -> _BeamState:
    return _beam_step(tokens_to_logits, s, alpha=alpha, eos_id=eos_id, limits=limits)

  final = lax.while_loop(cond, body, state)
  return final.finished_seqs, final.finished_scores

