"""SCAN generated from its grammar: counts, grammar spot-checks, split definitions, the offline TFDS builder."""

import collections

import pytest

from transformer_jax.data import scan


@pytest.fixture(scope="module")
def pairs():
  return scan.generate()


def test_all_commands_unique(pairs):
  assert len(pairs) == 20910
  assert len({command for command, _ in pairs}) == 20910


def test_original_format(pairs):
  table = dict(pairs)
  assert table["jump twice after walk left"] == "I_TURN_LEFT I_WALK I_JUMP I_JUMP"
  vocab = collections.Counter(word for command, _ in pairs for word in command.split())
  actions = collections.Counter(word for _, a in pairs for word in a.split())
  assert len(vocab) == 13
  assert set(actions) == {"I_WALK", "I_LOOK", "I_RUN", "I_JUMP", "I_TURN_LEFT", "I_TURN_RIGHT"}
  assert max(scan.num_actions(p) for p in pairs) == 48


@pytest.mark.parametrize("command, actions", [
    ("walk", "I_WALK"),
    ("turn left", "I_TURN_LEFT"),
    ("turn right twice", "I_TURN_RIGHT I_TURN_RIGHT"),
    ("look right", "I_TURN_RIGHT I_LOOK"),
    ("turn opposite left", "I_TURN_LEFT I_TURN_LEFT"),
    ("run opposite right", "I_TURN_RIGHT I_TURN_RIGHT I_RUN"),
    ("turn around right", "I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT I_TURN_RIGHT"),
    ("jump around left", "I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP I_TURN_LEFT I_JUMP"),
    ("look thrice", "I_LOOK I_LOOK I_LOOK"),
    ("walk opposite left twice", "I_TURN_LEFT I_TURN_LEFT I_WALK I_TURN_LEFT I_TURN_LEFT I_WALK"),
    ("walk and run left", "I_WALK I_TURN_LEFT I_RUN"),
    ("walk after run left", "I_TURN_LEFT I_RUN I_WALK"),
    ("turn left thrice after jump twice", "I_JUMP I_JUMP I_TURN_LEFT I_TURN_LEFT I_TURN_LEFT"),
])
def test_grammar(pairs, command, actions):
  assert dict(pairs)[command] == actions


def test_no_command_has_23_actions(pairs):
  assert not [p for p in pairs if scan.num_actions(p) == 23]


def test_simple_split():
  parts = scan.splits("simple")
  assert (len(parts["train"]), len(parts["test"])) == (16728, 4182)
  assert not set(parts["train"]) & set(parts["test"])
  assert parts == scan.splits("simple")  # fixed seed


def test_length_split():
  parts = scan.splits("length")
  assert (len(parts["train"]), len(parts["test"])) == (16990, 3920)
  assert max(map(scan.num_actions, parts["train"])) <= 22
  assert min(map(scan.num_actions, parts["test"])) >= 24


def test_addprim_jump_split(pairs):
  parts = scan.splits("addprim_jump")
  train = set(parts["train"])
  assert len(parts["train"]) == 13203 + scan.JUMP_REPEATS == 14670
  assert train == {p for p in pairs if not scan.has_jump(p)} | {("jump", "I_JUMP")}
  assert len(parts["test"]) == 7706
  assert all(scan.has_jump(p) for p in parts["test"])
  assert ("jump", "I_JUMP") not in parts["test"]


def test_unknown_split():
  with pytest.raises(ValueError, match="simple"):
    scan.splits("mcd1")


def test_tfds_builder_prepares_offline(tmp_path):
  from transformer_jax.data import tfds_source  # pylint: disable=import-outside-toplevel
  corpus = tfds_source.load("scan_offline/length", data_dir=str(tmp_path), download=True, train_split="train",
                            eval_split="test", source_lang="commands", target_lang="actions", text_feature="text")
  expected = scan.splits("length")
  for got, want in ((corpus.train, expected["train"]), (corpus.eval, expected["test"])):
    assert sorted((e["inputs"], e["targets"]) for e in got) == sorted(want)
