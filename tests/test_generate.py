"""The workdir loader and the generation command line, end to end on two tiny workdirs trained once per module."""

import io
import itertools
import logging
import os
import re
import shutil
import subprocess
import sys

import jax
import pytest
from conftest import ROOT, load_config, shrink

from transformer_jax import generate, inference, train_lib

SCAN_LINES = ["jump twice after walk left", "walk", "run around right thrice", "look opposite left and jump",
              "turn left"]
FAST = ["--max_len", "8", "--batch_size", "2"]  # small shapes, shared by most tests so that they compile once


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """A translation workdir (SCAN, default config) and an LM workdir (lm_default on a small text file), shrunk."""
  root = tmp_path_factory.mktemp("generate")
  translation = shrink(load_config("default"), steps=6)
  translation.decode.num_eval_examples = 0
  translation.optimizer.update(schedule="constant", learning_rate=0.01)  # outputs other than EOS after 6 steps
  train_lib.train_and_evaluate(translation, str(root / "translation"))
  words = itertools.product(["the cat", "a dog", "my friend", "the old man"],
                            ["sat on", "looked at", "ran to", "jumped over"], ["the mat", "a tree", "the house"])
  (root / "corpus.txt").write_text("\n".join(" ".join(w) for w in words) * 3 + "\n")
  lm = shrink(load_config("lm_default"), steps=2)
  lm.data.update(name="local_text", path=str(root / "corpus.txt"), vocab_size=64, vocab_model_type="word")
  lm.decode.num_samples = 0
  train_lib.train_and_evaluate(lm, str(root / "lm"))
  return {"translation": str(root / "translation"), "lm": str(root / "lm")}


def run(tmp_path, workdir, lines, *flags):
  """``generate.main`` on ``lines`` written to a file; returns (exit status, output lines)."""
  source, target = tmp_path / "input.txt", tmp_path / "output.txt"
  source.write_text("".join(line + "\n" for line in lines))
  status = generate.main(["--workdir", workdir, "--input", str(source), "--output", str(target), *flags])
  return status, target.read_text().splitlines() if status == 0 else None


def test_translation_keeps_line_count_order_and_empty_lines(workdirs, tmp_path, capsys):
  lines = [SCAN_LINES[0], "", SCAN_LINES[1], "   ", *SCAN_LINES[2:]]
  status, outputs = run(tmp_path, workdirs["translation"], lines, *FAST)
  assert status == 0 and len(outputs) == len(lines)
  assert outputs[1] == outputs[3] == ""
  assert len({outputs[i] for i in (0, 2, 4, 5, 6)}) > 1  # the brief training already tells inputs apart
  assert "generate: 5/5 lines" in capsys.readouterr().err  # the progress bar, for a file
  _, reversed_outputs = run(tmp_path, workdirs["translation"], lines[::-1], *FAST)
  assert reversed_outputs == outputs[::-1]


def test_overlong_lines_are_truncated_with_one_counting_warning(workdirs, tmp_path, caplog):
  overlong = " ".join(["jump"] * 40)  # 40 pieces; the workdir's data.max_length is 32 tokens
  with caplog.at_level(logging.WARNING, logger="transformer_jax.generate"):
    status, outputs = run(tmp_path, workdirs["translation"], [overlong, "walk", overlong], *FAST)
  assert status == 0 and len(outputs) == 3
  warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
  assert len(warnings) == 1 and warnings[0].startswith("2 of 3 input lines") and "32 input tokens" in warnings[0]


def test_stdin_to_stdout_with_beam_search(workdirs, monkeypatch, capsys):
  monkeypatch.setattr(sys, "stdin", io.StringIO("walk\n\njump twice\n"))
  assert generate.main(["--workdir", workdirs["translation"], "--beam_size", "3", *FAST]) == 0
  captured = capsys.readouterr()
  outputs = captured.out.splitlines()
  assert len(outputs) == 3 and outputs[1] == ""
  assert "lines/s" not in captured.err  # no progress bar when reading stdin


def test_references_print_bleu_with_signature_and_exact_match(workdirs, tmp_path, capsys):
  lines = SCAN_LINES[:3]
  _, outputs = run(tmp_path, workdirs["translation"], lines, *FAST)
  references = tmp_path / "references.txt"
  references.write_text("\n".join(outputs) + "\n")
  capsys.readouterr()
  status, _ = run(tmp_path, workdirs["translation"], lines, *FAST, "--references", str(references))
  err = capsys.readouterr().err
  assert status == 0
  assert re.search(r"BLEU = 100\.00 \(nrefs:1\|case:mixed\|eff:no\|tok:13a\|smooth:exp\|version:[\d.]+\)", err)
  assert "exact match = 100.00% of 3 lines" in err
  references.write_text("one line\n")
  assert run(tmp_path, workdirs["translation"], lines, "--references", str(references))[0] == 1
  assert "--references has 1 lines but the input has 3" in capsys.readouterr().err


def test_lm_continues_each_prompt_reproducibly(workdirs, tmp_path):
  lines = ["the cat sat", "", "a dog"]
  flags = [*FAST, "--temperature", "1.0", "--top_k", "5", "--top_p", "0.9", "--seed", "3"]
  status, outputs = run(tmp_path, workdirs["lm"], lines, *flags)
  assert status == 0 and outputs[1] == ""
  assert outputs[0].startswith("the cat sat") and outputs[2].startswith("a dog")
  assert run(tmp_path, workdirs["lm"], lines, *flags)[1] == outputs  # same seed, same samples


def test_workdir_without_checkpoint_config_or_vocabulary_is_a_clear_error(workdirs, tmp_path, capsys):
  untrained = tmp_path / "untrained"
  untrained.mkdir()
  cases = [(None, tmp_path / "missing", "No workdir"), (None, untrained, "No config.json"),
           ("config.json", untrained, "No vocabulary"), ("vocab.model", untrained, "No checkpoint in")]
  for copied, workdir, message in cases:  # each case first copies one more file of a trained workdir
    if copied:
      shutil.copy(os.path.join(workdirs["translation"], copied), untrained / copied)
    assert generate.main(["--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and str(workdir) in err and "python train.py" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_load_a_named_step_and_clear_errors_for_missing_ones(workdirs):
  loaded = inference.load(workdirs["translation"], checkpoint="3")
  assert loaded.step == 3 and loaded.objective == "translation" and loaded.max_input_len == 32
  assert all(leaf.sharding.mesh == loaded.mesh for leaf in jax.tree.leaves(loaded.params))
  assert inference.load(workdirs["translation"]).step == 6  # the latest
  with pytest.raises(FileNotFoundError, match=r"No checkpoint 7 .* among \[3, 6\]"):
    inference.load(workdirs["translation"], checkpoint=7)
  with pytest.raises(FileNotFoundError, match="average_last_checkpoints"):
    inference.load(workdirs["translation"], checkpoint="averaged")


def test_plot_attention_flag_saves_figures_of_the_first_line(workdirs, tmp_path, capsys):
  pictures = tmp_path / "attention"
  status, _ = run(tmp_path, workdirs["translation"], ["", *SCAN_LINES[:2]], *FAST, "--plot_attention",
                  str(pictures))
  assert status == 0
  assert sorted(os.listdir(pictures)) == ["cross_attention_layer1.png", "decoder_self_attention_layer1.png",
                                          "encoder_self_attention_layer1.png"]
  assert f"Saved 3 attention figures of {SCAN_LINES[0]!r}" in capsys.readouterr().err


def test_command_line_in_a_subprocess_on_two_devices(workdirs):
  env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run([sys.executable, "-m", "transformer_jax.generate", "--workdir", workdirs["translation"],
                           "--max_len", "8"], input="walk\njump twice\n\nturn left\n", capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT, check=False)
  assert result.returncode == 0, result.stderr
  outputs = result.stdout.splitlines()
  assert len(outputs) == 4 and outputs[2] == ""
  assert result.stderr == ""  # absl/Orbax chatter silenced
