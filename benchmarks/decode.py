"""Decoding speed: greedy with the KV cache vs. without it, and beam search, in generated tokens per second.

    python benchmarks/decode.py [--quick] [--models small,base] [--batch 1] [--tokens 256] [--peer_steps 64]
                                [--json_out FILE]

The peer is the uncached recomputation baseline: greedy decoding that, for every new token, reruns the decoder's
full forward pass (all positions, logits included) over the whole fixed-size buffer of ``--tokens`` target positions
(the encoder output is computed once), jitted as one ``lax.fori_loop``: what decoding costs without a KV cache. Every
peer step does the same work (the buffer never changes size), so the peer is timed over its first ``--peer_steps``
steps (default 64; ``--peer_steps 256`` times all of them) and its tokens/s is that of a full run. The cached rows use
:mod:`transformer_jax.decoding` (one token per step, cache of ``--tokens`` + 1 positions), as generation does. EOS
is masked out so that every method generates exactly ``--tokens`` tokens; beam search runs ``--beam_size`` beams
and counts the tokens of the returned sequence (``batch * tokens``), like greedy.

Models have random weights (speed does not depend on them): ``small`` is the default training config's model
(d_model 128, 2+2 layers, 4 heads, d_ff 512) with an 8k vocabulary, ``base`` the paper's base model (d_model 512,
6+6 layers, 8 heads, d_ff 2048, 37k vocabulary). The machine's float32 matmul peak (a jitted 2048^3 ``jnp.dot``) is
measured and reported, with the load average (other processes slow every row), so that numbers from different
machines can be compared. Every function is compiled ahead of time; timings are the best of ``--repeats`` runs (one
for the peer).
"""

# pylint: disable=wrong-import-position  (the repository root goes on sys.path first)
from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import best_time, machine_info, write_json
from transformer_jax import decoding
from transformer_jax.config_defaults import model_defaults
from transformer_jax.models import EncoderDecoder, TransformerConfig, tokens_to_logits_fn
from transformer_jax.tokens import BOS_ID, EOS_ID, PAD_ID

SOURCE_LEN = 32
MODELS = {
    "small": lambda: TransformerConfig(vocab_size=8000, **{**model_defaults().to_dict(), "dropout_rate": 0.0}),
    "base": lambda: TransformerConfig.base(dropout_rate=0.0),
}
PEER = ("uncached: greedy decoding that reruns the decoder's full forward pass (logits included) over the whole "
        "fixed-size target buffer for every new token (encoder output computed once), jitted")


def _no_eos(logits: jax.Array) -> jax.Array:
  """Logits with EOS (and padding) impossible, so that every method decodes the full length."""
  return logits.at[..., EOS_ID].set(decoding.NEG_INF).at[..., PAD_ID].set(decoding.NEG_INF)


@functools.partial(jax.jit, static_argnames=("graphdef", "tokens", "beam_size"))
def cached(params: nnx.State, inputs: jax.Array, *, graphdef: nnx.GraphDef, tokens: int,
           beam_size: int) -> jax.Array:
  """Greedy (beam_size 1) or beam search with the KV cache: int32[batch, tokens]."""
  model = nnx.merge(graphdef, params)
  model.init_cache(inputs, tokens + 1)
  tokens_to_logits, cache = tokens_to_logits_fn(model)

  def no_eos_tokens_to_logits(ids, cache):
    logits, cache = tokens_to_logits(ids, cache)
    return _no_eos(logits), cache

  start = jnp.full((inputs.shape[0],), BOS_ID, jnp.int32)
  if beam_size == 1:
    return decoding.greedy_search(no_eos_tokens_to_logits, cache, start, max_len=tokens, eos_id=EOS_ID)
  sequences, _ = decoding.beam_search(no_eos_tokens_to_logits, cache, start, beam_size=beam_size, alpha=0.6,
                                      max_len=tokens, eos_id=EOS_ID)
  return sequences[:, 0]


@functools.partial(jax.jit, static_argnames=("graphdef", "tokens", "steps"))
def uncached(params: nnx.State, inputs: jax.Array, *, graphdef: nnx.GraphDef, tokens: int, steps: int) -> jax.Array:
  """Greedy without a cache: token t < steps comes from a decoder pass over the whole buffer int32[batch, tokens]."""
  model = nnx.merge(graphdef, params)
  encoded = model.encode(inputs)
  inputs_mask = (inputs != 0).astype(jnp.int32)
  segmentation = jnp.ones((inputs.shape[0], tokens), jnp.int32)  # one segment: unwritten slots are not padding

  def step(t, buffer):
    logits = model.decode(encoded, inputs_mask, buffer, segmentation)
    return buffer.at[:, t].set(jnp.argmax(_no_eos(logits[:, t]), axis=-1).astype(jnp.int32))

  return jax.lax.fori_loop(0, steps, step, jnp.zeros((inputs.shape[0], tokens), jnp.int32))[:, :steps]


def bench_model(name: str, *, batch: int, tokens: int, peer_steps: int, beam_size: int, repeats: int) -> list[dict]:
  """The three rows (cached greedy, uncached greedy, cached beam) for one model."""
  cfg = MODELS[name]()
  graphdef, params = nnx.split(EncoderDecoder(cfg, rngs=nnx.Rngs(0)))
  num_params = sum(x.size for x in jax.tree.leaves(params))
  inputs = jax.random.randint(jax.random.key(1), (batch, SOURCE_LEN), 4, cfg.vocab_size, jnp.int32)
  runs = {  # method: (jitted function, static arguments, timed runs)
      "greedy, KV cache": (cached, dict(tokens=tokens, beam_size=1), repeats),
      "greedy, no cache (peer)": (uncached, dict(tokens=tokens, steps=peer_steps), 1),
      f"beam {beam_size}, KV cache": (cached, dict(tokens=tokens, beam_size=beam_size), repeats),
  }
  rows, outputs = [], {}
  for method, (jitted, static, reps) in runs.items():
    seconds, outputs[method] = best_time(jitted, (params, inputs), dict(graphdef=graphdef, **static), reps)
    timed = outputs[method].shape[1]  # tokens decoded in the timed run (peer_steps for the peer)
    rows.append(dict(model=name, params_m=round(num_params / 1e6, 1), batch=batch, method=method, tokens=timed,
                     seconds=round(seconds, 4), tokens_per_s=round(batch * timed / seconds, 1)))
    print(f"  {name}: {method}: {seconds:.3f} s", file=sys.stderr, flush=True)
  # Same tokens from both greedy methods (up to float rounding on near-ties, after which sequences diverge).
  agree = np.mean(np.asarray(outputs["greedy, KV cache"])[:, :peer_steps]
                  == np.asarray(outputs["greedy, no cache (peer)"]))
  peer = rows[1]["tokens_per_s"]
  for row in rows:
    row["speedup_vs_peer"] = round(row["tokens_per_s"] / peer, 1)
    row["greedy_tokens_agree"] = round(float(agree), 4)
  return rows


def table(rows: list[dict]) -> str:
  """The results as a fixed-width text table."""
  head = f"{'model':6} {'params':>7} {'batch':>5} {'method':26} {'tokens':>6} {'seconds':>8} {'tokens/s':>9} " \
         f"{'vs peer':>8}"
  lines = [head, "-" * len(head)]
  lines += [f"{r['model']:6} {r['params_m']:>6}M {r['batch']:>5} {r['method']:26} {r['tokens']:>6} "
            f"{r['seconds']:>8.3f} {r['tokens_per_s']:>9.1f} {r['speedup_vs_peer']:>7.1f}x" for r in rows]
  return "\n".join(lines)


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--models", default="small,base", help=f"Comma-separated, among {sorted(MODELS)}.")
  p.add_argument("--batch", type=int, default=1)
  p.add_argument("--tokens", type=int, default=256, help="Generated target tokens (and the peer's buffer).")
  p.add_argument("--peer_steps", type=int, default=64, help="Peer steps timed (each costs the same; <= tokens).")
  p.add_argument("--beam_size", type=int, default=4)
  p.add_argument("--repeats", type=int, default=2, help="Timed runs of the cached methods (the peer runs once).")
  p.add_argument("--quick", action="store_true", help="The small model only, one timed run each.")
  p.add_argument("--json_out", default=None, help="Also write the JSON report to this file.")
  args = p.parse_args(argv)
  models = ["small"] if args.quick else args.models.split(",")
  repeats = 1 if args.quick else args.repeats
  peer_steps = min(args.peer_steps, args.tokens)
  report = {
      "machine": machine_info(),
      "settings": {"batch": args.batch, "tokens": args.tokens, "peer_steps": peer_steps, "source_len": SOURCE_LEN,
                   "beam_size": args.beam_size, "repeats": repeats,
                   "weights": "random (speed does not depend on them)"},
      "peer": PEER,
      "results": [row for name in models for row in bench_model(
          name, batch=args.batch, tokens=args.tokens, peer_steps=peer_steps, beam_size=args.beam_size,
          repeats=repeats)],
  }
  machine = report["machine"]
  print(f"float32 matmul peak: {machine['float32_matmul_peak_gflops']} GFLOP/s on {machine['device']} "
        f"({machine['cpus']} CPUs, load average {machine['load_average_1min']})\npeer = {PEER}\n")
  print(table(report["results"]))
  for row in (r for r in report["results"] if r["method"] == "greedy, KV cache"):
    print(f"{row['model']}: greedy with and without the cache agree on {100 * row['greedy_tokens_agree']:.1f}% of "
          f"the peer's tokens")
  print()
  write_json(report, args.json_out)
  return report


if __name__ == "__main__":
  main()
