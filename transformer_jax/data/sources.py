"""Data sources selected by ``config.data.name``; each yields a :class:`~transformer_jax.data.corpus.Corpus`.

=====================  ==========  ================================================================================
name                   objective   data
=====================  ==========  ================================================================================
``scan/<kind>``        translation SCAN generated offline (kind: simple, length, addprim_jump); splits train/test.
``tfds:<tfds name>``   either      Any prepared TFDS dataset (``wmt14_translate/de-en``, ``lm1b``...): translation
                                   when source_lang and target_lang are set, else LM on ``text_feature``.
``local_translation``  translation Folder ``path`` of line-aligned files per split and language (``train.en``,
                                   ``val.de.gz``, or TranslateFolder's ``en.train.txt``); splits = file prefixes.
``local_text``         lm          Plain text files: ``path`` is a folder, a file or a glob; one example per
                                   non-empty line. With ``{split}`` in ``path`` (``data/{split}.txt``) the split
                                   names select the files, otherwise the last 1/50 of the lines is the ``test``
                                   split and the rest ``train``.
``python_stdlib``      lm          The Python standard library's ``.py`` files (``sysconfig`` stdlib path, without
                                   test and site-packages folders, sorted); one example per non-empty line; every
                                   50th file is the ``test`` split, the others ``train``. Exists on every machine.
=====================  ==========  ================================================================================

Only the TFDS source imports TensorFlow Datasets (lazily). Bad-input policies of local files are in
:mod:`transformer_jax.data.text_files`.
"""

import logging
import pathlib
import sysconfig

import ml_collections

from transformer_jax.data import scan, text_files
from transformer_jax.data.corpus import LM, TRANSLATION, Corpus, TextExamples

log = logging.getLogger(__name__)

HELD_OUT_EVERY = 50
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def load(config: ml_collections.ConfigDict) -> Corpus:
  """The corpus named by ``config.name`` (``config`` is ``config.data``)."""
  name = config.name
  if name.startswith("scan/"):
    corpus = scan_corpus(name.removeprefix("scan/"), config.train_split, config.eval_split)
  elif name.startswith("tfds:"):
    from transformer_jax.data import tfds_source  # pylint: disable=import-outside-toplevel  (imports TF)
    corpus = tfds_source.load(name.removeprefix("tfds:"), data_dir=config.data_dir, download=config.download,
                              train_split=config.train_split, eval_split=config.eval_split,
                              source_lang=config.source_lang, target_lang=config.target_lang,
                              text_feature=config.text_feature)
  elif name == "local_translation":
    corpus = local_translation(_required(config, "path"), config.train_split, config.eval_split,
                               _required(config, "source_lang"), _required(config, "target_lang"))
  elif name == "local_text":
    corpus = local_text(_required(config, "path"), config.train_split, config.eval_split)
  elif name == "python_stdlib":
    corpus = python_stdlib(config.train_split, config.eval_split)
  else:
    raise ValueError(f"Unknown data source {name!r}: use scan/<simple|length|addprim_jump>, tfds:<name>, "
                     "local_translation, local_text or python_stdlib.")
  if corpus.skipped_empty:
    log.info("%s: skipped %d empty lines/pairs.", name, corpus.skipped_empty)
  return corpus


def _required(config: ml_collections.ConfigDict, field: str) -> str:
  """A config field that this source needs."""
  value = config.get(field)
  if not value:
    raise ValueError(f"config.data.{field} must be set for data source {config.name!r}.")
  return value


def _pick(splits: dict, split: str, source: str):
  """One split of a source with fixed split names."""
  if split not in splits:
    raise ValueError(f"{source} has splits {sorted(splits)}, not {split!r}.")
  return splits[split]


def scan_corpus(kind: str, train_split: str, eval_split: str) -> Corpus:
  """SCAN split ``kind`` (commands -> actions)."""
  parts = {name: TextExamples(targets=[a for _, a in pairs], inputs=[c for c, _ in pairs])
           for name, pairs in scan.splits(kind).items()}
  return Corpus(TRANSLATION, _pick(parts, train_split, f"scan/{kind}"), _pick(parts, eval_split, f"scan/{kind}"))


def local_translation(path: str, train_split: str, eval_split: str, source_lang: str, target_lang: str) -> Corpus:
  """A folder of line-aligned parallel files (conventions in :mod:`transformer_jax.data.text_files`)."""
  folder = pathlib.Path(path).expanduser()
  train_src, train_tgt, train_skipped = text_files.read_parallel(folder, train_split, source_lang, target_lang)
  eval_src, eval_tgt, eval_skipped = text_files.read_parallel(folder, eval_split, source_lang, target_lang)
  return Corpus(TRANSLATION, TextExamples(train_tgt, train_src), TextExamples(eval_tgt, eval_src),
                skipped_empty=train_skipped + eval_skipped)


def local_text(path: str, train_split: str, eval_split: str) -> Corpus:
  """Plain text files, one example per non-empty line (split rule in the module docstring)."""
  path = str(pathlib.Path(path).expanduser())
  if "{split}" in path:
    train, train_skipped = text_files.read_texts(text_files.text_files(path.format(split=train_split)))
    evaluation, eval_skipped = text_files.read_texts(text_files.text_files(path.format(split=eval_split)))
    return Corpus(LM, TextExamples(train), TextExamples(evaluation), skipped_empty=train_skipped + eval_skipped)
  lines, skipped = text_files.read_texts(text_files.text_files(path))
  cut = len(lines) - max(1, len(lines) // HELD_OUT_EVERY)
  parts = {"train": lines[:cut], "test": lines[cut:]}
  return Corpus(LM, TextExamples(_pick(parts, train_split, path)), TextExamples(_pick(parts, eval_split, path)),
                skipped_empty=skipped)


def stdlib_files() -> list[pathlib.Path]:
  """The standard library's ``.py`` files outside test/site-packages folders, in sorted (deterministic) order."""
  root = pathlib.Path(sysconfig.get_paths()["stdlib"])
  return sorted(p for p in root.rglob("*.py")
                if p.is_file() and not STDLIB_EXCLUDED_DIRS.intersection(p.relative_to(root).parts[:-1]))


def python_stdlib(train_split: str, eval_split: str) -> Corpus:
  """The Python standard library's sources as an LM corpus; every 50th file is held out as ``test``."""
  files = stdlib_files()
  if not files:
    raise FileNotFoundError(f"No Python standard library sources under {sysconfig.get_paths()['stdlib']}.")
  train, train_skipped = text_files.read_texts([f for i, f in enumerate(files) if i % HELD_OUT_EVERY])
  evaluation, eval_skipped = text_files.read_texts(files[::HELD_OUT_EVERY])
  parts = {"train": TextExamples(train), "test": TextExamples(evaluation)}
  return Corpus(LM, _pick(parts, train_split, "python_stdlib"), _pick(parts, eval_split, "python_stdlib"),
                skipped_empty=train_skipped + eval_skipped)
