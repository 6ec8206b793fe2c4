"""Batching: packing invariants, padding, overlong policy, determinism, resumption, sharding, eval batches."""

import collections
import json
import logging

import numpy as np
import pytest

from transformer_jax.data import datasets, default_config, pipeline
from transformer_jax.data.corpus import TextExamples
from transformer_jax.tokens import EOS_ID


def encode(example):
  """Test encoder: texts are space-separated integer ids; EOS appended."""
  return {k: np.array([int(w) for w in text.split()] + [EOS_ID], np.int32) for k, text in example.items()}


def translation_examples(n, seed=0):
  """Example i: inputs start with id 1000 + i, targets with 5000 + i; random lengths 1..12 pieces."""
  rng = np.random.default_rng(seed)
  inputs, targets = [], []
  for i in range(n):
    inputs.append(" ".join(map(str, [1000 + i] + [7] * int(rng.integers(0, 12)))))
    targets.append(" ".join(map(str, [5000 + i] + [8] * int(rng.integers(0, 12)))))
  return TextExamples(targets, inputs)


def iterator(examples, *, features=("inputs", "targets"), rows=4, max_length=16, overlong="drop", packing=True,
             shuffle=True, seed=0, process_index=0, process_count=1):
  lengths = pipeline.LengthPolicy(max_length, overlong, "train")
  return pipeline.TrainIterator(examples, encode, lengths, features=features, rows=rows, packing=packing,
                                shuffle=shuffle, seed=seed, process_index=process_index,
                                process_count=process_count)


def segments(batch, key):
  """Yields (row, segment id, tokens, positions) of every packed example."""
  for row in range(batch[key].shape[0]):
    for seg in np.unique(batch[key + "_segmentation"][row]):
      if seg:
        mask = batch[key + "_segmentation"][row] == seg
        yield row, seg, batch[key][row][mask], batch[key + "_position"][row][mask]


def test_worked_example_of_the_docstring():
  examples = TextExamples(["5 6", "7 8 9", "4", "9 9"])
  batch = next(iterator(examples, features=("targets",), rows=2, max_length=6, shuffle=False))
  np.testing.assert_array_equal(batch["targets"], [[5, 6, 3, 4, 3, 0], [7, 8, 9, 3, 0, 0]])
  np.testing.assert_array_equal(batch["targets_segmentation"], [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 0, 0]])
  np.testing.assert_array_equal(batch["targets_position"], [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0]])


def test_packing_invariants():
  n = 50
  it = iterator(translation_examples(n), shuffle=False)
  seen = []
  while it.get_state()["epoch"] == 0:
    batch = next(it)
    assert set(batch) == {"inputs", "targets", "inputs_segmentation", "targets_segmentation",
                          "inputs_position", "targets_position"}
    assert all(v.shape == (4, 16) and v.dtype == np.int32 for v in batch.values())
    for key in ("inputs", "targets"):
      # Every token is in exactly one segment; padding is in none and has position 0.
      np.testing.assert_array_equal(batch[key] != 0, batch[key + "_segmentation"] != 0)
      np.testing.assert_array_equal(batch[key + "_position"][batch[key] == 0], 0)
      for row in range(4):
        segs = batch[key + "_segmentation"][row]
        ids = segs[segs > 0]
        assert np.all(np.diff(ids) >= 0) and set(ids) == set(range(1, ids.max() + 1))  # contiguous 1..k
    inputs = {(r, s): (t, p) for r, s, t, p in segments(batch, "inputs")}
    for row, seg, tokens, positions in segments(batch, "targets"):
      np.testing.assert_array_equal(positions, np.arange(len(tokens)))  # restarts per segment
      assert tokens[-1] == EOS_ID
      source, source_positions = inputs[(row, seg)]
      np.testing.assert_array_equal(source_positions, np.arange(len(source)))
      assert tokens[0] - 5000 == source[0] - 1000  # same example in inputs and targets
      seen.append(int(tokens[0]) - 5000)
  index = it.get_state()["index"]
  assert collections.Counter(seen) == collections.Counter(list(range(n)) + list(range(index)))


def test_padded_mode_one_example_per_row():
  batch = next(iterator(translation_examples(10), packing=False, shuffle=False))
  assert set(batch) == {"inputs", "targets"}
  np.testing.assert_array_equal(batch["targets"][:, 0], [5000, 5001, 5002, 5003])
  assert np.all((batch["targets"] == EOS_ID).sum(axis=1) == 1)


def test_shuffle_is_a_permutation_per_epoch():
  it = iterator(translation_examples(24), packing=False, rows=1)
  first = [int(next(it)["targets"][0, 0]) - 5000 for _ in range(24)]
  second = [int(next(it)["targets"][0, 0]) - 5000 for _ in range(24)]
  assert sorted(first) == sorted(second) == list(range(24))
  assert first != list(range(24)) and first != second


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_overlong_is_counted_and_logged(overlong, caplog):
  examples = TextExamples(["4 4 4 4 4 4 4 4 4 4 4", "5 5", "6 6 6", "7"])
  lengths = pipeline.LengthPolicy(8, overlong, "train")
  it = pipeline.TrainIterator(examples, encode, lengths, features=("targets",), rows=3, packing=False,
                              shuffle=False, seed=0, process_index=0, process_count=1)
  with caplog.at_level(logging.WARNING):
    batch = next(it)
  assert (lengths.overlong, lengths.seen) == (1, 4 if overlong == "drop" else 3)
  assert "1 of 1 examples so far were longer than max_length=8" in caplog.text
  assert ("dropped" if overlong == "drop" else "truncated") in caplog.text
  if overlong == "truncate":
    np.testing.assert_array_equal(batch["targets"][0], [4] * 8)
  else:
    assert batch["targets"][:, 0].tolist() == [5, 6, 7]


def test_drop_skips_runs_of_overlong_examples_across_epochs_but_fails_if_all_are():
  it = iterator(TextExamples(["4 4 4 4", "5", "6 6 6 6"]), features=("targets",), rows=1, max_length=3,
                packing=False)
  assert [int(next(it)["targets"][0, 0]) for _ in range(20)] == [5] * 20
  it = iterator(TextExamples(["4 4 4 4", "5 5 5 5"]), features=("targets",), max_length=3, packing=False)
  with pytest.raises(ValueError, match="Every training example is longer"):
    next(it)


@pytest.mark.parametrize("packing", [True, False])
def test_same_seed_same_batches(packing):
  examples = translation_examples(40)
  a, b, c = (iterator(examples, packing=packing, seed=s) for s in (3, 3, 4))
  batches = [next(a) for _ in range(6)]
  for x, y in zip(batches, [next(b) for _ in range(6)]):
    assert all(np.array_equal(x[k], y[k]) for k in x)
  assert any(not np.array_equal(x["targets"], next(c)["targets"]) for x in batches)


@pytest.mark.parametrize("packing", [True, False])
def test_resume_continues_exactly(packing):
  examples = translation_examples(30)
  uninterrupted = iterator(examples, packing=packing, seed=7)
  interrupted = iterator(examples, packing=packing, seed=7)
  for _ in range(5):
    next(uninterrupted)
    next(interrupted)
  state = json.loads(json.dumps(interrupted.get_state()))
  resumed = iterator(examples, packing=packing, seed=7)
  resumed.set_state(state)
  for _ in range(12):  # crosses epoch boundaries
    expected, got = next(uninterrupted), next(resumed)
    assert expected.keys() == got.keys()
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_two_processes_read_disjoint_shards_covering_the_split():
  examples = translation_examples(21)
  shards = []
  for process_index in range(2):
    it = iterator(examples, packing=False, rows=1, process_index=process_index, process_count=2)
    size = len(pipeline.shard_indices(21, process_index, 2))
    shards.append({int(next(it)["targets"][0, 0]) - 5000 for _ in range(size)})
    assert it.get_state() == {"epoch": 1, "index": 0}
  assert not shards[0] & shards[1]
  assert shards[0] | shards[1] == set(range(21))


def test_eval_batches_pad_last_batch_and_keep_hosts_in_step():
  examples = translation_examples(10)
  lengths = pipeline.LengthPolicy(16, "drop", "eval")
  batches = list(pipeline.eval_batches(examples, encode, lengths, features=("inputs", "targets"), rows=4,
                                       process_index=0, process_count=1))
  assert len(batches) == 3
  targets = np.concatenate([b["targets"] for b in batches])
  assert targets[:, 0].tolist() == [5000 + i for i in range(10)] + [0, 0]
  assert not batches[-1]["inputs"][2:].any()
  per_host = [list(pipeline.eval_batches(examples, encode, lengths, features=("inputs", "targets"), rows=4,
                                         process_index=p, process_count=2)) for p in range(2)]
  assert len(per_host[0]) == len(per_host[1]) == 2
  firsts = [int(t) - 5000 for host in per_host for b in host for t in b["targets"][:, 0] if t]
  assert sorted(firsts) == list(range(10))


def test_rows_from_tokens_per_batch():
  config = default_config()
  config.update(dict(max_length=64, batch_size=100, tokens_per_batch=4096))
  assert datasets.global_batch_rows(config) == 64
  config.tokens_per_batch = 0
  assert datasets.global_batch_rows(config) == 100
  with pytest.raises(ValueError, match="divisible"):
    datasets.local_rows(100, 3, "batch")


def test_max_input_length_limits_inputs_rows_separately():
  examples = TextExamples(["5"] + ["5 5 5 5 5"] * 6, ["4 4 4 4 4 4 4"] + ["4"] * 6)
  lengths = pipeline.LengthPolicy(12, "drop", "train", max_input_length=4)
  it = pipeline.TrainIterator(examples, encode, lengths, features=("inputs", "targets"), rows=2, packing=True,
                              shuffle=False, seed=0, process_index=0, process_count=1)
  batch = next(it)
  assert batch["inputs"].shape == (2, 4) and batch["targets"].shape == (2, 12)
  assert lengths.overlong == 1  # the 8-token input (7 pieces + EOS) is dropped although its target would fit
  np.testing.assert_array_equal(batch["inputs_segmentation"], [[1, 1, 2, 2], [1, 1, 2, 2]])
  np.testing.assert_array_equal(batch["targets_segmentation"][:, :12], [[1] * 6 + [2] * 6] * 2)
