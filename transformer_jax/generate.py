"""Generates with a trained model: ``python -m transformer_jax.generate --workdir DIR [flags] < in.txt > out.txt``.

Reads lines from stdin (or ``--input``) and writes one output line per input line, in input order, to stdout (or
``--output``). A translation workdir translates each line (greedy, or beam search with ``--beam_size``); a language
model workdir continues each line as a prompt (sampling with ``--temperature``, ``--top_k``, ``--top_p``, ``--seed``)
and writes the prompt followed by its continuation. Decoding flags default to the workdir's ``config.decode``.

Bad input: an empty line gives an empty output line (it never reaches the model); a line longer than the model's
input length (its training ``data.max_length``) is truncated, with one warning that counts them. Lines of different
lengths are batched together (sorted by length, padded). ``--references FILE`` prints corpus BLEU (sacrebleu, with
its signature) and exact match to stderr; ``--plot_attention DIR`` saves attention heatmaps of the first line.
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import logging
import sys
import time
from collections.abc import Sequence

from transformer_jax import inference
from transformer_jax.inference import DecodeOptions, Loaded

log = logging.getLogger(__name__)

# Flags that only one objective uses (the other ignores them, with a warning when they are given).
OBJECTIVE_FLAGS = {"translation": ("beam_size", "alpha"), "lm": ("temperature", "top_k", "top_p")}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m transformer_jax.generate", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", required=True, help="Training workdir (config.json, vocab.model, checkpoints/).")
  p.add_argument("--checkpoint", default=None, help="A step number or 'averaged' (default: the latest step).")
  p.add_argument("--input", default=None, help="Input file, one example per line (default: stdin).")
  p.add_argument("--output", default=None, help="Output file (default: stdout).")
  p.add_argument("--references", default=None, help="Reference file, line-aligned: print BLEU and exact match.")
  p.add_argument("--plot_attention", default=None, metavar="DIR", help="Save attention heatmaps of the first line.")
  p.add_argument("--batch_size", type=int, default=32, help="Lines decoded together (default: 32).")
  p.add_argument("--max_len", type=int, default=None, help="Most generated tokens (default: config.decode).")
  p.add_argument("--beam_size", type=int, default=None, help="Translation: 1 = greedy (default: config.decode).")
  p.add_argument("--alpha", type=float, default=None, help="Translation: beam length penalty (config.decode).")
  p.add_argument("--temperature", type=float, default=None, help="LM: 0 = greedy (default: config.decode).")
  p.add_argument("--top_k", type=int, default=None, help="LM: keep the k most likely tokens, 0 = all (config).")
  p.add_argument("--top_p", type=float, default=None, help="LM: nucleus mass, 1 = off (default: config.decode).")
  p.add_argument("--seed", type=int, default=0, help="LM: sampling seed, default 0 (same seed and batch size, same output).")
  args = p.parse_args(argv)
  valid = {"batch_size": lambda v: v >= 1, "max_len": lambda v: v >= 1, "beam_size": lambda v: v >= 1,
           "temperature": lambda v: v >= 0, "top_k": lambda v: v >= 0, "top_p": lambda v: 0 < v <= 1}
  bad = [f"--{name} {getattr(args, name)}" for name, ok in valid.items()
         if getattr(args, name) is not None and not ok(getattr(args, name))]
  if bad:
    p.error(f"out of range: {', '.join(bad)} (sizes >= 1, temperature and top_k >= 0, 0 < top_p <= 1).")
  return args


def decode_options(args: argparse.Namespace, loaded: Loaded) -> DecodeOptions:
  """The flags given, else the workdir's ``config.decode``; ``max_len`` capped at what the model's positions allow."""
  for name in OBJECTIVE_FLAGS["lm" if loaded.objective == "translation" else "translation"]:
    if getattr(args, name) is not None:
      log.warning("--%s does not apply to a %s workdir; ignoring it.", name, loaded.objective)
  flags = {name: getattr(args, name) for name in ("max_len", "beam_size", "alpha", "temperature", "top_k", "top_p")}
  options = DecodeOptions.from_config(loaded.config.decode, seed=args.seed, **flags)
  if options.max_len > loaded.max_output_len:
    log.warning("--max_len %d is more than this model can generate (%d positions); using %d.", options.max_len,
                loaded.max_output_len, loaded.max_output_len)
    options = dataclasses.replace(options, max_len=loaded.max_output_len)
  return options


class Progress:
  """A one-line progress bar on stderr: ``generate: 120/1000 lines (12%), 35.2 lines/s``."""

  def __init__(self, total: int, stream=None):
    self.total, self.done, self.start = total, 0, time.monotonic()
    self.stream = stream or sys.stderr

  def update(self, count: int) -> None:
    self.done += count
    rate = self.done / max(time.monotonic() - self.start, 1e-9)
    self.stream.write(f"\rgenerate: {self.done}/{self.total} lines ({100 * self.done // max(self.total, 1)}%), "
                      f"{rate:.1f} lines/s")
    self.stream.flush()

  def close(self) -> None:
    self.stream.write("\n")
    self.stream.flush()


def report_scores(outputs: Sequence[str], references: Sequence[str], stream=None) -> tuple[float, str, float]:
  """Prints corpus BLEU with the sacrebleu signature and exact match (to stderr); returns them."""
  from transformer_jax import evaluation  # pylint: disable=import-outside-toplevel  (sacrebleu: an optional extra)

  score, signature = evaluation.bleu(outputs, references)
  match = evaluation.exact_match(outputs, references)
  print(f"BLEU = {score:.2f} ({signature})\nexact match = {100 * match:.2f}% of {len(outputs)} lines",
        file=stream or sys.stderr)
  return score, signature, match


def read_lines(path: str | None) -> list[str]:
  """The lines of ``path`` (stdin if None) without their line endings, split at newlines only (as ``wc -l`` counts;
  ``str.splitlines`` would also split at form feeds and Unicode line separators inside a line)."""
  with open(path, encoding="utf-8") if path else contextlib.nullcontext(sys.stdin) as f:
    return [line.rstrip("\n") for line in f]


def write_lines(path: str | None, lines: Sequence[str]) -> None:
  text = "".join(line + "\n" for line in lines)
  if path is None:
    sys.stdout.write(text)
    sys.stdout.flush()
    return
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def _configure_logging() -> None:
  """For the command line: warnings as ``WARNING: message`` on stderr, Orbax's absl chatter silenced (absl may have
  installed a default handler already, hence ``force``)."""
  logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s: %(message)s", force=True)
  logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
  """The command line; returns the exit status (0, or 1 with a one-line error for a bad workdir or input)."""
  args = parse_args(argv)
  try:
    loaded = inference.load(args.workdir, args.checkpoint)
    lines = read_lines(args.input)
    references = read_lines(args.references) if args.references else None
    if references is not None and len(references) != len(lines):
      raise ValueError(f"--references has {len(references)} lines but the input has {len(lines)}.")
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  options = decode_options(args, loaded)
  progress = Progress(sum(bool(line.strip()) for line in lines)) if args.input else None
  outputs = inference.generate_lines(loaded, lines, options, batch_size=args.batch_size, progress=progress)
  write_lines(args.output, outputs)
  if references is not None and lines:
    report_scores(outputs, references)
  first = next((line for line in lines if line.strip()), None)
  if args.plot_attention and first is not None:
    from transformer_jax import visualize  # pylint: disable=import-outside-toplevel  (matplotlib)

    paths = visualize.plot_attention(loaded.model(), loaded.tokenizer, first, args.plot_attention,
                                     max_len=options.max_len, max_input_len=loaded.max_input_len)
    print(f"Saved {len(paths)} attention figures of {first!r} to {args.plot_attention}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  _configure_logging()
  sys.exit(main())
