"""SentencePiece wrapper: fixed special ids, round trip, adaptive vocab size, save/reuse in the workdir."""

import logging
import pathlib
import subprocess
import sys
import threading

import pytest

from transformer_jax.data import scan, tokenizer
from transformer_jax.tokens import BOS_ID, EOS_ID, PAD_ID, UNK_ID

TEXT = ["The quick brown fox jumps over the lazy dog.", "Der schnelle braune Fuchs springt über den faulen Hund.",
        "A man is sleeping on a green sofa.", "Ein Mann schläft in einem grünen Raum auf einem Sofa."] * 20


@pytest.fixture(scope="module")
def unigram():
  return tokenizer.train(TEXT, vocab_size=80, model_type="unigram")


def test_special_ids(unigram):
  pieces = [unigram.id_to_piece(i) for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID)]
  assert pieces == ["<pad>", "<unk>", "<s>", "</s>"]


def test_round_trip(unigram):
  for text in set(TEXT):
    ids = unigram.encode(text)
    assert ids and min(ids) > EOS_ID  # no special ids, no BOS/EOS added
    assert unigram.decode(ids) == text


def test_decode_stops_at_eos_and_skips_pad(unigram):
  ids = unigram.encode("A man is sleeping")
  assert unigram.decode([BOS_ID, *ids, EOS_ID, *unigram.encode("Hund"), PAD_ID]) == "A man is sleeping"
  assert unigram.decode([*ids, PAD_ID, PAD_ID]) == "A man is sleeping"


def test_vocab_size_capped_when_corpus_too_small(caplog):
  texts = [f"{c} {a}" for c, a in scan.generate()[:3000]]
  with caplog.at_level(logging.WARNING):
    tok = tokenizer.train(texts, vocab_size=1000, model_type="word")
  assert "too high" in caplog.text
  words = {w for t in texts for w in t.split()}
  assert tok.vocab_size == len(words) + 4
  assert tok.decode(tok.encode(texts[7])) == texts[7]
  assert len(tok.encode("jump twice after walk left")) == 5


def test_trained_once_into_workdir_then_reused(tmp_path):
  first = tokenizer.load_or_train(lambda: TEXT, workdir=str(tmp_path), vocab_path=None, vocab_size=60,
                                  model_type="bpe")
  assert (tmp_path / tokenizer.VOCAB_FILENAME).is_file()

  def must_not_train():
    raise AssertionError("retrained although workdir/vocab.model exists")

  for process_index in (0, 1):
    again = tokenizer.load_or_train(must_not_train, workdir=str(tmp_path), vocab_path=None, vocab_size=60,
                                    model_type="bpe", process_index=process_index)
    assert again.model_proto == first.model_proto


def test_vocab_path_used_as_is(tmp_path, unigram):
  path = tmp_path / "given.model"
  unigram.save(str(path))
  tok = tokenizer.load_or_train(lambda: ["other"], workdir=str(tmp_path / "run"), vocab_path=str(path),
                                vocab_size=5, model_type="word")
  assert tok.model_proto == unigram.model_proto
  assert not (tmp_path / "run" / tokenizer.VOCAB_FILENAME).exists()


def test_bad_model_type():
  with pytest.raises(ValueError, match="vocab_model_type"):
    tokenizer.train(TEXT, vocab_size=50, model_type="wordpiece")


def test_tokenizer_scan_and_build_do_not_import_tensorflow():
  code = ("import sys, transformer_jax.data, transformer_jax.data.scan, transformer_jax.data.tokenizer; "
          "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       cwd=pathlib.Path(__file__).parents[1])
  assert out.stdout.strip() == "[]"


def test_other_processes_wait_for_process_0(tmp_path, monkeypatch, unigram):
  monkeypatch.setattr(tokenizer, "POLL_SECONDS", 0.01)
  writer = threading.Timer(0.2, unigram.save, args=(str(tmp_path / tokenizer.VOCAB_FILENAME),))
  writer.start()
  tok = tokenizer.load_or_train(lambda: [], workdir=str(tmp_path), vocab_path=None, vocab_size=60,
                                model_type="unigram", process_index=1)
  writer.join()
  assert tok.model_proto == unigram.model_proto
  monkeypatch.setattr(tokenizer, "WAIT_SECONDS", 0.05)
  with pytest.raises(TimeoutError, match="shared"):
    tokenizer.load_or_train(lambda: [], workdir=str(tmp_path / "other"), vocab_path=None, vocab_size=60,
                            model_type="unigram", process_index=1)
