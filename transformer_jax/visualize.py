"""Attention pictures: PNG heatmaps of a model's attention weights on one input.

:func:`plot_attention` greedy-decodes one input (translation: a source sentence; language model: a prompt), runs
one teacher-forced pass over the input and the generated output with every attention module capturing its weights
(``MultiHeadAttention.capture_weights`` and ``nnx.capture``), and saves one figure per attention kind and layer: a
grid with one heatmap per head and the heads' mean, SentencePiece pieces as tick labels (``▁`` starts a word).

- ``cross_attention_layer<i>.png``: the learned alignment, source pieces (x) against generated pieces (y);
- ``encoder_self_attention_layer<i>.png``: source pieces against themselves;
- ``decoder_self_attention_layer<i>.png``: decoder inputs (``<s>`` then the output so far, x) against the piece
  each position generates (y); for a language model, the prompt is part of both.

Row ``t`` of a map is the distribution of one query over the keys (it sums to 1). Matplotlib is imported only when
plotting, through its object API (no ``pyplot``), so the global backend is left alone and no display is needed.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from transformer_jax import inference
from transformer_jax.layers import MultiHeadAttention
from transformer_jax.models import DecoderOnly, EncoderDecoder
from transformer_jax.tokens import BOS_ID, EOS_ID

DPI = 100
PIXELS_PER_TOKEN = 22  # one heatmap cell; 8 pt labels fit
LABEL_PIXELS = 110  # room for the tick labels and axis name of a panel
MIN_PANEL, MAX_PANEL = 240, 1400  # panel side in pixels
TITLE_PIXELS = 40
KINDS = {  # kind: (title, x axis, y axis)
    "cross_attention": ("Cross-attention (alignment)", "source", "generated"),
    "encoder_self_attention": ("Encoder self-attention", "source (key)", "source (query)"),
    "decoder_self_attention": ("Decoder self-attention", "decoder input (key)", "generated"),
}


@dataclasses.dataclass(frozen=True)
class AttentionMap:
  """The weights ``float32[heads, queries, keys]`` of one attention module and the pieces labelling its axes."""

  kind: str  # a key of KINDS
  layer: int  # 1-based
  weights: np.ndarray
  key_labels: list[str]
  query_labels: list[str]


def _through_eos(ids: np.ndarray) -> list[int]:
  """Generated ids up to and including the first EOS (all non-padding ids if there is none)."""
  ids = [int(i) for i in ids if i != 0]
  return ids[: ids.index(EOS_ID) + 1] if EOS_ID in ids else ids


def _capturing(model: EncoderDecoder | DecoderOnly) -> EncoderDecoder | DecoderOnly:
  """A view of ``model`` (sharing its arrays) whose attention modules sow their weights."""
  view = nnx.merge(*nnx.split(model))
  for _, module in nnx.iter_modules(view):
    if isinstance(module, MultiHeadAttention):
      module.capture_weights = True
  return view


def _greedy_pass(model: EncoderDecoder | DecoderOnly, pieces: list[int], max_len: int
                 ) -> tuple[list[int], list[int], nnx.State]:
  """Greedy-decodes from input ``pieces``, then one teacher-forced pass capturing the attention weights.

  Returns ``(source, targets, intermediates)``: the encoder input (pieces + EOS; empty for a language model), the
  decoder targets (the output through EOS; a language model's prompt pieces first) and the sown weights.
  """
  graphdef, params = nnx.split(model)
  if isinstance(model, DecoderOnly):
    max_len = max(1, min(max_len, model.config.max_len - len(pieces) - 1))
    out = inference.sample(graphdef, params, np.asarray([pieces], np.int32), jax.random.key(0), max_len=max_len,
                           temperature=0.0)
    targets = pieces + _through_eos(np.asarray(out)[0])
    _, intermediates = nnx.capture(_capturing(model), nnx.Intermediate)(np.asarray([targets], np.int32))
    return [], targets, intermediates
  inputs = np.asarray([pieces + [EOS_ID]], np.int32)
  out = inference.translate(graphdef, params, inputs, max_len=min(max_len, model.config.max_len))
  targets = _through_eos(np.asarray(out)[0])
  _, intermediates = nnx.capture(_capturing(model), nnx.Intermediate)(inputs, np.asarray([targets], np.int32))
  return pieces + [EOS_ID], targets, intermediates


def attention_maps(model: EncoderDecoder | DecoderOnly, tokenizer, text: str, *, max_len: int = 64,
                   max_input_len: int | None = None) -> list[AttentionMap]:
  """Greedy-decodes ``text`` (at most ``max_len`` new tokens) and returns every attention map of the final pass,
  sorted by kind (as in ``KINDS``) and layer.

  ``max_input_len`` (default: the model's ``max_len``) truncates the input as generation does; ``tokenizer`` is a
  :class:`transformer_jax.data.tokenizer.Tokenizer`.
  """
  pieces = tokenizer.encode(text.strip())[: (max_input_len or model.config.max_len) - 1]
  source, targets, intermediates = _greedy_pass(model, pieces, max_len)
  source_labels, target_labels = _pieces(tokenizer, source), _pieces(tokenizer, targets)
  labels = {"cross_attention": (source_labels, target_labels),
            "encoder_self_attention": (source_labels, source_labels),
            "decoder_self_attention": (_pieces(tokenizer, [BOS_ID] + targets[:-1]), target_labels)}
  maps = []
  for path, value in nnx.to_flat_state(intermediates):
    stack, layer, name = path[0], path[2], path[3]  # e.g. ("encoder", "layers", 0, "self_attention", ...)
    kind = "cross_attention" if name == "cross_attention" else f"{stack}_self_attention"
    weights = np.asarray(jax.tree.leaves(value)[0][0], np.float32)  # the only call's weights, batch row 0
    maps.append(AttentionMap(kind, int(layer) + 1, weights, *labels[kind]))
  return sorted(maps, key=lambda m: (list(KINDS).index(m.kind), m.layer))


def _pieces(tokenizer, ids: Sequence[int]) -> list[str]:
  return [tokenizer.id_to_piece(i) for i in ids]


def _grid(panels: int) -> tuple[int, int]:
  """(columns, rows) of a near-square grid holding ``panels`` panels."""
  cols = math.ceil(math.sqrt(panels))
  return cols, math.ceil(panels / cols)


def _panel_pixels(tokens: int) -> int:
  return min(max(PIXELS_PER_TOKEN * tokens + LABEL_PIXELS, MIN_PANEL), MAX_PANEL)


def figure_pixels(num_heads: int, num_keys: int, num_queries: int) -> tuple[int, int]:
  """(width, height) in pixels of one layer's figure: ``num_heads`` + 1 (mean) panels of keys x queries cells."""
  cols, rows = _grid(num_heads + 1)
  return cols * _panel_pixels(num_keys), rows * _panel_pixels(num_queries) + TITLE_PIXELS


def _font_size(tokens: int) -> float:
  """Tick label size in points: 8, smaller when a panel at its largest holds many tokens."""
  cell_points = (MAX_PANEL - LABEL_PIXELS) / max(tokens, 1) * 72 / DPI
  return max(3.0, min(8.0, 0.8 * cell_points))


def plot_heads(attention: AttentionMap, path: str) -> str:
  """Saves one layer's figure (:func:`figure_pixels` in size) to ``path``: every head and their mean, one colour
  scale from 0 to the largest weight."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel  (optional dependency)

  heads, num_queries, num_keys = attention.weights.shape
  panels = [(f"head {h + 1}", w) for h, w in enumerate(attention.weights)]
  panels.append(("mean of heads", attention.weights.mean(axis=0)))
  title, x_name, y_name = KINDS[attention.kind]
  width, height = figure_pixels(heads, num_keys, num_queries)
  fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
  cols, rows = _grid(len(panels))
  axes = fig.subplots(rows, cols, squeeze=False).ravel()
  vmax = max(float(attention.weights.max()), 1e-6)  # one colour scale for all panels (the colour bar's)
  for ax, (name, weights) in zip(axes, panels):
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_title(name, fontsize=9)
    ax.set_xticks(range(num_keys), attention.key_labels, rotation=90, fontsize=_font_size(num_keys))
    ax.set_yticks(range(num_queries), attention.query_labels, fontsize=_font_size(num_queries))
    ax.set_xlabel(x_name, fontsize=8)
    ax.set_ylabel(y_name, fontsize=8)
  fig.colorbar(image, ax=axes[len(panels) - 1], shrink=0.8)
  for ax in axes[len(panels):]:
    ax.set_axis_off()
  fig.suptitle(f"{title}, layer {attention.layer}", fontsize=11)
  fig.savefig(path, dpi=DPI)
  return path


def plot_attention(model: EncoderDecoder | DecoderOnly, tokenizer, text: str, out_dir: str, *, max_len: int = 64,
                   max_input_len: int | None = None) -> list[str]:
  """Decodes ``text`` greedily and saves every layer's attention figure under ``out_dir``; returns their paths.

  ``model``: e.g. ``inference.load(workdir).model()``; see :func:`attention_maps` for the other arguments.
  """
  os.makedirs(out_dir, exist_ok=True)
  maps = attention_maps(model, tokenizer, text, max_len=max_len, max_input_len=max_input_len)
  return [plot_heads(m, os.path.join(out_dir, f"{m.kind}_layer{m.layer}.png")) for m in maps]
