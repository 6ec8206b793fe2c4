"""The training loop for both objectives: train state, pure train/eval steps, evaluation, the loop itself.

``train_and_evaluate(config, workdir)`` reads like a table of contents; each concern (data, sharding,
optimizer, checkpoints, metrics, decoding) lives in its own module.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
from typing import Any, Iterator

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils

from transformer_jax import checkpointing, inference, losses, metrics, optim, sharding
from transformer_jax.models import DecoderOnly, EncoderDecoder, TransformerConfig

Batch = dict[str, jax.Array]
log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  """Everything a step changes: ``step``, ``params`` (``nnx.State``), ``opt_state`` and ``rng`` (raw key data).

  The data iterator's position is host-side state; it is saved beside this pytree in every checkpoint.
  """

  step: jax.Array
  params: nnx.State
  opt_state: optax.OptState
  rng: jax.Array


# --------------------------------------------------------------------------------------------------------------
# Model and state


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> TransformerConfig:
  """The frozen :class:`TransformerConfig` from ``config.model`` and the tokenizer's vocabulary size."""
  return TransformerConfig(vocab_size=vocab_size, **config.model.to_dict())


def model_class(objective: str) -> type[EncoderDecoder] | type[DecoderOnly]:
  if objective not in ("translation", "lm"):
    raise ValueError(f"objective={objective!r} is unknown; use 'translation' or 'lm'.")
  return EncoderDecoder if objective == "translation" else DecoderOnly


def model_identity(objective: str, cfg: TransformerConfig) -> dict:
  """JSON-able identity saved with each checkpoint, to refuse restoring another model's checkpoint."""
  fields = {k: (str(v) if k in ("dtype", "param_dtype") else v) for k, v in dataclasses.asdict(cfg).items()}
  return {"objective": objective, **fields}


def create_train_state(objective: str, cfg: TransformerConfig, tx: optax.GradientTransformation, seed: int,
                       mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, TrainState, Any]:
  """Initialises the train state directly sharded on ``mesh`` (under ``jit`` with ``out_shardings``; never
  materialised whole on one device). Returns ``(graphdef, state, state_shardings)``."""
  cls = model_class(objective)

  def init() -> TrainState:
    params = nnx.state(cls(cfg, rngs=nnx.Rngs(seed)), nnx.Param)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=jax.random.key_data(jax.random.key(seed)))

  abstract = jax.eval_shape(init)
  shardings = sharding.tree_shardings(abstract, mesh)
  state = jax.jit(init, out_shardings=shardings)()
  graphdef = nnx.graphdef(nnx.eval_shape(lambda: cls(cfg, rngs=nnx.Rngs(seed))))
  return graphdef, state, shardings


# --------------------------------------------------------------------------------------------------------------
# Pure steps


def apply_model(graphdef: nnx.GraphDef, params: nnx.State, batch: Batch, *, rng: jax.Array | None = None
                ) -> jax.Array:
  """Logits ``float32[batch, len, vocab]`` for a translation (``inputs`` present) or LM batch; dropout iff ``rng``."""
  model = nnx.merge(graphdef, params)
  kw = dict(deterministic=rng is None, rngs=None if rng is None else nnx.Rngs(dropout=rng))
  if "inputs" in batch:
    return model(batch["inputs"], batch["targets"], batch.get("inputs_segmentation"),
                 batch.get("targets_segmentation"), batch.get("inputs_position"), batch.get("targets_position"), **kw)
  return model(batch["targets"], batch.get("targets_segmentation"), batch.get("targets_position"), **kw)


def microbatches(batch: Batch, num: int) -> Batch:
  """``[rows, ...]`` -> ``[num, rows // num, ...]``; micro-batch ``i`` takes rows ``i, i + num, ...`` so that each
  micro-batch stays spread over the batch-sharded devices."""
  return jax.tree.map(lambda x: x.reshape(x.shape[0] // num, num, *x.shape[1:]).swapaxes(0, 1), batch)


def train_step(state: TrainState, batch: Batch, *, graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
               schedule: optax.Schedule, label_smoothing: float, grad_accum_steps: int,
               axis_name: tuple[str, ...] | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step. Gradients of the summed token loss are accumulated over ``grad_accum_steps``
  micro-batches and divided by the total number of real tokens, so k micro-batches equal one big batch.

  ``axis_name``: inside ``jax.shard_map`` (the explicit data-parallel path), the mesh axes to ``psum`` the
  per-device gradient and metric sums over; each device also draws its own dropout masks.
  """
  rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng), state.step)
  if axis_name is not None:
    rng = jax.random.fold_in(rng, jax.lax.axis_index(axis_name))

  def loss_fn(params, micro, micro_rng):
    sums = losses.token_metrics(apply_model(graphdef, params, micro, rng=micro_rng), micro["targets"],
                                label_smoothing)
    return sums["loss"], sums

  def accumulate(carry, xs):
    micro, index = xs
    grads, sums = jax.grad(loss_fn, has_aux=True)(state.params, micro, jax.random.fold_in(rng, index))
    return jax.tree.map(jnp.add, carry, (grads, sums)), None

  zeros = (jax.tree.map(jnp.zeros_like, state.params), dict.fromkeys(("loss", "nll", "correct", "tokens"), 0.0))
  (grads, sums), _ = jax.lax.scan(accumulate, zeros, (microbatches(batch, grad_accum_steps),
                                                      jnp.arange(grad_accum_steps)))
  if axis_name is not None:
    grads, sums = jax.lax.psum((grads, sums), axis_name)
  grads = jax.tree.map(lambda g: g / jnp.maximum(sums["tokens"], 1.0), grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            opt_state=opt_state)
  return new_state, {**losses.normalize(sums), "learning_rate": schedule(state.step),
                     "grad_norm": optax.tree.norm(grads)}


def eval_step(params: nnx.State, batch: Batch, *, graphdef: nnx.GraphDef) -> dict[str, jax.Array]:
  """Token metric sums (no label smoothing) of one eval batch; all-zero padding rows count nothing."""
  return losses.token_metrics(apply_model(graphdef, params, batch), batch["targets"])


# --------------------------------------------------------------------------------------------------------------
# Evaluation


def evaluate_loss(eval_fn, params, batches: Iterator[dict[str, np.ndarray]], mesh) -> dict[str, float]:
  """``eval_loss``, ``eval_accuracy``, ``eval_perplexity`` over the whole eval split."""
  totals = None
  for batch in batches:
    sums = eval_fn(params, sharding.global_batch(batch, mesh))
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
  means = jax.device_get(losses.normalize(totals))
  return {"eval_loss": means["nll"], "eval_accuracy": means["accuracy"], "eval_perplexity": means["perplexity"]}


def evaluate_translation(loaded: inference.Loaded, examples) -> tuple[dict[str, float], str]:
  """BLEU (sacrebleu), exact match and a few example translations of ``(source, reference)`` pairs."""
  from transformer_jax import evaluation  # pylint: disable=import-outside-toplevel  (sacrebleu is a data extra)

  sources, references = [s for s, _ in examples], [t for _, t in examples]
  hyps = inference.generate_lines(loaded, sources, inference.DecodeOptions.from_config(loaded.config.decode, seed=loaded.config.seed),
                                  batch_size=loaded.config.data.eval_batch_size)
  bleu, signature = evaluation.bleu(hyps, references)
  log.info("BLEU signature: %s", signature)
  shown = "\n".join(f"{s}  ->  {h}  (ref: {r})" for s, h, r in list(zip(sources, hyps, references))[:3])
  return {"bleu": bleu, "exact_match": evaluation.exact_match(hyps, references)}, shown


def lm_samples(loaded: inference.Loaded, texts: list[str]) -> str:
  """Sampled continuations of the first ``decode.prompt_tokens`` pieces of a few eval texts."""
  decode = loaded.config.decode
  prompts = [loaded.tokenizer.decode(loaded.tokenizer.encode(t)[: decode.prompt_tokens])
             for t in texts[: decode.num_samples]]
  outputs = inference.generate_lines(loaded, prompts, inference.DecodeOptions.from_config(loaded.config.decode, seed=loaded.config.seed), batch_size=len(prompts))
  return "\n".join(f"[{p}] {o[len(p):].strip()}" for p, o in zip(prompts, outputs))


# --------------------------------------------------------------------------------------------------------------
# The loop


class StopOnSigterm:
  """While active, SIGTERM sets ``requested`` instead of killing the process, so that the loop can save a
  checkpoint and stop cleanly; the previous handler is restored on exit."""

  def __enter__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *_):
    signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, *_):
    log.warning("SIGTERM received: saving a checkpoint and stopping.")
    self.requested = True


def data_positions(train_iter) -> dict:
  """Every process's data-iterator position (each process reads its own shard), gathered for the checkpoint."""
  state = train_iter.get_state()
  keys = sorted(state)
  rows = multihost_utils.process_allgather(np.array([state[k] for k in keys], np.int64))
  return {"processes": [dict(zip(keys, map(int, row))) for row in rows]}


def restore_data_position(train_iter, positions: list[dict]) -> None:
  """Continues this process's data shard where the checkpoint left it. With another number of processes the shards
  differ, so the data restarts at the next epoch boundary instead (with a warning)."""
  if len(positions) == jax.process_count():
    train_iter.set_state(positions[jax.process_index()])
    return
  epoch = max(p["epoch"] for p in positions) + 1
  log.warning("The checkpoint's data positions are for %d processes, this run has %d: the data restarts at epoch %d.",
              len(positions), jax.process_count(), epoch)
  train_iter.set_state({"epoch": epoch, "index": 0})


def _write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
      f.write(config.to_json_best_effort(indent=2))


def _check_config(config: ml_collections.ConfigDict, datasets, mesh, cfg: TransformerConfig) -> None:
  """Clear errors before anything compiles."""
  if datasets.objective != config.objective:
    raise ValueError(f"objective={config.objective!r} but data.name={config.data.name!r} is a "
                     f"{datasets.objective!r} dataset; set --config.objective={datasets.objective}.")
  sharding.check_model_fits(mesh, cfg)
  sharding.check_batch_fits(mesh, datasets.global_batch_rows, "data.batch_size")
  sharding.check_batch_fits(mesh, config.data.eval_batch_size, "data.eval_batch_size")
  if datasets.global_batch_rows % config.grad_accum_steps:
    raise ValueError(f"grad_accum_steps={config.grad_accum_steps} does not divide the batch of "
                     f"{datasets.global_batch_rows} rows.")


@dataclasses.dataclass
class Experiment:
  """Everything the loop needs besides the train state: data, mesh, compiled steps, checkpoints, metrics."""

  config: ml_collections.ConfigDict
  workdir: str
  mesh: jax.sharding.Mesh
  datasets: Any
  graphdef: nnx.GraphDef
  model_config: TransformerConfig
  shardings: Any
  identity: dict
  ckpt: checkpointing.Checkpointer
  writer: metrics.MetricsWriter
  train_step: Any
  eval_step: Any
  final: dict = dataclasses.field(default_factory=dict)

  @property
  def lead(self) -> bool:
    return jax.process_index() == 0

  def as_loaded(self, params: nnx.State, step: int) -> inference.Loaded:
    """The params seen as a loaded model, so that evaluation decodes exactly as the generate CLI does."""
    return inference.Loaded(self.config, self.datasets.tokenizer, self.graphdef, params, self.config.objective, step,
                            self.model_config, self.mesh)

  def save(self, state: TrainState) -> None:
    self.ckpt.save(int(state.step), state, data_positions(self.datasets.train), self.identity)

  def evaluate(self, step: int, params: nnx.State, prefix: str = "") -> None:
    """Eval loss/accuracy/perplexity, plus BLEU and exact match of decoded outputs for translation."""
    config, datasets = self.config, self.datasets
    scores, texts = evaluate_loss(self.eval_step, params, datasets.eval_batches(), self.mesh), {}
    if config.objective == "translation" and config.decode.num_eval_examples:
      decoded, texts["translations"] = evaluate_translation(
          self.as_loaded(params, step), datasets.eval_examples[: config.decode.num_eval_examples])
      scores.update(decoded)
    scores = {prefix + k: v for k, v in scores.items()}
    self.final.update(scores)
    self.writer.write(step, scores, texts)
    if self.lead:
      print(f"eval at step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()), flush=True)
      if texts:
        print(texts["translations"], flush=True)


def setup(config: ml_collections.ConfigDict, workdir: str) -> tuple[Experiment, TrainState]:
  """Data, mesh, model, optimizer, compiled steps; the state restored from the latest checkpoint if any."""
  from transformer_jax import data as data_lib  # pylint: disable=import-outside-toplevel  (TF lives there)

  sharding.maybe_initialize_distributed(config.distributed)
  _write_config(config, workdir)
  mesh = sharding.make_mesh(config)
  datasets = data_lib.build(config.data, workdir=workdir, seed=config.seed)
  cfg = model_config(config, datasets.tokenizer.vocab_size)
  _check_config(config, datasets, mesh, cfg)
  tx, schedule = optim.make_optimizer(config.optimizer, cfg.d_model, config.num_train_steps)
  graphdef, state, shardings = create_train_state(config.objective, cfg, tx, config.seed, mesh)
  identity = model_identity(config.objective, cfg)
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.keep_checkpoints)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(ckpt.latest_step(), state, shardings, identity)
    restore_data_position(datasets.train, data_state["processes"])
    log.info("Resumed from step %d of %s", int(state.step), ckpt.directory)
  step_fn = sharding.compile_train_step(
      config, mesh, functools.partial(train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                      label_smoothing=config.label_smoothing,
                                      grad_accum_steps=config.grad_accum_steps), shardings)
  eval_fn = jax.jit(functools.partial(eval_step, graphdef=graphdef),
                    in_shardings=(shardings.params, sharding.batch_sharding(mesh)))
  writer = metrics.MetricsWriter(workdir, enabled=jax.process_index() == 0)
  return Experiment(config, workdir, mesh, datasets, graphdef, cfg, shardings, identity, ckpt, writer, step_fn,
                    eval_fn), state


def train_loop(exp: Experiment, state: TrainState, stop: StopOnSigterm) -> TrainState:
  """Steps until ``num_train_steps`` (or SIGTERM), logging, evaluating and checkpointing on schedule."""
  config = exp.config
  progress = metrics.Progress(int(state.step), config.num_train_steps, enabled=exp.lead)
  pending: list[dict[str, jax.Array]] = []
  for step in range(int(state.step) + 1, config.num_train_steps + 1):
    state, step_metrics = exp.train_step(state, sharding.global_batch(next(exp.datasets.train), exp.mesh))
    pending.append(step_metrics)
    last = step == config.num_train_steps
    if step % config.log_every_steps == 0 or last:
      pending = jax.device_get(pending)
      summary = {k: np.mean([m[k] for m in pending]) for k in pending[0]}
      summary.update(progress.update(step, sum(float(m["tokens"]) for m in pending)))
      pending = []
      exp.writer.write(step, summary)
      progress.print(step, summary)
      exp.final["loss"] = summary["loss"]
    if step % config.eval_every_steps == 0 or last:
      exp.evaluate(step, state.params)
    if step % config.checkpoint_every_steps == 0 or last or stop.requested:
      exp.save(state)
    if stop.requested:
      break
  exp.ckpt.wait()
  return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (resuming from ``workdir`` if it holds a checkpoint), evaluates and checkpoints; returns final metrics."""
  exp, state = setup(config, workdir)
  with StopOnSigterm() as stop:
    state = train_loop(exp, state, stop)
  if config.average_last_checkpoints > 1 and not stop.requested:
    averaged = average_checkpoints(config, workdir, exp.ckpt, state, exp.shardings, exp.identity)
    exp.evaluate(int(state.step), averaged, prefix="averaged_")
  if config.objective == "lm" and config.decode.num_samples:  # every process samples, process 0 prints
    samples = lm_samples(exp.as_loaded(state.params, int(state.step)), exp.datasets.eval_examples)
    if exp.lead:
      print("Samples:\n" + samples)
  exp.ckpt.close()
  exp.writer.close()
  _print_summary(exp.final, exp.ckpt.directory, workdir, exp.lead)
  return exp.final


def average_checkpoints(config, workdir, ckpt, state, shardings, identity) -> nnx.State:
  """Averages the params of the last ``average_last_checkpoints`` checkpoints (the paper's trick) and saves them,
  as a train state, under ``workdir/averaged`` (``generate --checkpoint averaged`` uses it)."""
  steps = ckpt.all_steps()[-config.average_last_checkpoints:]
  log.info("Averaging the parameters of checkpoints %s", steps)
  averaged = checkpointing.average_params(ckpt, steps, state, shardings)
  out = checkpointing.Checkpointer(workdir, name="averaged", max_to_keep=1, async_save=False)
  out.save(int(state.step), state.replace(params=averaged), {"averaged_steps": steps}, identity)
  out.close()
  return averaged


def _print_summary(final: dict[str, float], checkpoint_dir: str, workdir: str, lead: bool) -> None:
  if not lead:
    return
  print("\nFinished. Final metrics: " + json.dumps({k: round(float(v), 4) for k, v in final.items()}))
  print(f"Checkpoints: {checkpoint_dir}")
  print(f"Generate with: python -m transformer_jax.generate --workdir {workdir}")
