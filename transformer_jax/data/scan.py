"""SCAN (Lake & Baroni, 2018), generated offline from its grammar.

SCAN maps navigation commands to action sequences. Its phrase-structure grammar is small and complete:

    C -> S | S and S | S after S
    S -> V | V twice | V thrice
    V -> D | U | X opposite DIR | X around DIR        (X = U or "turn")
    D -> U DIR | turn DIR                             (DIR = left | right)
    U -> walk | look | run | jump

with the interpretation ``[[u]] = I_U``, ``[[x DIR]] = I_TURN_DIR [[x]]``, ``[[x opposite DIR]] =
I_TURN_DIR I_TURN_DIR [[x]]``, ``[[x around DIR]] = (I_TURN_DIR [[x]]) * 4`` (``[[turn]]`` is empty),
``[[v twice]] = [[v]] * 2``, ``[[s1 and s2]] = [[s1]] [[s2]]``, ``[[s1 after s2]] = [[s2]] [[s1]]``. There are
34 verb phrases, 102 sentences and 102 + 2 * 102 * 102 = 20,910 commands, each with exactly one action sequence,
written in the original release's format (``"jump twice after walk left"`` ->
``"I_TURN_LEFT I_WALK I_JUMP I_JUMP"``).

The splits follow the original release: ``simple`` (a fixed seeded 80/20 random split: 16,728 / 4,182),
``length`` (train: action sequences of at most 22 actions, 16,990; test: 24 and more, 3,920; no command has 23),
``addprim_jump`` (train: the 13,203 commands without "jump" plus the primitive command "jump" repeated
``JUMP_REPEATS`` = 1,467 times, as in the original file, 14,670 rows; test: the other 7,706 commands with "jump").
Pure Python, no TensorFlow: :mod:`transformer_jax.data.scan_tfds` wraps these splits as a TFDS builder.
"""

import random

PRIMITIVES = {"walk": "I_WALK", "look": "I_LOOK", "run": "I_RUN", "jump": "I_JUMP"}
DIRECTIONS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
REPETITIONS = {"": 1, " twice": 2, " thrice": 3}
SPLITS = ("simple", "length", "addprim_jump")
SIMPLE_SEED = 0
SIMPLE_TRAIN_FRACTION = 0.8
LENGTH_MAX_TRAIN_ACTIONS = 22
LENGTH_MIN_TEST_ACTIONS = 24
JUMP_REPEATS = 1467

Pair = tuple[str, str]


def _verb_phrases() -> list[tuple[str, list[str]]]:
  """The 34 verb phrases V as (words, actions)."""
  phrases = [(word, [action]) for word, action in PRIMITIVES.items()]
  for verb, actions in [*((w, [a]) for w, a in PRIMITIVES.items()), ("turn", [])]:
    for direction, turn in DIRECTIONS.items():
      phrases.append((f"{verb} {direction}", [turn, *actions]))
      phrases.append((f"{verb} opposite {direction}", [turn, turn, *actions]))
      phrases.append((f"{verb} around {direction}", [turn, *actions] * 4))
  return phrases


def _sentences() -> list[tuple[str, list[str]]]:
  """The 102 sentences S (a verb phrase, optionally repeated twice or thrice) as (words, actions)."""
  return [(words + suffix, actions * times)
          for words, actions in _verb_phrases() for suffix, times in REPETITIONS.items()]


def generate() -> list[Pair]:
  """Returns all 20,910 SCAN (command, actions) pairs in a fixed order, as space-separated strings."""
  sentences = _sentences()
  pairs = list(sentences)
  for first, first_actions in sentences:
    for second, second_actions in sentences:
      pairs.append((f"{first} and {second}", first_actions + second_actions))
      pairs.append((f"{first} after {second}", second_actions + first_actions))
  return [(command, " ".join(actions)) for command, actions in pairs]


def num_actions(pair: Pair) -> int:
  """Number of actions in a pair's action sequence."""
  return len(pair[1].split())


def has_jump(pair: Pair) -> bool:
  """Whether the command contains the word "jump"."""
  return "jump" in pair[0].split()


def splits(kind: str) -> dict[str, list[Pair]]:
  """Returns ``{"train": [...], "test": [...]}`` for a split kind in :data:`SPLITS` (deterministic)."""
  pairs = generate()
  if kind == "simple":
    order = list(range(len(pairs)))
    random.Random(SIMPLE_SEED).shuffle(order)
    cut = round(SIMPLE_TRAIN_FRACTION * len(pairs))
    return {"train": [pairs[i] for i in order[:cut]], "test": [pairs[i] for i in order[cut:]]}
  if kind == "length":
    return {"train": [p for p in pairs if num_actions(p) <= LENGTH_MAX_TRAIN_ACTIONS],
            "test": [p for p in pairs if num_actions(p) >= LENGTH_MIN_TEST_ACTIONS]}
  if kind == "addprim_jump":
    jump = ("jump", PRIMITIVES["jump"])
    return {"train": [p for p in pairs if not has_jump(p)] + [jump] * JUMP_REPEATS,
            "test": [p for p in pairs if has_jump(p) and p != jump]}
  raise ValueError(f"Unknown SCAN split {kind!r}; expected one of {SPLITS}.")
