"""One device mesh with axes ``(data, fsdp, tensor)`` and the rules that place parameters and batches on it.

Parameters carry logical axis names (set where :mod:`transformer_jax.layers` creates them); ``LOGICAL_AXIS_RULES``
maps each name to a mesh axis, T5X-style. One table serves every strategy, because a mesh axis of size 1
shards nothing:

==================  ===================  =======================================================
strategy            mesh (data,fsdp,tp)  what is split
==================  ===================  =======================================================
data parallel       (N, 1, 1)            batch; params and optimizer state replicated
FSDP                (1, N, 1)            batch, and params + optimizer state along ``embed``
tensor parallel     (1, 1, N)            attention heads, MLP hidden and vocab (Megatron-style)
combinations        (a, b, c)            all of the above at once
==================  ===================  =======================================================

Activations ``[batch, length, d_model]`` are constrained to batch sharding at layer boundaries
(:func:`constrain`) while a step is traced under the mesh; ``docs/parallelism.md`` explains launching and costs.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("length", None),
    ("activation_embed", None),
)
_RULES = dict(LOGICAL_AXIS_RULES)
ACTIVATION = ("batch", "length", "activation_embed")  # logical names of ``[batch, length, d_model]`` activations


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, int, int]:
  """``(data, fsdp, tensor)`` from ``config.mesh``; one ``-1`` means "the rest of the devices"."""
  shape = [int(config.mesh[a]) for a in MESH_AXES]
  if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
    raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(shape)}: use positive sizes and at most one -1.")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ValueError(f"mesh {tuple(shape)} cannot fill {num_devices} devices: {known} does not divide it.")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(shape)} has {math.prod(shape)} devices but "
                     f"{num_devices} are available; set --config.mesh.* so that the product matches (or use -1).")
  return tuple(shape)


def make_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
  """The training mesh over ``devices`` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(config, len(devices))
  log.info("Mesh (data, fsdp, tensor) = %s over %d devices of %d processes.", shape, len(devices),
           jax.process_count())
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def check_model_fits(mesh: Mesh, model_config) -> None:
  """Clear errors, before compiling, for a tensor axis that does not divide heads or MLP width."""
  tensor = mesh.shape["tensor"]
  for field in ("num_heads", "mlp_dim"):
    value = getattr(model_config, field)
    if value % tensor:
      raise ValueError(f"mesh.tensor={tensor} does not divide model.{field}={value}; pick a tensor size "
                       f"that divides both num_heads and mlp_dim.")


def check_batch_fits(mesh: Mesh, global_batch: int, what: str = "batch_size") -> None:
  """The global batch must split evenly over the batch axes ``(data, fsdp)``, and these must span the processes
  (each process feeds its own rows: a batch replicated across processes would need the same rows everywhere)."""
  shards = _axis_size(mesh, BATCH_AXES)
  if global_batch % shards:
    raise ValueError(f"{what}={global_batch} is not divisible by mesh.data * mesh.fsdp = {shards}; "
                     f"use a multiple of {shards}.")
  if shards % jax.process_count():
    raise ValueError(f"mesh.data * mesh.fsdp = {shards} is not a multiple of the {jax.process_count()} processes; "
                     "the batch axes must span the hosts (put the tensor axis within a host).")


def _mesh_axis(name: str | None) -> Any:
  if name is not None and name not in _RULES:
    raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
  return _RULES.get(name)


def _axis_size(mesh: Mesh, axis: Any) -> int:
  axes = axis if isinstance(axis, tuple) else (axis,)
  return math.prod(mesh.shape[a] for a in axes if a is not None)


def logical_to_spec(names: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh | AbstractMesh) -> P:
  """Mesh ``PartitionSpec`` for a value with logical axis ``names``; a dim the mesh axis does not divide
  (e.g. a small vocabulary) stays replicated."""
  axes = [_mesh_axis(n) for n in names]
  return P(*(a if a is not None and dim % _axis_size(mesh, a) == 0 else None for a, dim in zip(axes, shape)))


def _leaf_sharding(leaf: Any, mesh: Mesh) -> NamedSharding:
  names = leaf.get_metadata().get("out_sharding") if isinstance(leaf, nnx.Variable) else None
  if not names:
    return NamedSharding(mesh, P())
  return NamedSharding(mesh, logical_to_spec(tuple(names), leaf.get_value().shape, mesh))


def tree_shardings(abstract_tree: Any, mesh: Mesh) -> Any:
  """``NamedSharding`` for every leaf of a pytree of ``nnx.Variable`` s / arrays (params, optimizer state, a
  whole train state), from the logical names in the variables' metadata; everything else is replicated."""
  return jax.tree.map(lambda leaf: _leaf_sharding(leaf, mesh), abstract_tree,
                      is_leaf=lambda x: isinstance(x, nnx.Variable))


def traced_mesh() -> AbstractMesh | None:
  """The mesh a step is being traced under (see :func:`compile_train_step`, or ``with jax.set_mesh(mesh)``); None
  without one and inside ``shard_map`` (manual axes)."""
  mesh = jax.sharding.get_abstract_mesh()
  return None if mesh.empty or not mesh.are_all_axes_auto else mesh


def constrain(x: jax.Array, names: tuple[str | None, ...] = ACTIVATION) -> jax.Array:
  """``x`` constrained to the sharding of its logical axis ``names`` on :func:`traced_mesh` (no-op without one)."""
  mesh = traced_mesh()
  return x if mesh is None else jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches ``[batch, ...]`` are split over ``(data, fsdp)``."""
  return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local rows into global ``jax.Array`` s sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}


def mesh_batch_multiple(mesh: Mesh, rows: int) -> int:
  """``rows`` rounded up to a multiple of the batch shards ``data * fsdp``."""
  shards = _axis_size(mesh, BATCH_AXES)
  return -(-rows // shards) * shards


def _traced_under(fn, mesh: Mesh):
  """``fn`` traced with ``mesh`` as the context mesh, so that :func:`constrain` applies inside it."""

  @functools.wraps(fn)
  def wrapped(*args):
    with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
      return fn(*args)

  return wrapped


def compile_train_step(config: ml_collections.ConfigDict, mesh: Mesh, step_fn, state_shardings: Any):
  """``jax.jit`` of ``step_fn(state, batch, axis_name=None) -> (state, metrics)`` with explicit shardings and the
  state donated.

  ``config.train_step_impl``: ``"jit"`` lets the compiler partition the step from the shardings (any mesh);
  ``"shard_map"`` is the explicit-collective data-parallel path: each device computes loss and gradients on its
  rows and the sums are ``psum``-ed over ``(data, fsdp)`` (params replicated: needs ``mesh.tensor == 1`` and
  ``mesh.fsdp == 1``).
  """
  batch = batch_sharding(mesh)
  if config.train_step_impl == "jit":
    return jax.jit(_traced_under(step_fn, mesh), in_shardings=(state_shardings, batch),
                   out_shardings=(state_shardings, None), donate_argnums=0)
  if config.train_step_impl != "shard_map":
    raise ValueError(f"train_step_impl={config.train_step_impl!r} is unknown; use 'jit' or 'shard_map'.")
  if mesh.shape["tensor"] != 1 or mesh.shape["fsdp"] != 1:
    raise ValueError("train_step_impl='shard_map' is pure data parallelism: set mesh.fsdp=1 and mesh.tensor=1 "
                     "(or use train_step_impl='jit').")
  # check_vma=False: the gradient accumulation carry starts device-invariant (zeros) and becomes per-device.
  mapped = jax.shard_map(functools.partial(step_fn, axis_name=BATCH_AXES), mesh=mesh,
                         in_specs=(P(), P(BATCH_AXES)), out_specs=(P(), P()), check_vma=False)
  replicated = jax.tree.map(lambda _: NamedSharding(mesh, P()), state_shardings)
  return jax.jit(mapped, in_shardings=(replicated, batch), out_shardings=(replicated, None), donate_argnums=0)


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` when ``config.initialize`` is set and it has not run yet in this process (it
  must come before any other JAX call).

  ``coordinator_address``, ``num_processes`` and ``process_id`` may be left ``None`` where JAX detects them (TPU
  pods, SLURM, Open MPI, Kubernetes); elsewhere give all three (JAX also reads the coordinator address from
  ``JAX_COORDINATOR_ADDRESS``). CPU processes exchange collectives over Gloo (JAX's default).
  """
  if not config.initialize or jax.distributed.is_initialized():
    return
  kwargs = {k: config[k] for k in ("coordinator_address", "num_processes", "process_id") if config[k] is not None}
  if config.local_device_ids is not None:
    kwargs["local_device_ids"] = list(config.local_device_ids)
  jax.distributed.initialize(**kwargs)
