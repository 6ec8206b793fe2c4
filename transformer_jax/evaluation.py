"""Evaluation metrics for the training loop and the command line: corpus BLEU (sacrebleu), exact match, perplexity.

The metrics compare detokenised text. Decoding returns token ids ending with EOS and 0-padded: the caller turns them
into text with the tokenizer (SentencePiece ``decode`` of the ids before the first EOS) and scores that against the
raw reference lines, never against tokenised references (sacrebleu tokenises both sides itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check_pair(hypotheses: Sequence[str], references: Sequence[str]) -> None:
  if len(hypotheses) != len(references):
    raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references; they must pair up one to one.")
  if not hypotheses:
    raise ValueError("no hypotheses to score.")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
  """Corpus BLEU (0-100) of detokenised hypotheses against one reference each, with sacrebleu's defaults.

  Returns ``(score, signature)``; report the signature (e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|
  version:2.6.0``) with the score so that it can be compared with published numbers.
  """
  from sacrebleu.metrics import BLEU  # imported lazily: an optional dependency (the "data" extra)

  _check_pair(hypotheses, references)
  metric = BLEU()
  score = metric.corpus_score(list(hypotheses), [list(references)]).score
  return float(score), str(metric.get_signature())


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
  """Fraction (0-1) of hypotheses equal to their reference after stripping surrounding whitespace."""
  _check_pair(hypotheses, references)
  return sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / len(hypotheses)


def perplexity(total_nll: float, num_tokens: float = 1.0) -> float:
  """exp(total_nll / num_tokens): from a summed token NLL (nats) and its token count, or from a mean NLL alone.

  Returns ``inf`` when the result overflows a float.
  """
  if num_tokens <= 0:
    raise ValueError(f"num_tokens={num_tokens} must be positive.")
  try:
    return math.exp(float(total_nll) / float(num_tokens))
  except OverflowError:
    return math.inf
