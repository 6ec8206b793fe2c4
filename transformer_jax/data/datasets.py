"""Entry point of the data layer: ``build(config.data, ...)`` -> :class:`Datasets`."""

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import functools
import logging

import jax
import ml_collections
import numpy as np

from transformer_jax.data import pipeline, sources
from transformer_jax.data import tokenizer as tokenizer_lib
from transformer_jax.data.corpus import TRANSLATION, Corpus, Example, TextExamples

log = logging.getLogger(__name__)

MAX_VOCAB_EXAMPLES = 200_000  # evenly spaced training examples (both sides) to train the vocabulary on


@dataclasses.dataclass
class Datasets:
  """What training and evaluation need from the data.

  Attributes:
    objective: ``"translation"`` or ``"lm"``.
    tokenizer: the shared SentencePiece tokenizer.
    train: infinite iterator of host-local training batches (dicts of int32 ``[rows, max_length]``);
      ``train.get_state()`` is a small JSON-serialisable dict, ``train.set_state(state)`` resumes a fresh one.
    eval_batches: ``eval_batches()`` returns a fresh finite iterator of host-local eval batches.
    eval_examples: raw eval texts for decoding metrics: ``(source, target)`` pairs for translation, texts for LM
      (all processes get the same, global list).
    features: ``("inputs", "targets")`` or ``("targets",)``.
    global_batch_rows: rows of the global training batch (host-local rows times process_count).
    num_train_examples, num_eval_examples: sizes of the whole splits (eval after max_eval_examples).
    skipped_empty: empty lines/pairs skipped while reading local corpora.
    train_lengths, eval_lengths: live counts of overlong examples (``seen``, ``overlong``) for logging.
  """

  objective: str
  tokenizer: tokenizer_lib.Tokenizer
  train: pipeline.TrainIterator
  eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
  eval_examples: list
  features: tuple[str, ...]
  global_batch_rows: int
  num_train_examples: int
  num_eval_examples: int
  skipped_empty: int
  train_lengths: pipeline.LengthPolicy
  eval_lengths: pipeline.LengthPolicy


def global_batch_rows(config: ml_collections.ConfigDict) -> int:
  """Rows per global training batch: ``tokens_per_batch // max_length`` if tokens_per_batch > 0 else batch_size."""
  rows = config.tokens_per_batch // config.max_length if config.tokens_per_batch > 0 else config.batch_size
  if rows < 1:
    raise ValueError(f"tokens_per_batch={config.tokens_per_batch} is less than max_length={config.max_length}.")
  return rows


def local_rows(rows: int, process_count: int, field: str) -> int:
  """A global batch's rows on one process."""
  if rows % process_count:
    raise ValueError(f"{field}: {rows} rows are not divisible by process_count={process_count}.")
  return rows // process_count


def _eval_examples(objective: str, examples: Sequence[Example]) -> list:
  """Raw eval texts: (source, target) pairs for translation, texts for LM."""
  if objective == TRANSLATION:
    return [(e["inputs"], e["targets"]) for e in examples]
  return [e["targets"] for e in examples]


def _limited(examples: Sequence[Example], limit: int | None) -> list[Example]:
  """The first ``limit`` examples (all if None), in memory."""
  n = len(examples) if limit is None else min(limit, len(examples))
  return [examples[i] for i in range(n)]


def build(config: ml_collections.ConfigDict, *, workdir: str, seed: int, process_index: int | None = None,
          process_count: int | None = None) -> Datasets:
  """Loads the source named by ``config.name``, the tokenizer, and the train/eval pipelines of this process.

  Args:
    config: ``config.data`` (fields documented in :mod:`transformer_jax.data.config`).
    workdir: run directory; the vocabulary is trained into ``workdir/vocab.model`` unless ``config.vocab_path``.
    seed: shuffling/packing seed; the same seed gives the same batches.
    process_index, process_count: default to ``jax.process_index()`` / ``jax.process_count()``.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  corpus: Corpus = sources.load(config)
  tokenizer = tokenizer_lib.load_or_train(
      functools.partial(corpus.training_texts, MAX_VOCAB_EXAMPLES), workdir=workdir, vocab_path=config.vocab_path,
      vocab_size=config.vocab_size, model_type=config.vocab_model_type, process_index=process_index)
  features = ("inputs", "targets") if corpus.objective == TRANSLATION else ("targets",)
  encode = pipeline.encoder(tokenizer)
  rows = global_batch_rows(config)
  train_lengths = pipeline.LengthPolicy(config.max_length, config.overlong, "train", config.max_input_length)
  eval_lengths = pipeline.LengthPolicy(config.max_length, config.overlong, "eval", config.max_input_length)
  train = pipeline.TrainIterator(
      corpus.train, encode, train_lengths, features=features, rows=local_rows(rows, process_count, "batch"),
      packing=config.packing, shuffle=config.shuffle, seed=seed, process_index=process_index,
      process_count=process_count, cache=isinstance(corpus.train, TextExamples))
  evaluation = _limited(corpus.eval, config.max_eval_examples)
  eval_batches = functools.partial(
      pipeline.eval_batches, evaluation, encode, eval_lengths, features=features,
      rows=local_rows(config.eval_batch_size, process_count, "eval_batch_size"), process_index=process_index,
      process_count=process_count)
  log.info("Data %s (%s): %d train / %d eval examples, vocabulary %d, global batch %d rows of %d tokens, "
               "process %d of %d.", config.name, corpus.objective, len(corpus.train), len(evaluation),
               tokenizer.vocab_size, rows, config.max_length, process_index, process_count)
  return Datasets(objective=corpus.objective, tokenizer=tokenizer, train=train, eval_batches=eval_batches,
                  eval_examples=_eval_examples(corpus.objective, evaluation), features=features,
                  global_batch_rows=rows, num_train_examples=len(corpus.train), num_eval_examples=len(evaluation),
                  skipped_empty=corpus.skipped_empty, train_lengths=train_lengths, eval_lengths=eval_lengths)
