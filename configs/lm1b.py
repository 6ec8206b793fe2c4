"""A decoder-only language model on the One Billion Word benchmark (TFDS ``lm1b``; needs internet once)."""

from transformer_jax.config_defaults import base_config


def get_config():
  config = base_config()
  config.objective = "lm"
  config.num_train_steps = 100_000
  config.log_every_steps = 100
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  config.model.update(d_model=512, num_heads=8, num_decoder_layers=6, mlp_dim=2048, dropout_rate=0.1,
                      pre_norm=True, norm="rmsnorm", positional="rope", activation="gelu", max_len=128)
  config.optimizer.update(learning_rate=1e-3, warmup_steps=1000, weight_decay=0.1)
  config.data.update(name="tfds:lm1b", text_feature="text", train_split="train", eval_split="test",
                     vocab_size=32_000, vocab_model_type="unigram", max_length=128, overlong="truncate",
                     packing=True, batch_size=256, eval_batch_size=256, max_eval_examples=10_000)
  config.decode.update(num_eval_examples=0, num_samples=4, prompt_tokens=8, max_len=48)
  return config
