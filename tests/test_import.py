"""The public API imports without TensorFlow (a subprocess, so other tests' imports do not interfere)."""

import subprocess
import sys

MODULES = ["transformer_jax", "transformer_jax.masks", "transformer_jax.attention", "transformer_jax.positions",
           "transformer_jax.layers", "transformer_jax.models"]


def test_public_api_does_not_import_tensorflow():
  code = "import sys\n" + "".join(f"import {m}\n" for m in MODULES) + (
      "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]\n"
      "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True)
