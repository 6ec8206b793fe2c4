"""SentencePiece tokenizer: trained on first use, saved in the workdir, reused on resume and at generation time.

Special ids are fixed for every model (see :mod:`transformer_jax.tokens`): ``pad=0, unk=1, bos=2, eos=3``; they
are passed to the SentencePiece trainer so a trained model always agrees with them. ``encode`` returns the pieces
only (no BOS/EOS): the data pipeline appends EOS and the models insert BOS when they shift targets right.

One vocabulary is shared by source and target (it is trained on both sides of a parallel corpus). The model type
is an explicit config choice (``vocab_model_type``): ``unigram`` or ``bpe`` for natural text, ``word`` for closed
vocabularies such as SCAN, whose 13 command words and 6 action words each become one piece. When the corpus is
too small for the requested ``vocab_size`` (SentencePiece raises "Vocabulary size too high ... <= N"), training is
retried with N and a warning is logged instead of crashing.
"""

from collections.abc import Callable, Iterable, Sequence
import io
import logging
import re
import time

from etils import epath
import sentencepiece as spm

from transformer_jax.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

log = logging.getLogger(__name__)

VOCAB_FILENAME = "vocab.model"
MODEL_TYPES = ("unigram", "bpe", "word", "char")
WAIT_SECONDS = 3600
POLL_SECONDS = 5
_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")


class Tokenizer:
  """A SentencePiece model with the project's fixed special ids."""

  def __init__(self, model_proto: bytes):
    """Wraps a serialized SentencePiece ``ModelProto``; checks its special ids."""
    self.model_proto = model_proto
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    ids = (self._sp.pad_id(), self._sp.unk_id(), self._sp.bos_id(), self._sp.eos_id())
    if ids != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
      raise ValueError(f"SentencePiece model has special ids (pad, unk, bos, eos) = {ids}; "
                       f"this project needs {(PAD_ID, UNK_ID, BOS_ID, EOS_ID)}.")

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    """Loads a ``.model`` file (local path or any path etils.epath understands, e.g. ``gs://``)."""
    return cls(epath.Path(path).read_bytes())

  def save(self, path: str) -> None:
    """Writes the model atomically (temporary file, then rename)."""
    path = epath.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(self.model_proto)
    tmp.rename(path)

  @property
  def vocab_size(self) -> int:
    """Number of pieces, special ids included."""
    return self._sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    """Text -> piece ids, without BOS/EOS."""
    return self._sp.encode(text)

  def decode(self, ids: Sequence[int]) -> str:
    """Piece ids (list or 1-D array) -> text; stops at the first EOS and skips PAD and BOS."""
    pieces = []
    for i in (int(i) for i in ids):
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        pieces.append(i)
    return self._sp.decode(pieces)

  def id_to_piece(self, i: int) -> str:
    """The piece string of one id (e.g. ``"▁jump"``, ``"<pad>"``)."""
    return self._sp.id_to_piece(int(i))


def train(sentences: Iterable[str], *, vocab_size: int, model_type: str) -> Tokenizer:
  """Trains a SentencePiece model; lowers ``vocab_size`` (and logs it) when the corpus is too small."""
  if model_type not in MODEL_TYPES:
    raise ValueError(f"vocab_model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
  sentences = list(sentences)
  try:
    return Tokenizer(_train_proto(sentences, vocab_size, model_type))
  except RuntimeError as e:
    match = _TOO_HIGH.search(str(e))
    if match is None:
      raise
    capped = int(match.group(2))
    log.warning("vocab_size %d is too high for this corpus (%s model); using %d instead.",
                    vocab_size, model_type, capped)
    return Tokenizer(_train_proto(sentences, capped, model_type))


def _train_proto(sentences: list[str], vocab_size: int, model_type: str) -> bytes:
  """Runs the SentencePiece trainer in memory and returns the serialized model."""
  writer = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=writer, vocab_size=vocab_size, model_type=model_type,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, minloglevel=2)
  return writer.getvalue()


def load_or_train(sentences: Callable[[], Iterable[str]], *, workdir: str, vocab_path: str | None,
                  vocab_size: int, model_type: str, process_index: int = 0) -> Tokenizer:
  """The run's tokenizer: ``vocab_path`` as is if given, else ``workdir/vocab.model`` (trained there if absent).

  Only process 0 trains; other processes wait for its file (the workdir is shared, as checkpoints need).
  ``sentences`` is called only when training is needed.
  """
  if vocab_path:
    log.info("Using the vocabulary %s as given.", vocab_path)
    return Tokenizer.load(vocab_path)
  path = epath.Path(workdir) / VOCAB_FILENAME
  if path.exists():
    log.info("Reusing the vocabulary %s.", path)
    return Tokenizer.load(str(path))
  if process_index != 0:
    return _wait_for(path)
  log.info("Training a %s SentencePiece vocabulary of size %d into %s.", model_type, vocab_size, path)
  tokenizer = train(sentences(), vocab_size=vocab_size, model_type=model_type)
  tokenizer.save(str(path))
  log.info("Saved the vocabulary (%d pieces) to %s.", tokenizer.vocab_size, path)
  return tokenizer


def _wait_for(path: epath.Path) -> Tokenizer:
  """Polls until process 0 has written the vocabulary; fails after ``WAIT_SECONDS``."""
  deadline = time.monotonic() + WAIT_SECONDS
  log.info("Waiting for process 0 to write the vocabulary %s.", path)
  while not path.exists():
    if time.monotonic() > deadline:
      raise TimeoutError(f"No vocabulary at {path} after {WAIT_SECONDS} s: process 0 trains it there; the "
                         "workdir must be shared by all processes (or set config.data.vocab_path).")
    time.sleep(POLL_SECONDS)
  return Tokenizer.load(str(path))
