"""Trains a Transformer: ``python train.py --config configs/NAME.py --workdir DIR [--config.x.y=value ...]``.

With no flags it trains the default: an encoder-decoder on the offline SCAN ``simple`` split.
"""

import logging
import os

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

_HERE = os.path.dirname(os.path.abspath(__file__))
config_flags.DEFINE_config_file("config", os.path.join(_HERE, "configs", "default.py"), "Training config file.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Checkpoints, logs and vocabulary go here (default: workdirs/<config name>).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  absl_logging.set_verbosity(absl_logging.WARNING)  # keep library chatter (Orbax, TFDS) out of the progress
  logging.getLogger("transformer_jax").setLevel(logging.INFO)
  from transformer_jax import train_lib  # pylint: disable=import-outside-toplevel

  config = flags.FLAGS.config
  config_name = os.path.splitext(os.path.basename(flags.FLAGS["config"].config_filename))[0]
  workdir = flags.FLAGS.workdir or os.path.join("workdirs", config_name)
  train_lib.train_and_evaluate(config, workdir)


if __name__ == "__main__":
  app.run(main)
