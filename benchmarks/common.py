"""Shared benchmark helpers: timing of compiled functions and the machine's measured matmul peak."""

from __future__ import annotations

import json
import os
import platform
import time

import jax
import jax.numpy as jnp


def best_time(jitted, args: tuple, static: dict, repeats: int) -> tuple[float, jax.Array]:
  """Seconds of the fastest of ``repeats`` runs of ``jitted(*args, **static)`` and its output; compiled ahead of
  time (``static``: its static keyword arguments), so that no run includes compilation."""
  compiled = jitted.lower(*args, **static).compile()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return min(times), out


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of the default device: a jitted n x n x n ``jnp.dot``."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  return 2 * n**3 / best_time(jax.jit(jnp.dot), (a, a), {}, repeats)[0] / 1e9


def machine_info() -> dict:
  """Where the numbers were measured: platform, CPUs, device, JAX version, load and the float32 matmul peak."""
  return {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
          "device": str(jax.devices()[0]), "jax": jax.__version__, "load_average_1min": round(os.getloadavg()[0], 2),
          "float32_matmul_peak_gflops": round(matmul_peak_gflops(), 1)}


def write_json(report: dict, path: str | None) -> None:
  """Prints the report as JSON, and also writes it to ``path`` when given."""
  print(json.dumps(report, indent=2))
  if path:
    with open(path, "w", encoding="utf-8") as f:
      json.dump(report, f, indent=2)
