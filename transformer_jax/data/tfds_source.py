"""TFDS datasets by name (``tfds:<name>``), read with random access through ``tfds.data_source``.

Random access (ArrayRecord files) lets the pipeline shuffle, shard and resume by index without reading the
corpus up front. Two things fail fast instead of hanging or downloading behind the user's back:

- not prepared in ``data_dir`` and ``download`` is False: :class:`DatasetNotPreparedError` (no network attempt),
  naming the dataset, the data_dir, the ``tfds build`` command that prepares it and the offline alternatives;
- prepared in a sequential format (TFRecord): ``ValueError`` with the command that prepares ArrayRecord files.

With ``download=True`` the builder downloads and prepares ArrayRecord files into ``data_dir`` first (needs internet,
except for this project's offline ``scan_offline`` builder). Translation is chosen when both ``source_lang`` and
``target_lang`` are set (features named by language, as in ``wmt14_translate``); otherwise the dataset is a
language-modeling corpus read from ``text_feature``.
"""

from collections.abc import Sequence

import tensorflow_datasets as tfds

from transformer_jax.data import scan_tfds  # noqa: F401  (registers the offline "scan_offline" builder)
from transformer_jax.data.corpus import LM, TRANSLATION, Corpus, Example

RANDOM_ACCESS_FORMAT = "array_record"
OFFLINE_ALTERNATIVES = ("config.data.name='local_translation' (path: folder with train.<lang>/val.<lang>), "
                        "'local_text' (path: folder or glob of text files), 'python_stdlib' or 'scan/simple'")


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is absent from data_dir and downloading is not allowed."""


class FeatureView(Sequence):
  """Random access to TFDS records as examples: ``{"inputs": str, "targets": str}`` or ``{"targets": str}``."""

  def __init__(self, records: Sequence, features: dict[str, str]):
    """``features`` maps example keys (inputs, targets) to TFDS feature names."""
    self._records = records
    self._features = features

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> Example:
    if not 0 <= index < len(self):
      raise IndexError(f"Example {index} out of range [0, {len(self)}).")
    record = self._records[index]
    return {key: _text(record[feature]) for key, feature in self._features.items()}


def _text(value) -> str:
  """A TFDS Text value (bytes from ArrayRecord, str from mocks) as str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def builder(name: str, *, data_dir: str | None, download: bool) -> tfds.core.DatasetBuilder:
  """The prepared builder of ``name``; prepares it if ``download``, else raises if it is not prepared."""
  result = tfds.builder(name, data_dir=data_dir)
  if result.is_prepared():
    return result
  if download:
    result.download_and_prepare(file_format=RANDOM_ACCESS_FORMAT)
    return result
  root = result.data_dir_root
  raise DatasetNotPreparedError(
      f"TFDS dataset {name!r} is not prepared in data_dir {root} (no {result.data_path}), and "
      "config.data.download is False, so nothing was downloaded. Prepare it on a machine with internet: "
      f"`tfds build {name} --data_dir={root} --file_format={RANDOM_ACCESS_FORMAT}` (and copy the folder here), "
      f"or set config.data.download=True. Or train offline on a local corpus: {OFFLINE_ALTERNATIVES}.")


def load(name: str, *, data_dir: str | None, download: bool, train_split: str, eval_split: str,
         source_lang: str | None, target_lang: str | None, text_feature: str) -> Corpus:
  """The corpus of a TFDS dataset (see the module docstring for the objective and the failure modes)."""
  ds_builder = builder(name, data_dir=data_dir, download=download)
  available = set(ds_builder.info.features.keys())
  if source_lang and target_lang:
    objective, features = TRANSLATION, {"inputs": source_lang, "targets": target_lang}
  else:
    objective, features = LM, {"targets": text_feature}
  missing = set(features.values()) - available
  if missing:
    raise ValueError(f"TFDS dataset {name!r} has no feature(s) {sorted(missing)}; it has {sorted(available)} "
                     "(set config.data.source_lang/target_lang or text_feature).")
  try:
    splits = ds_builder.as_data_source(split=[train_split, eval_split])
  except NotImplementedError as e:
    raise ValueError(
        f"TFDS dataset {name!r} in {ds_builder.data_dir_root} was prepared without random access; prepare it "
        f"with `tfds build {name} --data_dir={ds_builder.data_dir_root} --file_format={RANDOM_ACCESS_FORMAT}` "
        "(or convert it with `tfds convert_format`).") from e
  train, evaluation = (FeatureView(split, features) for split in splits)
  return Corpus(objective=objective, train=train, eval=evaluation)
