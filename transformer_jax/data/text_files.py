"""Reading local text corpora: line-aligned parallel files and plain text files (no TensorFlow).

Policies for bad input (fail loudly rather than train on garbage):

- Files are UTF-8. An invalid byte raises ``UnicodeDecodeError`` naming the file and line (no silent replacement).
- Lines are split on ``"\\n"`` only (a trailing ``"\\r"`` is dropped), never on other Unicode line breaks, so
  parallel files stay aligned. Names ending in ``.gz`` are decompressed.
- Empty (whitespace-only) lines are skipped and counted; in a parallel corpus a pair is skipped when either side
  is empty. The callers log the count.
- Parallel files with different line counts raise ``ValueError`` naming both files and both counts.
- A missing folder or file raises ``FileNotFoundError`` naming it.

Parallel folder conventions, for split ``S`` and language ``L``: ``S.L`` (e.g. ``train.en``), ``S.L.gz``, and
the ``tfds.folder_dataset.TranslateFolder`` names ``L.S.txt`` (e.g. ``en.train.txt``) and ``L.S.txt.gz``.
"""

import glob
import gzip
import pathlib


def read_lines(path: pathlib.Path) -> list[str]:
  """All lines of a UTF-8 text file (gzip if ``.gz``), without line terminators."""
  data = path.read_bytes()
  if path.suffix == ".gz":
    data = gzip.decompress(data)
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b"\n") + 1
    raise UnicodeDecodeError(e.encoding, e.object, e.start, e.end,
                             f"{path}, line {line}: not valid UTF-8 ({e.reason})") from None
  lines = text.split("\n")
  if lines[-1] == "":
    lines.pop()
  return [line.removesuffix("\r") for line in lines]


def parallel_file(folder: pathlib.Path, split: str, lang: str) -> pathlib.Path:
  """The file of one side of a parallel split in ``folder`` (conventions in the module docstring)."""
  if not folder.is_dir():
    raise FileNotFoundError(f"Parallel corpus folder {folder} does not exist.")
  names = [f"{split}.{lang}", f"{split}.{lang}.gz", f"{lang}.{split}.txt", f"{lang}.{split}.txt.gz"]
  for name in names:
    if (folder / name).is_file():
      return folder / name
  raise FileNotFoundError(f"No file for split {split!r}, language {lang!r} in {folder}; expected one of {names}.")


def read_parallel(folder: pathlib.Path, split: str, source_lang: str,
                  target_lang: str) -> tuple[list[str], list[str], int]:
  """Returns (sources, targets, number of pairs skipped because a side was empty) of a parallel split."""
  source_file = parallel_file(folder, split, source_lang)
  target_file = parallel_file(folder, split, target_lang)
  sources, targets = read_lines(source_file), read_lines(target_file)
  if len(sources) != len(targets):
    raise ValueError(f"Parallel files differ in line count: {source_file} has {len(sources)} lines, "
                     f"{target_file} has {len(targets)}.")
  pairs = [(s.strip(), t.strip()) for s, t in zip(sources, targets)]
  kept = [(s, t) for s, t in pairs if s and t]
  return [s for s, _ in kept], [t for _, t in kept], len(pairs) - len(kept)


def text_files(path: str) -> list[pathlib.Path]:
  """The files of a folder (non-hidden regular files, sorted) or of a glob pattern (sorted matches)."""
  if glob.has_magic(path):
    files = sorted(pathlib.Path(p) for p in glob.glob(path) if pathlib.Path(p).is_file())
    if not files:
      raise FileNotFoundError(f"No files match {path}.")
    return files
  folder = pathlib.Path(path)
  if folder.is_file():
    return [folder]
  if not folder.is_dir():
    raise FileNotFoundError(f"Text corpus {path} does not exist.")
  files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
  if not files:
    raise FileNotFoundError(f"Text corpus folder {path} has no files.")
  return files


def read_texts(files: list[pathlib.Path]) -> tuple[list[str], int]:
  """Returns (non-empty stripped lines of all files in order, number of empty lines skipped)."""
  lines = [line.strip() for f in files for line in read_lines(f)]
  kept = [line for line in lines if line]
  return kept, len(lines) - len(kept)
