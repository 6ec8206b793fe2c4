"""Translation on your own folder of line-aligned parallel text.

The folder holds ``train.<src>`` / ``train.<tgt>`` and ``val.<src>`` / ``val.<tgt>`` (optionally ``.gz``), one
sentence per line, e.g. Multi30k::

  python train.py --config configs/local_translation.py --config.data.path=../shared/data/multi30k \\
      --config.data.source_lang=en --config.data.target_lang=de
"""

from transformer_jax.config_defaults import base_config


def get_config():
  config = base_config()
  config.num_train_steps = 20_000
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.label_smoothing = 0.1
  config.model.update(d_model=256, num_heads=4, num_encoder_layers=3, num_decoder_layers=3, mlp_dim=1024,
                      dropout_rate=0.1, max_len=128)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=1000)
  config.data.update(name="local_translation", path="data/parallel", source_lang="en", target_lang="de",
                     train_split="train", eval_split="val", vocab_size=8000, vocab_model_type="unigram",
                     max_length=64, overlong="truncate", batch_size=128, eval_batch_size=128)
  config.decode.update(beam_size=4, alpha=0.6, max_len=80, num_eval_examples=1014)
  return config
