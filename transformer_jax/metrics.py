"""Training telemetry: a progress line, TensorBoard events and ``metrics.jsonl`` in the workdir.

Only process 0 writes; other processes get a writer that does nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Mapping

import numpy as np


def _scalar(value: Any) -> float | int:
  value = np.asarray(value)
  return value.item() if value.dtype.kind in "iu" else float(value)


class MetricsWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` (one JSON object per call, with ``step``) and TensorBoard."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    if enabled:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, Any], texts: Mapping[str, str] | None = None) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), **{k: _scalar(v) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(record) + "\n")
    self._jsonl.flush()
    for key, value in record.items():
      if key != "step":
        self._tb.add_scalar(key, value, step)
    for key, text in (texts or {}).items():
      self._tb.add_text(key, text, step)
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def format_duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
  """Throughput and ETA between calls of :meth:`update`: steps/s, tokens/s, time left."""

  def __init__(self, start_step: int, total_steps: int, enabled: bool = True):
    self.total_steps = total_steps
    self.enabled = enabled
    self._last_step, self._last_time = start_step, time.perf_counter()

  def update(self, step: int, tokens: float) -> dict[str, float]:
    """Rates since the previous call; ``tokens`` is the number of real tokens processed since then."""
    now = time.perf_counter()
    elapsed = max(now - self._last_time, 1e-9)
    steps_per_sec = (step - self._last_step) / elapsed
    self._last_step, self._last_time = step, now
    return {"steps_per_sec": steps_per_sec, "tokens_per_sec": tokens / elapsed,
            "eta_seconds": (self.total_steps - step) / max(steps_per_sec, 1e-9)}

  def print(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    m = {k: _scalar(v) for k, v in metrics.items()}
    print(f"step {step}/{self.total_steps} | loss {m['loss']:.4f} | acc {m['accuracy']:.3f} | "
          f"lr {m['learning_rate']:.2e} | {m['steps_per_sec']:.2f} steps/s | {m['tokens_per_sec']:,.0f} tok/s | "
          f"ETA {format_duration(m['eta_seconds'])}", file=sys.stdout, flush=True)
