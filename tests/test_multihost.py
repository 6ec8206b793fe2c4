"""Real multi-process training: 2 processes x 2 CPU devices joined by ``jax.distributed.initialize`` on a loopback
port run ``train_and_evaluate`` (per-host data, FSDP across the processes, tensor parallelism within each, all
processes saving checkpoints) and match one process on 4 devices; the checkpoint restores in a single process.
"""

import json
import socket
import subprocess
import time

import numpy as np
import pytest
from test_sharding import run_worker, worker

TIMEOUT = 600


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def run_processes(workdir, logdir) -> list[str]:
  """Runs the 2 processes of ``train_and_evaluate`` to completion; their outputs (stdout and stderr).

  If one fails (or ``TIMEOUT`` passes), the other is stopped rather than left waiting for its peer.
  """
  port, logs = free_port(), [logdir / f"process_{i}.log" for i in range(2)]
  procs = []
  for i, log in enumerate(logs):
    with open(log, "w", encoding="utf-8") as f:
      procs.append(subprocess.Popen(**worker("process", str(i), str(port), str(workdir), devices=2), stdout=f,
                                    stderr=subprocess.STDOUT))
  deadline = time.monotonic() + TIMEOUT
  while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
    if any(p.poll() not in (None, 0) for p in procs):
      break
    time.sleep(0.5)
  for p in procs:
    if p.poll() is None:
      p.kill()
      p.wait()
  outputs = [log.read_text() for log in logs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i} failed ({p.returncode}):\n{out[-6000:]}"
  return outputs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Outputs of both processes, their ``RESULT`` records, the workdir and the single-process reference."""
  workdir, logdir = tmp_path_factory.mktemp("multihost"), tmp_path_factory.mktemp("logs")
  outputs = run_processes(workdir, logdir)
  records = [json.loads(line.removeprefix("RESULT ")) for out in outputs for line in out.splitlines()
             if line.startswith("RESULT ")]
  reference = logdir / "reference.json"
  run_worker("reference", str(workdir), str(reference), devices=4, timeout=TIMEOUT)
  return {"outputs": outputs, "records": records, "workdir": workdir, "reference": json.loads(reference.read_text())}


def test_both_processes_see_4_devices_and_report_the_single_process_loss(runs):
  assert [(r["process_index"], r["device_count"], r["local_device_count"]) for r in runs["records"]] == [
      (0, 4, 2), (1, 4, 2)]
  losses = [r["final"]["loss"] for r in runs["records"]]
  assert losses[0] == losses[1]
  np.testing.assert_allclose(losses[0], runs["reference"]["losses"][-1], rtol=1e-5)


def test_every_step_matches_the_single_process_run(runs):
  lines = [json.loads(line) for line in (runs["workdir"] / "metrics.jsonl").read_text().splitlines()]
  train = [m for m in lines if "loss" in m]
  assert [m["step"] for m in train] == [1, 2, 3, 4, 5, 6]  # each once: only process 0 writes metrics
  np.testing.assert_allclose([m["loss"] for m in train], runs["reference"]["losses"], rtol=1e-5)


def test_only_process_0_prints_progress(runs):
  printed = [[line for line in out.splitlines() if line.startswith(("step ", "eval at", "Finished."))]
             for out in runs["outputs"]]
  assert len(printed[0]) == 6 + 1 + 1 and printed[1] == []


def test_checkpoint_of_the_2_process_run_restores_in_one_process(runs):
  reference = runs["reference"]
  assert reference["restored_step"] == 6
  assert reference["restored_vs_reference"] < 1e-5  # the 2-process params equal the 1-process params
  assert reference["restored_4_vs_1"] == 0.0  # onto (4, 1, 1) and onto 1 device alike
  # every process's data position is saved, not only process 0's
  assert reference["data_positions"] == {"processes": reference["reference_positions"]}
