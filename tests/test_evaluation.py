"""Tests of transformer_jax.evaluation against hand-computed and independently computed references."""

import collections
import math

import numpy as np
import pytest
import sacrebleu

from transformer_jax import evaluation


def _ngrams(words, n):
  return collections.Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def _reference_bleu(hypotheses, references):
  """Plain corpus BLEU (Papineni et al.) on whitespace tokens: clipped n-gram precisions, n = 1..4, and BP."""
  matches, totals, hyp_len, ref_len = np.zeros(4), np.zeros(4), 0, 0
  for hyp, ref in zip(hypotheses, references):
    hyp, ref = hyp.split(), ref.split()
    hyp_len, ref_len = hyp_len + len(hyp), ref_len + len(ref)
    for n in range(1, 5):
      hyp_counts, ref_counts = _ngrams(hyp, n), _ngrams(ref, n)
      matches[n - 1] += sum(min(c, ref_counts[g]) for g, c in hyp_counts.items())
      totals[n - 1] += max(len(hyp) - n + 1, 0)
  brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
  return 100 * brevity * math.exp(np.mean(np.log(matches / totals)))


def test_bleu_hand_case():
  # 1-4 gram precisions 5/6, 3/5, 2/4, 1/3 and equal lengths: BLEU = 100 * (1/12) ** (1/4).
  score, _ = evaluation.bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
  assert score == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
  sentence = sacrebleu.sentence_bleu("the cat sat on the mat", ["the cat sat on a mat"]).score
  assert score == pytest.approx(sentence, abs=1e-6)


def test_bleu_corpus_matches_independent_computation():
  hypotheses = ["a b c d e f", "the quick brown fox jumps", "x y z w", "one two three four five six seven"]
  references = ["a b c d e g", "the quick brown fox jumped over", "x y z w", "one two three five four six seven"]
  score, _ = evaluation.bleu(hypotheses, references)
  assert score == pytest.approx(_reference_bleu(hypotheses, references), abs=1e-6)
  # Corpus BLEU pools n-gram statistics: it is not the mean of the sentence scores.
  sentence_mean = np.mean([sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hypotheses, references)])
  assert score != pytest.approx(sentence_mean, abs=1e-3)


def test_bleu_perfect_match_is_100_and_signature_is_reported():
  lines = ["I_TURN_LEFT I_WALK I_JUMP I_JUMP", "Ein Mann fährt Fahrrad ."]
  score, signature = evaluation.bleu(lines, lines)
  assert score == pytest.approx(100.0)
  assert signature == f"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:{sacrebleu.__version__}"


def test_bleu_rejects_mismatched_or_empty_inputs():
  with pytest.raises(ValueError, match="pair up"):
    evaluation.bleu(["a"], ["a", "b"])
  with pytest.raises(ValueError, match="no hypotheses"):
    evaluation.bleu([], [])


def test_exact_match_fractions():
  assert evaluation.exact_match(["a b", " c ", "d"], ["a b", "c", "e"]) == pytest.approx(2 / 3)
  assert evaluation.exact_match(["x"], ["x\n"]) == 1.0
  assert evaluation.exact_match(["a b", "c"], ["a  b", "C"]) == 0.0  # inner spaces and case matter
  with pytest.raises(ValueError):
    evaluation.exact_match(["a"], [])


def test_perplexity_is_exp_of_mean_nll():
  nll = np.array([0.5, 2.25, 1.0, 3.125], np.float64)
  expected = np.exp(nll.mean())
  assert evaluation.perplexity(nll.sum(), len(nll)) == pytest.approx(expected, rel=1e-12)
  assert evaluation.perplexity(np.float32(nll.sum()), np.int32(4)) == pytest.approx(expected, rel=1e-12)
  assert evaluation.perplexity(nll.mean()) == pytest.approx(expected, rel=1e-12)
  assert evaluation.perplexity(0.0, 10) == 1.0
  assert evaluation.perplexity(1e6, 1) == math.inf
  with pytest.raises(ValueError):
    evaluation.perplexity(1.0, 0)
