"""Orbax checkpoints of the train state, the data iterator position and the model's identity.

Saves are atomic (Orbax writes to a temporary folder and renames it), so a crash or SIGTERM during a save
never corrupts the last good checkpoint. Restores take target shardings, so a checkpoint written on one mesh
restores onto any other mesh shape or device count.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
  """``CheckpointManager`` over ``workdir/<name>`` with three items: ``state`` (the train-state pytree),
  ``data`` (the iterator position, JSON) and ``meta`` (model config and objective, JSON)."""

  def __init__(self, workdir: str, *, name: str = "checkpoints", max_to_keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), name)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=not read_only, read_only=read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state),
                                                    meta=ocp.args.JsonSave(meta)))

  def meta(self, step: int) -> dict:
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, step: int, target: Any, shardings: Any, meta: dict | None = None) -> tuple[Any, dict]:
    """Restores ``(state, data_state)`` of ``step`` onto ``shardings`` (any mesh).

    Raises ``ValueError`` if ``meta`` (the current model's identity) differs from the checkpoint's.
    """
    if meta is not None:
      check_same_model(self.meta(step), meta, os.path.join(self.directory, str(step)))
    # ``shardings`` is a prefix of ``target`` (one sharding per nnx.Variable): map each variable's leaves.
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(target, shardings)), data=ocp.args.JsonRestore()))
    return restored["state"], restored["data"]

  def restore_params(self, step: int, params: Any, shardings: Any) -> Any:
    """Only ``state.params`` of ``step`` (an Orbax partial restore: the optimizer state is never read), shaped
    like ``params`` (arrays or abstract values) and placed on ``shardings``."""
    target = {"params": _abstract(params, shardings)}
    restore = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                     partial_restore=True)
    return self.manager.restore(step, args=ocp.args.Composite(state=restore))["state"]["params"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def _abstract(target: Any, shardings: Any) -> Any:
  """``target`` as ``jax.ShapeDtypeStruct`` s with ``shardings`` (a prefix of it: one sharding per nnx.Variable)."""
  return jax.tree.map(
      lambda s, sub: jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub), shardings, target)


def check_same_model(saved: dict, current: dict, where: str) -> None:
  """A clear error when a checkpoint belongs to another model (different objective or hyper-parameters)."""
  diffs = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current) if saved.get(k) != current.get(k)}
  if diffs:
    listed = ", ".join(f"{k}: checkpoint={a!r} vs config={b!r}" for k, (a, b) in sorted(diffs.items()))
    raise ValueError(f"The checkpoint in {where} is from another model ({listed}). Use a fresh --workdir, or "
                     "restore the matching config.")


def average_params(checkpointer: Checkpointer, steps: list[int], target: Any, shardings: Any) -> Any:
  """The element-wise mean of the ``params`` of several checkpoints (the paper averages the last 5 or 20)."""
  total = None
  for step in steps:
    state, _ = checkpointer.restore(step, target, shardings)
    total = state.params if total is None else jax.tree.map(lambda a, b: a + b, total, state.params)
  return jax.tree.map(lambda x: x / len(steps), total)
