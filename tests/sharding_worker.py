"""Sharded-training scenarios, run by tests/test_sharding.py and tests/test_multihost.py in subprocesses (the
number of simulated CPU devices is fixed when JAX starts, by ``XLA_FLAGS=--xla_force_host_platform_device_count``).

  python tests/sharding_worker.py devices OUT.json            8 devices: meshes, shard_map, resharding, bad configs
  python tests/sharding_worker.py process ID PORT WORKDIR     process ID of 2 (2 devices each): train_and_evaluate
  python tests/sharding_worker.py reference WORKDIR OUT.json  4 devices, one process: the same run, then restores

Each mode writes plain JSON facts (losses, differences, shard shapes, error messages); the tests assert on them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import tempfile

import jax
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import load_config, shrink  # pylint: disable=wrong-import-position

from transformer_jax import checkpointing, optim, sharding, train_lib  # pylint: disable=wrong-import-position
from transformer_jax.models import TransformerConfig  # pylint: disable=wrong-import-position

MESHES = ((8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 1, 8))
# d_model 32, 8 heads, mlp 64, vocab 64: a tensor axis of 8 divides them all.
MODEL = TransformerConfig.tiny(num_heads=8, num_encoder_layers=1, num_decoder_layers=1, dropout_rate=0.0)
STEPS = 3
ROWS = 16
# Params whose shard shapes the tests check against the rules, by hand.
WATCHED = ("decoder/embedder/embed/embedding", "encoder/layers/0/self_attention/query",
           "encoder/layers/0/self_attention/out", "encoder/layers/0/feed_forward/wi",
           "encoder/layers/0/feed_forward/bi", "encoder/layers/0/ff_sublayer/norm/scale")


def mesh_config(shape=(1, 1, 1), impl: str = "jit", config=None):
  """``config`` (default: ``configs/default.py``) with a constant learning rate, the mesh ``shape`` and ``impl``."""
  config = load_config("default") if config is None else config
  config.optimizer.update(schedule="constant", learning_rate=1e-3)
  config.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
  config.train_step_impl = impl
  return config


def synthetic_batches():
  """``STEPS`` translation batches ``int32[ROWS, 7]`` / ``[ROWS, 6]`` with a different amount of padding per row."""
  rng = np.random.default_rng(0)
  for _ in range(STEPS):
    inputs = rng.integers(4, MODEL.vocab_size, (ROWS, 7)).astype(np.int32)
    targets = rng.integers(4, MODEL.vocab_size, (ROWS, 6)).astype(np.int32)
    for i in range(ROWS):
      inputs[i, 7 - i % 7:] = 0
      targets[i, 6 - i % 6:] = 0
    yield {"inputs": inputs, "targets": targets}


def compiled_step(config, cfg: TransformerConfig, mesh, accum: int = 1):
  """``(state, step_fn)``: the train state initialised on ``mesh`` and the step, as ``train_and_evaluate`` builds
  them."""
  tx, schedule = optim.make_optimizer(config.optimizer, cfg.d_model, config.num_train_steps)
  graphdef, state, shardings = train_lib.create_train_state(config.objective, cfg, tx, config.seed, mesh)
  step = functools.partial(train_lib.train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                           label_smoothing=config.label_smoothing, grad_accum_steps=accum)
  return state, sharding.compile_train_step(config, mesh, step, shardings)


def train_synthetic(config, devices, accum: int = 1, cfg: TransformerConfig = MODEL):
  """``(mesh, state, losses)`` after ``STEPS`` steps of ``cfg`` on the synthetic batches."""
  mesh = sharding.make_mesh(config, devices)
  state, step = compiled_step(config, cfg, mesh, accum)
  losses = []
  for batch in synthetic_batches():
    state, metrics = step(state, sharding.global_batch(batch, mesh))
    losses.append(float(metrics["loss"]))
  return mesh, state, losses


def flat(tree) -> dict[str, jax.Array]:
  """``{"a/b/c": leaf}`` (the ``nnx.Variable`` ``value`` level dropped)."""
  return {jax.tree_util.keystr(path, simple=True, separator="/").removesuffix("/value"): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def max_diff(a, b) -> float:
  """The largest absolute difference between two pytrees of (possibly sharded) arrays."""
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(jax.tree.leaves(a),
                                                                                    jax.tree.leaves(b)))


def shard_facts(state) -> dict:
  """Shard shapes and specs of the watched params, device-0 vs total param bytes, and whether Adam's ``mu`` and
  ``nu`` are sharded exactly like the params."""
  params, device = flat(state.params), jax.devices()[0]
  shard = lambda x: next(s for s in x.addressable_shards if s.device == device).data
  same = all(jax.tree.leaves(jax.tree.map(lambda p, m: p.sharding == m.sharding, state.params,
                                          optax.tree_utils.tree_get(state.opt_state, moment)))
             for moment in ("mu", "nu"))
  return {"shard_shapes": {k: list(shard(params[k]).shape) for k in WATCHED},
          "specs": {k: str(params[k].sharding.spec) for k in WATCHED},
          "device0_bytes": sum(shard(x).nbytes for x in params.values()),
          "total_bytes": sum(x.nbytes for x in params.values()), "moments_like_params": same}


def restore_on_smaller_meshes(workdir: str, state, meta: dict) -> dict[str, tuple]:
  """``{"4_devices": (state, data_state), "1_device": ...}``: the latest checkpoint in ``workdir`` restored onto a
  (4, 1, 1) mesh of 4 devices and onto 1 device, with the shardings the rules give there (``state``: the target)."""
  ckpt = checkpointing.Checkpointer(workdir)
  out = {}
  for name, shape in (("4_devices", (4, 1, 1)), ("1_device", (1, 1, 1))):
    mesh = sharding.make_mesh(mesh_config(shape), jax.devices()[:math.prod(shape)])
    out[name] = ckpt.restore(ckpt.latest_step(), state, sharding.tree_shardings(state, mesh), meta)
  ckpt.close()
  return out


def resharding(state) -> dict:
  """Saves ``state`` (trained on 2x2x2) and restores it onto 4 devices and onto 1."""
  with tempfile.TemporaryDirectory() as workdir:
    saver = checkpointing.Checkpointer(workdir, async_save=False)
    saver.save(STEPS, state, {}, {"model": "tiny"})
    saver.close()
    restored = restore_on_smaller_meshes(workdir, state, {"model": "tiny"})
  query = lambda x: flat(x.params)["encoder/layers/0/self_attention/query"]
  return {name: {"max_diff": max_diff(x, state), "step": int(x.step),
                 "num_devices": len(query(x).sharding.device_set)} for name, (x, _) in restored.items()}


def error_of(fn) -> str:
  """The message of the ``ValueError`` that ``fn()`` raises, or ``""``."""
  try:
    fn()
  except ValueError as e:
    return str(e)
  return ""


def bad_configs(workdir: str) -> dict[str, str]:
  """Error messages of ``train_and_evaluate`` with configs that do not fit the 8 devices or the model."""
  def run(shape, impl="jit", **sections):
    config = mesh_config(shape, impl, shrink(load_config("default")))
    for section, fields in sections.items():
      config[section].update(fields)
    return error_of(lambda: train_lib.train_and_evaluate(config, workdir))

  return {"mesh_product": run((3, 1, 1)), "tensor_heads": run((1, 1, 8)),
          "tensor_mlp": run((-1, 1, 2), model={"mlp_dim": 63}), "batch": run((8, 1, 1), data={"batch_size": 12}),
          "shard_map_fsdp": run((4, 2, 1), "shard_map")}


def devices_mode(out_path: str) -> None:
  assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
  _, reference, reference_losses = train_synthetic(mesh_config(), jax.devices()[:1])
  results = {"reference_losses": reference_losses, "meshes": {}}
  states = {}
  for shape in MESHES:
    _, states[shape], losses = train_synthetic(mesh_config(shape), jax.devices())
    results["meshes"][str(shape)] = {"losses": losses, "max_param_diff": max_diff(states[shape].params,
                                                                                  reference.params),
                                     **shard_facts(states[shape])}
  _, mapped, mapped_losses = train_synthetic(mesh_config((8, 1, 1), "shard_map"), jax.devices(), accum=2)
  results["shard_map"] = {"losses": mapped_losses, "max_param_diff": max_diff(mapped.params,
                                                                              states[(8, 1, 1)].params),
                          "max_opt_state_diff": max_diff(mapped.opt_state, states[(8, 1, 1)].opt_state)}
  _, attention, attention_losses = train_synthetic(mesh_config((2, 2, 2)), jax.devices(),
                                                   cfg=dataclasses.replace(MODEL, attention_impl="shard_map"))
  results["shard_map_attention"] = {"losses": attention_losses,
                                    "max_param_diff": max_diff(attention.params, reference.params)}
  results["resharding"] = resharding(states[(2, 2, 2)])
  with tempfile.TemporaryDirectory() as workdir:
    results["bad_configs"] = bad_configs(workdir)
  with open(out_path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)


def multihost_config():
  """Tiny SCAN run on a (1, 2, 2) mesh: FSDP over the 2 processes, tensor parallel within each."""
  config = mesh_config((1, 2, 2), config=shrink(load_config("default")))
  config.log_every_steps = 1
  return config


def process_mode(process_id: str, port: str, workdir: str) -> None:
  """One of the 2 processes of the multi-host run; prints its final metrics as ``RESULT {json}``."""
  config = multihost_config()
  config.distributed.update(initialize=True, coordinator_address=f"localhost:{port}", num_processes=2,
                            process_id=int(process_id))
  final = train_lib.train_and_evaluate(config, workdir)
  print("RESULT " + json.dumps({"process_index": jax.process_index(), "device_count": jax.device_count(),
                                "local_device_count": jax.local_device_count(),
                                "final": {k: float(v) for k, v in final.items()}}), flush=True)


def reference_mode(workdir: str, out_path: str) -> None:
  """The 2-process run in one process on 4 devices (each step's batch is process 0's rows, then process 1's);
  then the 2-process run's last checkpoint restored onto 4 devices (4, 1, 1) and onto 1 device."""
  from transformer_jax import data as data_lib  # pylint: disable=import-outside-toplevel

  assert jax.device_count() == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
  config = multihost_config()
  hosts = [data_lib.build(config.data, workdir=workdir, seed=config.seed, process_index=i, process_count=2)
           for i in range(2)]
  cfg = train_lib.model_config(config, hosts[0].tokenizer.vocab_size)
  mesh = sharding.make_mesh(config)
  state, step = compiled_step(config, cfg, mesh, config.grad_accum_steps)
  losses = []
  for _ in range(config.num_train_steps):
    local = [next(host.train) for host in hosts]
    state, metrics = step(state, sharding.global_batch({k: np.concatenate([b[k] for b in local]) for k in local[0]},
                                                       mesh))
    losses.append(float(metrics["loss"]))
  restored = restore_on_smaller_meshes(workdir, state, train_lib.model_identity(config.objective, cfg))
  (four, data_state), (one, _) = restored["4_devices"], restored["1_device"]
  results = {"losses": losses, "restored_step": int(one.step), "restored_vs_reference": max_diff(one.params,
                                                                                                 state.params),
             "restored_4_vs_1": max_diff(four, one), "data_positions": data_state,
             "reference_positions": [host.train.get_state() for host in hosts]}
  with open(out_path, "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)


def main(argv: list[str]) -> None:
  modes = {"devices": devices_mode, "process": process_mode, "reference": reference_mode}
  modes[argv[1]](*argv[2:])


if __name__ == "__main__":
  main(sys.argv)
