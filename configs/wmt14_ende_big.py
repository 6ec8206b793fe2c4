"""The paper's big model on WMT'14 English->German: d_model 1024, 16 heads, d_ff 4096, dropout 0.3, 300k steps,
the last 20 checkpoints averaged; otherwise as ``wmt14_ende_base``."""

from configs import wmt14_ende_base


def get_config():
  config = wmt14_ende_base.get_config()
  config.num_train_steps = 300_000
  config.keep_checkpoints = 20
  config.average_last_checkpoints = 20
  config.model.update(d_model=1024, num_heads=16, mlp_dim=4096, dropout_rate=0.3)
  return config
