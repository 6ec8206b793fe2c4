"""Use the pure attention function and masks alone, with no Flax: a one-layer causal attention model in plain
JAX + Optax that learns to output, at each position, the token it saw two steps earlier.

  python examples/pure_attention.py --steps 300
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

from transformer_jax import attention, masks, positions

VOCAB, D, HEADS, LENGTH = 16, 64, 4, 12


def init(key: jax.Array) -> dict[str, jax.Array]:
  k = jax.random.split(key, 5)
  normal = lambda key, shape: jax.random.normal(key, shape) * shape[0] ** -0.5
  return {"embed": normal(k[0], (VOCAB, D)), "q": normal(k[1], (D, D)), "k": normal(k[2], (D, D)),
          "v": normal(k[3], (D, D)), "out": normal(k[4], (D, VOCAB))}


def forward(params: dict[str, jax.Array], ids: jax.Array) -> jax.Array:
  """``int32[batch, len]`` -> logits ``[batch, len, vocab]``; attention over RoPE-rotated heads, causal+padding."""
  pos = jnp.broadcast_to(jnp.arange(ids.shape[1]), ids.shape)
  x = params["embed"][ids]
  q, k, v = (attention.split_heads(x @ params[n], HEADS) for n in ("q", "k", "v"))
  q, k = positions.apply_rope(q, pos), positions.apply_rope(k, pos)
  valid = ids != 0
  mask = masks.combine_masks(masks.causal_mask(ids.shape[1]), masks.padding_mask(valid, valid))
  return attention.merge_heads(attention.dot_product_attention(q, k, v, mask)) @ params["out"]


def main(steps: int) -> float:
  params = init(jax.random.key(0))
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def train_step(params, opt_state, ids):
    targets = jnp.pad(ids, ((0, 0), (2, 0)))[:, :-2]  # the token two positions back (0 = nothing to copy)
    weights = (targets != 0) & (ids != 0)

    def loss_fn(params):
      logits = forward(params, ids)
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
      return (losses * weights).sum() / weights.sum(), (logits.argmax(-1) == targets)

    (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss, (correct * weights).sum() / weights.sum()

  rng = np.random.default_rng(0)
  for step in range(1, steps + 1):
    ids = jnp.asarray(rng.integers(1, VOCAB, (32, LENGTH)), jnp.int32)
    params, opt_state, loss, accuracy = train_step(params, opt_state, ids)
    if step % 50 == 0 or step == steps:
      print(f"step {step}: loss {float(loss):.3f} accuracy {float(accuracy):.3f}")
  return float(accuracy)


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--steps", type=int, default=300)
  main(parser.parse_args().steps)
