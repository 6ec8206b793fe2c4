"""SCAN as a TFDS builder that prepares offline: ``tfds.builder("scan_offline/length")``.

The examples come from :mod:`transformer_jax.data.scan` (the grammar), so ``download_and_prepare`` needs no
network. Features match TFDS's own ``scan`` builder (``commands``, ``actions``; supervised keys in that order), so
``config.data.name = "tfds:scan_offline/length"`` with ``source_lang="commands"``, ``target_lang="actions"`` and
``download=True`` reads it through the TFDS path. The pipeline's ``scan/<split>`` sources read the same pairs
directly, without TFDS, which is faster. Importing this module registers the builder.
"""

import tensorflow_datasets as tfds

from transformer_jax.data import scan


class ScanOffline(tfds.core.GeneratorBasedBuilder):
  """SCAN (Lake & Baroni, 2018) generated from its grammar; one config per split kind."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Generated from the grammar; sizes equal the original release."}
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=kind) for kind in scan.SPLITS]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description="SCAN commands and action sequences, generated offline from the SCAN grammar.",
        features=tfds.features.FeaturesDict({"commands": tfds.features.Text(),
                                             "actions": tfds.features.Text()}),
        supervised_keys=("commands", "actions"),
        homepage="https://github.com/brendenlake/SCAN",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    return {name: self._generate_examples(pairs) for name, pairs in scan.splits(self.builder_config.name).items()}

  def _generate_examples(self, pairs):
    for i, (command, actions) in enumerate(pairs):
      yield i, {"commands": command, "actions": actions}
