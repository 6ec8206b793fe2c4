"""Sharded training on 8 simulated CPU devices: every mesh equals one device, shardings follow the rules, the
shard_map step equals the jit step, checkpoints restore onto other meshes, bad configs fail early.

The 8-device scenarios run once, in one subprocess (``tests/sharding_worker.py devices``), because the device
count is fixed when JAX starts; the in-process tests below need no devices.
"""

import functools
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest
from conftest import ROOT
from jax.sharding import AbstractMesh, PartitionSpec as P

from transformer_jax import attention, sharding
from transformer_jax.models import TransformerConfig

MESHES = ((8, 1, 1), (1, 8, 1), (2, 2, 2), (1, 1, 8))
# Shard shapes of the watched params of the worker's model (d_model 32, 8 heads of 4, mlp 64, vocab 64) on a mesh
# with ``f`` fsdp and ``t`` tensor devices, written out from the rules: embed -> fsdp; vocab, heads, mlp -> tensor.
EXPECTED_SHARDS = {
    "decoder/embedder/embed/embedding": lambda f, t: [64 // t, 32 // f],
    "encoder/layers/0/self_attention/query": lambda f, t: [32 // f, 8 // t, 4],
    "encoder/layers/0/self_attention/out": lambda f, t: [8 // t, 4, 32 // f],
    "encoder/layers/0/feed_forward/wi": lambda f, t: [32 // f, 64 // t],
    "encoder/layers/0/feed_forward/bi": lambda f, t: [64 // t],
    "encoder/layers/0/ff_sublayer/norm/scale": lambda f, t: [32 // f],
}


def worker(mode: str, *args: str, devices: int) -> dict:
  """``subprocess`` arguments running ``tests/sharding_worker.py mode args...`` on ``devices`` simulated CPU devices."""
  flags = f"--xla_force_host_platform_device_count={devices}"
  return {"args": [sys.executable, str(ROOT / "tests" / "sharding_worker.py"), mode, *args], "cwd": ROOT,
          "env": {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}}


def run_worker(mode: str, *args: str, devices: int, timeout: int = 600) -> None:
  """Runs the worker to completion; fails with its output."""
  proc = subprocess.run(**worker(mode, *args, devices=devices), capture_output=True, text=True, timeout=timeout,
                        check=False)
  assert proc.returncode == 0, f"worker {mode} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  out = tmp_path_factory.mktemp("sharding") / "results.json"
  run_worker("devices", str(out), devices=8)
  return json.loads(out.read_text())


@pytest.mark.parametrize("mesh", MESHES, ids=str)
def test_mesh_trains_like_one_device(results, mesh):
  run = results["meshes"][str(mesh)]
  np.testing.assert_allclose(run["losses"], results["reference_losses"], rtol=1e-5)
  assert run["max_param_diff"] < 1e-5


@pytest.mark.parametrize("mesh", MESHES, ids=str)
def test_params_and_optimizer_state_are_sharded_by_the_rules(results, mesh):
  run = results["meshes"][str(mesh)]
  _, fsdp, tensor = mesh
  assert run["shard_shapes"] == {name: shape(fsdp, tensor) for name, shape in EXPECTED_SHARDS.items()}
  assert run["specs"]["encoder/layers/0/self_attention/query"] == str(P("fsdp", "tensor", None))
  assert run["moments_like_params"]  # Adam's mu and nu are sharded exactly like their params


def test_fsdp_keeps_about_one_nth_of_the_params_per_device(results):
  data_parallel, fsdp = results["meshes"]["(8, 1, 1)"], results["meshes"]["(1, 8, 1)"]
  assert data_parallel["device0_bytes"] == data_parallel["total_bytes"]  # replicated
  # 1/8 of everything, except the two [mlp] biases (2 x 64 float32, split over tensor, not fsdp) that stay whole.
  assert fsdp["device0_bytes"] == fsdp["total_bytes"] / 8 + 2 * 64 * 4 * 7 / 8


def test_shard_map_step_equals_the_jit_step(results):
  # shard_map with 2 micro-batches per device vs the compiler-partitioned step with 1, on (8, 1, 1).
  mapped = results["shard_map"]
  np.testing.assert_allclose(mapped["losses"], results["meshes"]["(8, 1, 1)"]["losses"], rtol=1e-5)
  assert mapped["max_param_diff"] < 1e-5 and mapped["max_opt_state_diff"] < 1e-6


def test_shard_map_attention_trains_like_one_device(results):
  run = results["shard_map_attention"]  # attention_impl="shard_map" on (2, 2, 2) vs "xla" on one device
  np.testing.assert_allclose(run["losses"], results["reference_losses"], rtol=1e-5)
  assert run["max_param_diff"] < 1e-5


def test_checkpoint_from_2x2x2_restores_onto_4_devices_and_onto_1(results):
  for name, devices in (("4_devices", 4), ("1_device", 1)):
    restored = results["resharding"][name]
    assert restored["max_diff"] == 0.0 and restored["step"] == 3
    assert restored["num_devices"] == devices


def test_bad_configs_fail_before_compiling_with_clear_errors(results):
  errors = results["bad_configs"]
  assert "(3, 1, 1) has 3 devices but 8 are available" in errors["mesh_product"]
  assert "mesh.tensor=8 does not divide model.num_heads=2" in errors["tensor_heads"]
  assert "mesh.tensor=2 does not divide model.mlp_dim=63" in errors["tensor_mlp"]
  assert "data.batch_size=12 is not divisible by mesh.data * mesh.fsdp = 8" in errors["batch"]
  assert "set mesh.fsdp=1 and mesh.tensor=1" in errors["shard_map_fsdp"]


# ----------------------------------------------------------------------------------------------------------------
# In-process: mesh arithmetic, rules and checks (abstract meshes need no devices)


def _config(data, fsdp, tensor):
  return ml_collections.ConfigDict({"mesh": {"data": data, "fsdp": fsdp, "tensor": tensor}})


def test_mesh_shape_fills_minus_one_with_the_rest():
  assert sharding.mesh_shape(_config(-1, 2, 2), 8) == (2, 2, 2)
  assert sharding.mesh_shape(_config(1, -1, 1), 8) == (1, 8, 1)
  with pytest.raises(ValueError, match="at most one -1"):
    sharding.mesh_shape(_config(-1, -1, 1), 8)
  with pytest.raises(ValueError, match="3 does not divide it"):
    sharding.mesh_shape(_config(-1, 3, 1), 8)
  with pytest.raises(ValueError, match=r"\(2, 1, 1\) has 2 devices but 1 are available"):
    sharding.make_mesh(_config(2, 1, 1))


def test_logical_to_spec_replicates_dims_the_mesh_does_not_divide():
  mesh = AbstractMesh((2, 2, 2), sharding.MESH_AXES)
  assert sharding.logical_to_spec(("vocab", "embed"), (64, 32), mesh) == P("tensor", "fsdp")
  assert sharding.logical_to_spec(("vocab", "embed"), (63, 32), mesh) == P(None, "fsdp")
  assert sharding.logical_to_spec(sharding.ACTIVATION, (8, 5, 32), mesh) == P(("data", "fsdp"), None, None)
  with pytest.raises(KeyError, match="no rule"):
    sharding.logical_to_spec(("nonsense",), (4,), mesh)


def test_checks_name_the_fields():
  mesh = AbstractMesh((1, 1, 4), sharding.MESH_AXES)
  with pytest.raises(ValueError, match="num_heads=2"):
    sharding.check_model_fits(mesh, TransformerConfig.tiny(num_heads=2))
  sharding.check_model_fits(mesh, TransformerConfig.tiny())
  with pytest.raises(ValueError, match="eval_batch_size=6 is not divisible by mesh.data \\* mesh.fsdp = 4"):
    sharding.check_batch_fits(AbstractMesh((2, 2, 1), sharding.MESH_AXES), 6, "eval_batch_size")


def test_constrain_applies_only_under_a_mesh():
  constrained = lambda: str(jax.make_jaxpr(sharding.constrain)(jax.numpy.ones((2, 3, 4))))
  assert "sharding_constraint" not in constrained()
  with jax.sharding.use_abstract_mesh(AbstractMesh((1, 1, 1), sharding.MESH_AXES)):
    assert "sharding_constraint" in constrained()


def test_shard_map_attention_runs_per_shard_under_a_mesh_and_equals_xla():
  rng = np.random.default_rng(0)
  q, k, v = (jax.numpy.asarray(rng.normal(size=(2, 5, 4, 8)), jax.numpy.float32) for _ in range(3))
  mask = jax.numpy.asarray(rng.random((2, 1, 5, 5)) < 0.7)
  plain = attention.dot_product_attention(q, k, v, mask, implementation="xla")
  mapped = jax.jit(functools.partial(attention.dot_product_attention, implementation="shard_map"))
  with jax.sharding.use_abstract_mesh(AbstractMesh((1, 1, 1), sharding.MESH_AXES)):
    assert "shard_map" in str(jax.make_jaxpr(mapped)(q, k, v, mask))
    np.testing.assert_allclose(mapped(q, k, v, mask), plain, atol=2e-5)
    np.testing.assert_allclose(mapped(q, k, v), attention.dot_product_attention(q, k, v), atol=2e-5)
  assert "shard_map" not in str(jax.make_jaxpr(mapped)(q, k, v, mask))  # no mesh: the plain "jax" kernel
