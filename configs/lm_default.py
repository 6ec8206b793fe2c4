"""Offline language modeling: a small decoder-only model on the Python standard library's own source files."""

from transformer_jax.config_defaults import base_config


def get_config():
  config = base_config()
  config.objective = "lm"
  config.num_train_steps = 600
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 200
  config.model.update(d_model=192, num_heads=6, num_decoder_layers=3, mlp_dim=768, dropout_rate=0.0, pre_norm=True,
                      norm="rmsnorm", positional="rope", activation="gelu", max_len=256)
  config.optimizer.update(learning_rate=2e-3, warmup_steps=100, weight_decay=0.01)
  config.data.update(name="python_stdlib", vocab_size=2048, vocab_model_type="unigram", max_length=128,
                     overlong="truncate", batch_size=32, eval_batch_size=64, max_eval_examples=512, eval_split="test")
  config.decode.update(num_eval_examples=0, num_samples=4, prompt_tokens=12, max_len=48)
  return config
