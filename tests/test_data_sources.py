"""Sources end to end through ``build``: SCAN, local corpora, Python stdlib, TFDS (mocked, offline), bad input."""

import gzip
import logging
import time
from unittest import mock

import numpy as np
import pytest

from transformer_jax.data import build, default_config, sources
from transformer_jax.tokens import EOS_ID

EN = ["A man sleeps.", "Two dogs run in the park.", "A girl reads a book.", "The sun is shining.", "Cats sleep."]
DE = ["Ein Mann schläft.", "Zwei Hunde laufen im Park.", "Ein Mädchen liest ein Buch.", "Die Sonne scheint.",
      "Katzen schlafen."]


def config(**overrides):
  c = default_config()
  c.update(dict(vocab_model_type="unigram", vocab_size=60, batch_size=4, eval_batch_size=4, max_length=24))
  c.update(overrides)
  return c


def write(path, lines, compress=False):
  data = "".join(line + "\n" for line in lines).encode("utf-8")
  path.write_bytes(gzip.compress(data) if compress else data)


@pytest.fixture
def parallel(tmp_path):
  folder = tmp_path / "corpus"
  folder.mkdir()
  write(folder / "train.en", EN * 4)
  write(folder / "train.de", DE * 4)
  write(folder / "val.en.gz", EN[:3], compress=True)
  write(folder / "val.de.gz", DE[:3], compress=True)
  return folder


def test_default_scan(tmp_path):
  data = build(default_config(), workdir=str(tmp_path), seed=0, process_index=0, process_count=1)
  assert data.objective == "translation" and data.features == ("inputs", "targets")
  assert data.tokenizer.vocab_size == 23  # 13 command words + 6 actions + 4 special pieces
  assert (tmp_path / "vocab.model").is_file()
  assert (data.num_train_examples, data.num_eval_examples, len(data.eval_examples)) == (16728, 4182, 4182)
  batch = next(data.train)
  assert batch["targets"].shape == (128, 64) and "targets_segmentation" in batch
  first = next(data.eval_batches())
  source, target = data.eval_examples[0]
  assert data.tokenizer.decode(first["inputs"][0]) == source
  assert data.tokenizer.decode(first["targets"][0]) == target
  assert data.train_lengths.overlong == 0


def test_local_translation(tmp_path, parallel):
  c = config(name="local_translation", path=str(parallel), source_lang="en", target_lang="de", eval_split="val",
             packing=False)
  data = build(c, workdir=str(tmp_path / "run"), seed=0, process_index=0, process_count=1)
  assert data.objective == "translation"
  assert data.eval_examples == list(zip(EN[:3], DE[:3]))
  batch = next(data.train)
  pairs = {(data.tokenizer.decode(i), data.tokenizer.decode(t)) for i, t in zip(batch["inputs"], batch["targets"])}
  assert pairs <= set(zip(EN, DE))
  assert np.all((batch["targets"] == EOS_ID).sum(axis=1) == 1)
  eval_batch = next(data.eval_batches())
  assert data.tokenizer.decode(eval_batch["targets"][2]) == DE[2] and not eval_batch["targets"][3].any()


def test_translate_folder_convention_and_two_processes(tmp_path):
  folder = tmp_path / "tf"
  folder.mkdir()
  for lang, lines in (("en", EN), ("de", DE)):
    write(folder / f"{lang}.train.txt", lines * 4)
    write(folder / f"{lang}.test.txt", lines)
  c = config(name="local_translation", path=str(folder), source_lang="de", target_lang="en")
  hosts = [build(c, workdir=str(tmp_path / "run"), seed=0, process_index=p, process_count=2) for p in range(2)]
  assert hosts[0].tokenizer.model_proto == hosts[1].tokenizer.model_proto  # process 1 reused process 0's file
  assert hosts[0].eval_examples[0] == (DE[0], EN[0])
  assert all(next(h.train)["inputs"].shape == (2, 24) for h in hosts)
  assert [len(list(h.eval_batches())) for h in hosts] == [2, 2]


def test_local_text_folder_glob_and_split_placeholder(tmp_path):
  folder = tmp_path / "text"
  folder.mkdir()
  write(folder / "a.txt", [f"line {i} of a" for i in range(60)])
  write(folder / "b.txt", [f"line {i} of b" for i in range(40)])
  for path in (str(folder), str(folder / "*.txt")):
    data = build(config(name="local_text", path=path), workdir=str(tmp_path / "run"), seed=0, process_index=0,
                 process_count=1)
    assert data.objective == "lm" and data.features == ("targets",)
    assert (data.num_train_examples, data.eval_examples) == (98, ["line 38 of b", "line 39 of b"])
    assert set(next(data.train)) == {"targets", "targets_segmentation", "targets_position"}
  corpus = sources.local_text(str(folder / "{split}.txt"), "a", "b")
  assert (len(corpus.train), len(corpus.eval)) == (60, 40)


def test_python_stdlib_corpus():
  corpus = sources.python_stdlib("train", "test")
  files = sources.stdlib_files()
  assert len(files) > 100 and files == sorted(files)
  assert not any("site-packages" in f.parts or "test" in f.parts for f in files)
  assert corpus.objective == "lm" and len(corpus.train) > 10 * len(corpus.eval) > 1000
  assert corpus.train[0]["targets"] and corpus.eval[0]["targets"] == corpus.eval[0]["targets"].strip()
  with pytest.raises(ValueError, match="splits"):
    sources.python_stdlib("train", "validation")


def test_empty_lines_are_skipped_and_counted(tmp_path, caplog):
  folder = tmp_path / "c"
  folder.mkdir()
  write(folder / "train.en", ["a b", "", "c d", "e f", "  "])
  write(folder / "train.de", ["x y", "z", "", "u v", "w"])
  write(folder / "test.en", ["a"])
  write(folder / "test.de", ["x"])
  with caplog.at_level(logging.INFO):
    corpus = sources.load(config(name="local_translation", path=str(folder), source_lang="en", target_lang="de"))
  assert corpus.skipped_empty == 3
  assert [corpus.train[i]["inputs"] for i in range(len(corpus.train))] == ["a b", "e f"]
  assert "skipped 3 empty" in caplog.text


def test_mismatched_line_counts_name_both_files(parallel):
  write(parallel / "train.de", DE * 4 + ["one more"])
  with pytest.raises(ValueError, match=r"train\.en has 20 lines, .*train\.de has 21"):
    sources.load(config(name="local_translation", path=str(parallel), source_lang="en", target_lang="de",
                        eval_split="val"))


def test_non_utf8_names_file_and_line(tmp_path):
  folder = tmp_path / "t"
  folder.mkdir()
  (folder / "bad.txt").write_bytes(b"fine\nstill fine\nbad \xff byte\n")
  with pytest.raises(UnicodeDecodeError, match=r"bad\.txt, line 3: not valid UTF-8"):
    sources.load(config(name="local_text", path=str(folder)))


def test_missing_folders_and_files(tmp_path, parallel):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    sources.load(config(name="local_translation", path=str(tmp_path / "nowhere"), source_lang="en",
                        target_lang="de"))
  with pytest.raises(FileNotFoundError, match="'fr'"):
    sources.load(config(name="local_translation", path=str(parallel), source_lang="en", target_lang="fr"))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    sources.load(config(name="local_text", path=str(tmp_path / "nowhere")))
  with pytest.raises(FileNotFoundError, match="No files match"):
    sources.load(config(name="local_text", path=str(tmp_path / "*.none")))
  with pytest.raises(ValueError, match="config.data.path"):
    sources.load(config(name="local_text"))
  with pytest.raises(ValueError, match="Unknown data source"):
    sources.load(config(name="wmt14"))


@pytest.fixture
def mocked_tfds():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  with tfds.testing.mock_data(num_examples=24), \
          mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    yield


def test_tfds_translation_mocked(tmp_path, mocked_tfds):
  c = config(name="tfds:wmt14_translate/de-en", source_lang="en", target_lang="de", max_eval_examples=10)
  data = build(c, workdir=str(tmp_path), seed=0, process_index=0, process_count=1)
  assert data.objective == "translation" and data.num_train_examples == 24
  assert len(data.eval_examples) == 10 and all(isinstance(s, str) for pair in data.eval_examples for s in pair)
  batch = next(data.train)
  assert batch["inputs"].shape == (4, 24) and batch["inputs"].any()
  assert len(list(data.eval_batches())) == 3


def test_tfds_lm_mocked(tmp_path, mocked_tfds):
  data = build(config(name="tfds:lm1b"), workdir=str(tmp_path), seed=0, process_index=0, process_count=2)
  assert data.objective == "lm" and set(next(data.train)) == {"targets", "targets_segmentation",
                                                              "targets_position"}
  assert len(data.eval_examples) == 24 and isinstance(data.eval_examples[0], str)
  with pytest.raises(ValueError, match="no feature"):
    sources.load(config(name="tfds:lm1b", text_feature="sentence"))


def test_tfds_not_prepared_fails_fast_without_download(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  start = time.monotonic()
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare",
                         side_effect=AssertionError("tried to download")) as download:
    with pytest.raises(FileNotFoundError) as error:
      sources.load(config(name="tfds:wmt14_translate/de-en", data_dir=str(tmp_path), source_lang="en",
                          target_lang="de"))
  assert time.monotonic() - start < 20 and not download.called
  message = str(error.value)
  for part in ("'wmt14_translate/de-en'", str(tmp_path), "tfds build wmt14_translate/de-en",
               "download=True", "local_translation"):
    assert part in message


def test_tfds_prepared_without_random_access(mocked_tfds):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  with mock.patch.object(tfds.core.DatasetBuilder, "as_data_source",
                         side_effect=NotImplementedError("prepared as tfrecord")):
    with pytest.raises(ValueError, match="--file_format=array_record"):
      sources.load(config(name="tfds:lm1b"))
