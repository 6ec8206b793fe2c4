"""The public API imports without TensorFlow (a subprocess, so other tests' imports do not interfere)."""

import ast
import pathlib
import subprocess
import sys

MODULES = ["transformer_jax", "transformer_jax.masks", "transformer_jax.attention", "transformer_jax.positions",
           "transformer_jax.layers", "transformer_jax.models"]


def test_public_api_does_not_import_tensorflow():
  code = "import sys\n" + "".join(f"import {m}\n" for m in MODULES) + (
      "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]\n"
      "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_pure_function_modules_import_only_jax_and_each_other():
  """masks, positions and attention are plain JAX: their module-level imports name no Flax (or TensorFlow)."""
  root = pathlib.Path(__file__).resolve().parents[1] / "transformer_jax"
  for name in ("masks", "positions", "attention"):
    tree = ast.parse((root / f"{name}.py").read_text())
    top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module for n in top_level if isinstance(n, ast.ImportFrom)]
    ours = [f"{n.module}.{a.name}" for n in top_level if isinstance(n, ast.ImportFrom) and n.module == "transformer_jax"
            for a in n.names]
    assert all(m.split(".")[0] in ("__future__", "typing", "functools", "jax", "transformer_jax") for m in modules)
    assert set(ours) <= {"transformer_jax.masks", "transformer_jax.positions"}, (name, ours)
