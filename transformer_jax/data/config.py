"""Data config (``config.data``): defaults for SCAN ``simple``, the project's offline default task."""

import ml_collections
from ml_collections.config_dict import placeholder


def default_config() -> ml_collections.ConfigDict:
  """The data fields with their SCAN defaults; other configs override what differs.

  Optional fields are typed placeholders (None by default) so that ``--config.data.path=...`` can set them.
  """
  c = ml_collections.ConfigDict()
  # Source: scan/<simple|length|addprim_jump>, tfds:<name>, local_translation, local_text or python_stdlib.
  c.name = "scan/simple"
  c.data_dir = placeholder(str)  # TFDS data_dir; None = TFDS default (TFDS_DATA_DIR or ~/tensorflow_datasets).
  c.download = False  # Allow TFDS to download and prepare a missing dataset (needs internet); else fail fast.
  c.source_lang = placeholder(str)  # Translation source feature/language (TFDS, local_translation), e.g. "en".
  c.target_lang = placeholder(str)  # Translation target feature/language, e.g. "de"; TFDS: both unset = language modeling.
  c.text_feature = "text"  # TFDS language modeling: the text feature (lm1b: "text").
  c.path = placeholder(str)  # local_translation: folder of parallel files; local_text: folder, file or glob ({split} allowed).
  c.train_split = "train"  # Training split (TFDS split name or local file prefix).
  c.eval_split = "test"  # Evaluation split (e.g. "validation" for WMT in TFDS, "val" for Multi30k files).
  c.vocab_path = placeholder(str)  # SentencePiece .model used as is; None = train one into workdir/vocab.model (reused).
  c.vocab_size = 23  # SCAN: 13 command + 6 action words + 4 special ids. Lowered (with a warning) if too large.
  c.vocab_model_type = "word"  # SentencePiece model: word (closed vocabularies like SCAN), unigram, bpe, char.
  c.max_length = 64  # Max tokens per sequence, EOS included (inputs and targets); SCAN needs 49.
  c.max_input_length = placeholder(int)  # Max tokens of translation inputs (row length); None = max_length.
  c.overlong = "drop"  # Longer examples: "truncate" or "drop" (counted and logged).
  c.packing = True  # Pack several training examples per row (segmentation/position features); eval is unpacked.
  c.batch_size = 128  # Global training batch in rows (packed rows hold several examples).
  c.tokens_per_batch = 0  # If > 0, overrides batch_size: rows = tokens_per_batch // max_length.
  c.eval_batch_size = 256  # Global eval batch in rows.
  c.max_eval_examples = placeholder(int)  # Use only the first N eval examples (eval loss and decoding); None = all.
  c.shuffle = True  # Shuffle training examples (per epoch) and packed rows from the run's seed.
  return c
