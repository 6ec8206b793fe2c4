"""The text a source provides: random-access train/eval examples of raw strings, before tokenization.

An example is a dict of strings: ``{"inputs": source, "targets": target}`` for translation, ``{"targets": text}``
for language modeling. Splits are any random-access sequence of examples (``len`` and ``[i]``), so the in-memory
corpora and TFDS ``ArrayRecord`` data sources are read the same way, lazily, by the pipeline.
"""

from collections.abc import Sequence
import dataclasses

TRANSLATION = "translation"
LM = "lm"
Example = dict[str, str]


class TextExamples(Sequence):
  """In-memory examples over parallel lists of strings (``inputs`` is None for language modeling)."""

  def __init__(self, targets: list[str], inputs: list[str] | None = None):
    if inputs is not None and len(inputs) != len(targets):
      raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets.")
    self._targets = targets
    self._inputs = inputs

  def __len__(self) -> int:
    return len(self._targets)

  def __getitem__(self, index: int) -> Example:
    if self._inputs is None:
      return {"targets": self._targets[index]}
    return {"inputs": self._inputs[index], "targets": self._targets[index]}


@dataclasses.dataclass(frozen=True)
class Corpus:
  """A source's train and eval examples.

  Attributes:
    objective: ``"translation"`` (examples have inputs and targets) or ``"lm"`` (targets only).
    train: random-access training examples.
    eval: random-access evaluation examples.
    skipped_empty: empty lines/pairs skipped while reading (local corpora; 0 elsewhere).
  """

  objective: str
  train: Sequence[Example]
  eval: Sequence[Example]
  skipped_empty: int = 0

  def training_texts(self, max_examples: int) -> list[str]:
    """Texts to train a shared vocabulary on: both sides of at most ``max_examples`` evenly spaced examples."""
    n = len(self.train)
    step = max(1, n // max_examples)
    return [text for i in range(0, n, step)[:max_examples] for text in self.train[i].values()]
