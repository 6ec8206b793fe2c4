"""The paper's base model on WMT'14 English->German (needs internet once to download and prepare the data).

Recipe (Vaswani et al. 2017, section 5): shared ~37k-piece vocabulary, ~25k source + ~25k target tokens per batch
(96 packed rows of 256 tokens), Adam(0.9, 0.98, 1e-9) with lr = d_model^-0.5 * min(step^-0.5, step * 4000^-1.5),
label smoothing 0.1, dropout 0.1, 100k steps, the last 5 checkpoints averaged, beam 4 with alpha 0.6.
"""

from transformer_jax.config_defaults import base_config


def get_config():
  config = base_config()
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 2_000
  config.keep_checkpoints = 5
  config.average_last_checkpoints = 5
  config.label_smoothing = 0.1
  config.model.update(d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, mlp_dim=2048,
                      dropout_rate=0.1, max_len=256)
  config.optimizer.update(name="adam", schedule="rsqrt", learning_rate=1.0, warmup_steps=4000, b1=0.9, b2=0.98,
                          eps=1e-9, clip_norm=0.0)
  config.data.update(name="tfds:wmt14_translate/de-en", source_lang="en", target_lang="de", train_split="train",
                     eval_split="validation", vocab_size=37_000, vocab_model_type="bpe", max_length=256,
                     overlong="drop", packing=True, tokens_per_batch=96 * 256, eval_batch_size=64)
  config.decode.update(beam_size=4, alpha=0.6, max_len=256, num_eval_examples=3003)
  return config
