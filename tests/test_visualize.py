"""Attention pictures (transformer_jax.visualize) from tiny random models: valid PNGs of the expected pixel size."""

import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from flax import nnx

from transformer_jax import visualize
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.models import DecoderOnly, EncoderDecoder, TransformerConfig

WORDS = "jump walk run look turn left right twice thrice after and around opposite"


def png_size(path) -> tuple[int, int]:
  """(width, height) from the IHDR chunk of a PNG file, after checking the signature."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", f"{path} is not a PNG"
  return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def tokenizer():
  return tokenizer_lib.train(WORDS.split() * 3, vocab_size=len(WORDS.split()) + 4, model_type="word")


def test_one_figure_is_a_png_of_the_expected_size(tmp_path):
  weights = np.random.default_rng(0).dirichlet(np.ones(7), size=(3, 5)).astype(np.float32)  # 3 heads, 5 x 7
  attention = visualize.AttentionMap("cross_attention", 2, weights, [f"▁k{i}" for i in range(7)],
                                     [f"▁q{i}" for i in range(5)])
  path = visualize.plot_heads(attention, str(tmp_path / "cross.png"))
  assert png_size(path) == visualize.figure_pixels(3, 7, 5)
  assert visualize.figure_pixels(3, 7, 5) == (2 * 264, 2 * 240 + visualize.TITLE_PIXELS)  # 2x2 panels: 3 heads + mean


@pytest.mark.parametrize("cls", [EncoderDecoder, DecoderOnly])
def test_plot_attention_of_a_tiny_model(cls, tokenizer, tmp_path):
  model = cls(TransformerConfig.tiny(vocab_size=tokenizer.vocab_size, dropout_rate=0.0), rngs=nnx.Rngs(0))
  text = "jump twice after walk left"
  maps = visualize.attention_maps(model, tokenizer, text, max_len=6)
  kinds = ["cross_attention", "encoder_self_attention", "decoder_self_attention"] if cls is EncoderDecoder else [
      "decoder_self_attention"]
  assert [(m.kind, m.layer) for m in maps] == [(k, layer) for k in kinds for layer in (1, 2)]
  for m in maps:
    heads, queries, keys = m.weights.shape
    assert heads == 4 and (keys, queries) == (len(m.key_labels), len(m.query_labels))
    np.testing.assert_allclose(m.weights.sum(-1), 1.0, atol=1e-5)  # each query's distribution over the keys
  if cls is EncoderDecoder:
    assert maps[0].key_labels == ["▁jump", "▁twice", "▁after", "▁walk", "▁left", "</s>"]
  else:
    assert maps[0].key_labels[:6] == ["<s>", "▁jump", "▁twice", "▁after", "▁walk", "▁left"]

  paths = visualize.plot_attention(model, tokenizer, text, str(tmp_path), max_len=6)
  assert [os.path.basename(p) for p in paths] == [f"{k}_layer{layer}.png" for k in kinds for layer in (1, 2)]
  for m, path in zip(maps, paths):
    assert png_size(path) == visualize.figure_pixels(*m.weights.shape[:1], len(m.key_labels), len(m.query_labels))


def test_importing_the_package_needs_no_matplotlib():
  code = ("import sys; import transformer_jax, transformer_jax.visualize, transformer_jax.generate; "
          "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}, check=False)
  assert result.returncode == 0, result.stderr
