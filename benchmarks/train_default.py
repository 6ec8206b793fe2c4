"""The default run (``python train.py``), measured: wall time, throughput, model FLOP utilisation, final accuracy.

    python benchmarks/train_default.py [--workdir DIR] [--steps N] [--json_out FILE]

Trains ``configs/default.py`` from scratch (the workdir is emptied first) exactly as ``python train.py`` does, then
reports the wall time of the whole run (data, compilation, training, evaluation, checkpoints), training steps/s and
tokens/s, and the SCAN test exact match. The peer is the machine itself: the train step's FLOPs (XLA's cost analysis
of the compiled step) times steps/s, as a fraction of the measured float32 matmul peak (model FLOP utilisation).
"""

# pylint: disable=wrong-import-position  (the repository root goes on sys.path first)
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import machine_info, write_json
from transformer_jax import sharding, train_lib

PEER = "the machine's measured float32 matmul peak (model FLOP utilisation of the compiled train step)"


def default_config(steps: int | None):
  sys.path.insert(0, os.path.join(ROOT, "configs"))
  import default  # pylint: disable=import-outside-toplevel

  config = default.get_config()
  if steps:
    config.update(num_train_steps=steps, eval_every_steps=steps, checkpoint_every_steps=steps)
  return config


def step_flops(exp: train_lib.Experiment, state: train_lib.TrainState) -> float:
  """FLOPs of one compiled train step, from XLA's cost analysis (on a peeked batch: the data position is kept)."""
  position = exp.datasets.train.get_state()
  batch = sharding.global_batch(next(exp.datasets.train), exp.mesh)
  exp.datasets.train.set_state(position)
  return float(exp.train_step.lower(state, batch).compile().cost_analysis()["flops"])


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", default="/tmp/transformer_jax_bench_default")
  p.add_argument("--steps", type=int, default=None, help="Override num_train_steps (default: the config's).")
  p.add_argument("--json_out", default=None)
  args = p.parse_args(argv)
  shutil.rmtree(args.workdir, ignore_errors=True)
  config = default_config(args.steps)
  machine = machine_info()
  start = time.perf_counter()
  exp, state = train_lib.setup(config, args.workdir)
  flops = step_flops(exp, state)
  with train_lib.StopOnSigterm() as stop:
    train_lib.train_loop(exp, state, stop)
  exp.ckpt.close()
  exp.writer.close()
  wall = time.perf_counter() - start
  with open(os.path.join(args.workdir, "metrics.jsonl"), encoding="utf-8") as f:
    records = [json.loads(line) for line in f]
  train = [r for r in records if "steps_per_sec" in r]
  train = train[1:] or train  # the first window includes compilation
  steps_per_sec = sum(r["steps_per_sec"] for r in train) / len(train)
  tokens_per_sec = sum(r["tokens_per_sec"] for r in train) / len(train)
  final = [r for r in records if "exact_match" in r][-1]
  result = {"steps": config.num_train_steps, "wall_seconds": round(wall, 1),
            "steps_per_sec": round(steps_per_sec, 2), "tokens_per_sec": round(tokens_per_sec),
            "step_gflop": round(flops / 1e9, 2),
            "mfu": round(flops * steps_per_sec / (machine["float32_matmul_peak_gflops"] * 1e9), 3),
            "exact_match": round(final["exact_match"], 4), "bleu": round(final["bleu"], 2),
            "eval_examples": min(config.decode.num_eval_examples, exp.datasets.num_eval_examples)}
  report = {"machine": machine, "peer": PEER, "config": "configs/default.py", "result": result}
  print(f"\nfloat32 matmul peak: {machine['float32_matmul_peak_gflops']} GFLOP/s ({machine['cpus']} CPUs, "
        f"load average {machine['load_average_1min']}); peer = {PEER}")
  print(" | ".join(f"{k} {v}" for k, v in result.items()))
  write_json(report, args.json_out)
  return report


if __name__ == "__main__":
  main()
