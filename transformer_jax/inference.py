"""Inference with trained models: loading a training workdir, and jitted translation / LM sampling.

:func:`load` restores only the parameters (never the optimizer state) of a workdir's checkpoint, with the run's
config and vocabulary, onto the local devices. :func:`translate` and :func:`sample` take the parameters as an
argument and build the model and ``tokens_to_logits`` inside the ``jax.jit``, so parameters are never baked into
the compiled program as constants and sharded parameters work. :func:`decode_rows` pads token rows of different
lengths into one batch and runs whichever of the two the workdir's objective needs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from transformer_jax import checkpointing, decoding, sharding
from transformer_jax.models import DecoderOnly, EncoderDecoder, TransformerConfig, tokens_to_logits_fn
from transformer_jax.tokens import BOS_ID, EOS_ID

if TYPE_CHECKING:  # the tokenizer needs sentencepiece, an optional dependency: imported where a vocabulary is read
  from transformer_jax.data.tokenizer import Tokenizer

log = logging.getLogger(__name__)

AVERAGED = "averaged"  # ``load(..., checkpoint=AVERAGED)``: the averaged parameters in ``workdir/averaged``
MIN_BUCKET = 8  # shortest padded input length of decode_rows


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len", "beam_size", "alpha", "length_offset"))
def translate(graphdef: nnx.GraphDef, params: Any, inputs: jax.Array, *, max_len: int, beam_size: int = 1,
              alpha: float = 0.6, length_offset: int = 50) -> jax.Array:
  """Translations ``int32[batch, max_len]`` (EOS included, 0 after) of ``inputs int32[batch, src_len]``.

  ``beam_size`` 1 is greedy; otherwise the best beam under the GNMT length penalty ``alpha``. Each output is
  limited to its input length + ``length_offset`` tokens (the paper uses 50) and to ``max_len``.
  """
  model = nnx.merge(graphdef, params)
  model.init_cache(inputs, max_len + 1)
  tokens_to_logits, cache = tokens_to_logits_fn(model)
  start = jnp.full((inputs.shape[0],), BOS_ID, jnp.int32)
  limits = decoding.max_lengths_from_inputs(inputs, length_offset)
  if beam_size == 1:
    return decoding.greedy_search(tokens_to_logits, cache, start, max_len=max_len, eos_id=EOS_ID,
                                  max_lengths=limits)
  sequences, _ = decoding.beam_search(tokens_to_logits, cache, start, beam_size=beam_size, alpha=alpha,
                                      max_len=max_len, eos_id=EOS_ID, max_lengths=limits)
  return sequences[:, 0]


@functools.partial(jax.jit, static_argnames=("graphdef", "max_len", "top_k"))
def sample(graphdef: nnx.GraphDef, params: Any, prompts: jax.Array, rng: jax.Array, *, max_len: int,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Sampled continuations ``int32[batch, max_len]`` of LM ``prompts int32[batch, prompt_len]``.

  Prompts are right-padded with 0 and do not include BOS (it is prepended here). ``temperature`` 0 is greedy.
  """
  model = nnx.merge(graphdef, params)
  prompts = jnp.pad(prompts, ((0, 0), (1, 0)), constant_values=BOS_ID)
  model.init_cache(prompts.shape[0], prompts.shape[1] + max_len)
  tokens_to_logits, cache = tokens_to_logits_fn(model)
  return decoding.sample(tokens_to_logits, cache, prompts, rng, max_len=max_len, eos_id=EOS_ID,
                         temperature=temperature, top_k=top_k, top_p=top_p)


# --------------------------------------------------------------------------------------------------------------------
# Loading a training workdir


@dataclasses.dataclass(frozen=True)
class Loaded:
  """A trained model restored for inference.

  Attributes:
    config: the run's resolved config (``workdir/config.json``).
    tokenizer: its SentencePiece vocabulary.
    graphdef, params: the model as ``nnx.split(model, nnx.Param)``; params placed (replicated) on ``mesh``.
    objective: ``"translation"`` (:class:`EncoderDecoder`) or ``"lm"`` (:class:`DecoderOnly`).
    step: the training step of the restored checkpoint.
    model_config: the model's hyper-parameters.
    mesh: the local devices, batch split over ``data``.
  """

  config: ml_collections.ConfigDict
  tokenizer: Tokenizer
  graphdef: nnx.GraphDef
  params: nnx.State
  objective: str
  step: int
  model_config: TransformerConfig
  mesh: jax.sharding.Mesh

  def model(self) -> EncoderDecoder | DecoderOnly:
    """The model object (sharing the restored parameter arrays)."""
    return nnx.merge(self.graphdef, self.params)

  @property
  def max_input_len(self) -> int:
    """Longest input in tokens, as in training: source pieces + EOS (translation) or BOS + prompt pieces (LM)."""
    return min(self.config.data.max_length, self.model_config.max_len)

  @property
  def max_output_len(self) -> int:
    """Most tokens one call may generate, so that every position stays within the model's ``max_len``."""
    if self.objective == "translation":
      return self.model_config.max_len
    return self.model_config.max_len - self.max_input_len


def load(workdir: str, checkpoint: int | str | None = None, *, devices: Sequence[jax.Device] | None = None
         ) -> Loaded:
  """Restores a training workdir's model for inference.

  ``checkpoint``: ``None`` (the latest step in ``workdir/checkpoints``), a step number, or ``"averaged"`` (the
  parameters averaged at the end of training, ``workdir/averaged``). Only the parameters are read, onto the
  ``devices`` (default: the local ones), whatever mesh they were trained on. Raises ``FileNotFoundError`` with
  the fix for a missing workdir, config, vocabulary or checkpoint, and ``ValueError`` for a checkpoint of another
  model than the workdir's config describes.
  """
  from transformer_jax import train_lib  # pylint: disable=import-outside-toplevel  (train_lib imports this module)

  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = _read_config(workdir)
  tokenizer = _read_tokenizer(workdir, config)
  directory = os.path.join(workdir, AVERAGED if checkpoint == AVERAGED else "checkpoints")
  cfg = train_lib.model_config(config, tokenizer.vocab_size)
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"mesh": {"data": -1, "fsdp": 1, "tensor": 1}}),
                            list(devices or jax.local_devices()))
  abstract_model = nnx.eval_shape(lambda: train_lib.model_class(config.objective)(cfg, rngs=nnx.Rngs(0)))
  graphdef, abstract_params = nnx.split(abstract_model, nnx.Param)
  ckpt = _open_checkpoints(directory, workdir)
  try:
    step = _pick_step(ckpt, checkpoint, directory)
    where = os.path.join(directory, str(step))
    checkpointing.check_same_model(ckpt.meta(step), train_lib.model_identity(config.objective, cfg), where)
    params = ckpt.restore_params(step, abstract_params, sharding.tree_shardings(abstract_params, mesh))
  finally:
    ckpt.close()
  log.info("Loaded %s (%s, step %d) onto %d device(s).", where, config.objective, step, mesh.size)
  return Loaded(config, tokenizer, graphdef, params, config.objective, step, cfg, mesh)


def _train_hint(workdir: str, flags: str = "") -> str:
  return f"train a model first, e.g. `python train.py --workdir {workdir}{flags}`"


def _read_config(workdir: str) -> ml_collections.ConfigDict:
  """``workdir/config.json``, written by the training loop."""
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"No workdir {workdir}: {_train_hint(workdir)}.")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No config.json in {workdir}: it is not a training workdir; {_train_hint(workdir)}.")
  with open(path, encoding="utf-8") as f:
    return ml_collections.ConfigDict(json.load(f))


def _read_tokenizer(workdir: str, config: ml_collections.ConfigDict) -> Tokenizer:
  """The run's vocabulary: ``config.data.vocab_path`` if it was given, else ``workdir/vocab.model``."""
  from transformer_jax.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel

  path = config.data.get("vocab_path") or os.path.join(workdir, tokenizer_lib.VOCAB_FILENAME)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No vocabulary {path} for the workdir {workdir}: training writes it there on its "
                            f"first run; {_train_hint(workdir)}.")
  return tokenizer_lib.Tokenizer.load(path)


def _open_checkpoints(directory: str, workdir: str) -> checkpointing.Checkpointer:
  """The checkpoints in ``directory``, read-only; a clear error when there are none."""
  averaged = os.path.basename(directory) == AVERAGED
  hint = _train_hint(workdir, " --config.average_last_checkpoints=5" if averaged else "")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"No checkpoint in {workdir} ({directory} does not exist): {hint}.")
  ckpt = checkpointing.Checkpointer(workdir, name=os.path.basename(directory), read_only=True)
  if ckpt.latest_step() is None:
    ckpt.close()
    raise FileNotFoundError(f"No checkpoint in {directory} (training has not saved one yet): {hint}.")
  return ckpt


def _pick_step(ckpt: checkpointing.Checkpointer, checkpoint: int | str | None, directory: str) -> int:
  """The latest step for ``None`` / ``"averaged"``, else the named step, which must exist."""
  steps = ckpt.all_steps()
  if checkpoint in (None, AVERAGED):
    return ckpt.latest_step()
  if not str(checkpoint).isdigit() or int(checkpoint) not in steps:
    raise FileNotFoundError(f"No checkpoint {checkpoint!r} in {directory}: use a step among {sorted(steps)}, "
                            f"'{AVERAGED}', or leave it out for the latest.")
  return int(checkpoint)


# --------------------------------------------------------------------------------------------------------------------
# Decoding token rows of different lengths


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to generate: ``max_len`` new tokens at most; translation uses ``beam_size`` (1 = greedy) and ``alpha``,
  LM sampling uses ``temperature`` (0 = greedy), ``top_k`` (0 = off), ``top_p`` (1 = off) and ``seed``."""

  max_len: int = 64
  beam_size: int = 1
  alpha: float = 0.6
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0

  @classmethod
  def from_config(cls, decode: ml_collections.ConfigDict, **overrides) -> DecodeOptions:
    """The fields of a run's ``config.decode``; ``overrides`` that are not None take precedence."""
    values = {f.name: decode[f.name] for f in dataclasses.fields(cls) if f.name in decode}
    return cls(**{**values, **{k: v for k, v in overrides.items() if v is not None}})


def bucket_length(length: int, limit: int) -> int:
  """The padded length for rows of at most ``length`` tokens: the next power of two >= 8, capped at ``limit``."""
  return min(max(MIN_BUCKET, 1 << (max(length, 1) - 1).bit_length()), max(limit, length))


def pad_rows(rows: list[list[int]], num_rows: int, length: int) -> np.ndarray:
  """Right-pads token lists with 0 into ``int32[num_rows, length]`` (truncating longer rows)."""
  out = np.zeros((num_rows, length), np.int32)
  for i, ids in enumerate(rows):
    ids = ids[:length]
    out[i, : len(ids)] = ids
  return out


def decode_rows(loaded: Loaded, rows: Sequence[Sequence[int]], options: DecodeOptions, *, num_rows: int,
                batch_index: int = 0) -> np.ndarray:
  """Generated ids ``int32[len(rows), options.max_len]`` (EOS included, 0 after) for rows of different lengths.

  Translation: each row is source pieces + EOS, decoded greedily or by beam search. LM: each row is prompt pieces
  (no BOS), continued by sampling with the key ``fold_in(key(seed), batch_index)``. Rows are right-padded into
  ``int32[num_rows, L]`` (``num_rows`` rounded up to the batch shards), L from :func:`bucket_length`, so that a
  few shapes serve every batch (each new shape compiles once); the batch is split over the mesh's batch axes.
  """
  length = bucket_length(max(len(r) for r in rows), loaded.max_input_len)
  batch = pad_rows(rows, sharding.mesh_batch_multiple(loaded.mesh, max(num_rows, len(rows))), length)
  inputs = jax.device_put(batch, sharding.batch_sharding(loaded.mesh))
  if loaded.objective == "translation":
    ids = translate(loaded.graphdef, loaded.params, inputs, max_len=options.max_len, beam_size=options.beam_size,
                    alpha=options.alpha)
  else:
    rng = jax.random.fold_in(jax.random.key(options.seed), batch_index)
    ids = sample(loaded.graphdef, loaded.params, inputs, rng, max_len=options.max_len,
                 temperature=options.temperature, top_k=options.top_k, top_p=options.top_p)
  return multihost_utils.process_allgather(ids, tiled=True)[: len(rows)]


def encode_lines(loaded: Loaded, lines: Sequence[str]) -> tuple[list[list[int]], int]:
  """Token rows (``[]`` for empty lines) and the number of lines truncated to ``loaded.max_input_len`` tokens.

  Translation rows are source pieces + EOS; LM rows are prompt pieces (sampling prepends BOS). Either way a row
  keeps at most ``max_input_len - 1`` pieces.
  """
  keep = loaded.max_input_len - 1
  pieces = [loaded.tokenizer.encode(line.strip()) if line.strip() else [] for line in lines]
  suffix = [EOS_ID] if loaded.objective == "translation" else []
  rows = [p[:keep] + suffix if p else [] for p in pieces]
  return rows, sum(len(p) > keep for p in pieces)


def generate_lines(loaded: Loaded, lines: Sequence[str], options: DecodeOptions, *, batch_size: int = 32,
                   progress=None) -> list[str]:
  """One output text per input line, in order: translations, or LM prompts followed by their continuations.

  Empty lines give empty outputs; the non-empty ones are decoded ``batch_size`` at a time, sorted by length so that
  each batch pads little. Truncated overlong lines are counted in one warning. ``progress`` (optional) gets
  ``update(num_lines)`` after each batch and ``close()`` at the end.
  """
  rows, truncated = encode_lines(loaded, lines)
  if truncated:
    log.warning("%d of %d input lines are longer than the model's %d input tokens and were truncated.",
                truncated, len(lines), loaded.max_input_len)
  order = sorted((i for i, row in enumerate(rows) if row), key=lambda i: len(rows[i]))
  outputs = [""] * len(lines)
  for batch_index, start in enumerate(range(0, len(order), batch_size)):
    chunk = order[start:start + batch_size]
    generated = decode_rows(loaded, [rows[i] for i in chunk], options, num_rows=batch_size,
                                      batch_index=batch_index)
    for i, ids in zip(chunk, generated):
      prompt = rows[i] if loaded.objective == "lm" else []
      outputs[i] = loaded.tokenizer.decode(prompt + ids.tolist()).replace("\n", " ")
    if progress:
      progress.update(len(chunk))
  if progress:
    progress.close()
  return outputs
