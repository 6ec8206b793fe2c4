"""The examples run and learn (a few hundred steps of tiny models)."""

import importlib.util

import pytest
from conftest import ROOT


def _load(name):
  spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.parametrize("name, steps", [("pure_attention", 150), ("classify_with_encoder", 200)])
def test_example_learns(name, steps):
  assert _load(name).main(steps) >= 0.9
