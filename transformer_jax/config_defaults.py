"""Every training config field with its default; ``configs/*.py`` start from :func:`base_config` and override.

The README's configuration table documents each field.
"""

from __future__ import annotations

import ml_collections


def model_defaults() -> ml_collections.ConfigDict:
  """``config.model``: the :class:`transformer_jax.models.TransformerConfig` fields (vocab size comes from the
  tokenizer). Defaults: a small post-LN model."""
  return ml_collections.ConfigDict(dict(
      d_model=128, num_heads=4, num_encoder_layers=2, num_decoder_layers=2, mlp_dim=512, dropout_rate=0.1,
      attention_dropout_rate=0.0, max_len=256, positional="sinusoidal", norm="layernorm", pre_norm=False,
      activation="relu", share_embeddings=True, logits_via_embedding=True, dtype="float32", param_dtype="float32",
      attention_impl="xla", bos_id=2))


def base_config() -> ml_collections.ConfigDict:
  from transformer_jax.data.config import default_config as data_defaults  # pylint: disable=import-outside-toplevel

  c = ml_collections.ConfigDict()
  c.objective = "translation"  # "translation" (EncoderDecoder) or "lm" (DecoderOnly); must match the data.
  c.seed = 0
  c.num_train_steps = 1000
  c.log_every_steps = 50
  c.eval_every_steps = 500
  c.checkpoint_every_steps = 500
  c.keep_checkpoints = 3  # checkpoints kept in workdir/checkpoints
  c.average_last_checkpoints = 0  # > 1: average the last K checkpoints at the end into workdir/averaged
  c.label_smoothing = 0.0
  c.grad_accum_steps = 1  # micro-batches per optimizer step (must divide the batch rows)
  c.train_step_impl = "jit"  # "jit" (compiler-partitioned, any mesh) or "shard_map" (explicit data parallel)
  c.model = model_defaults()
  c.optimizer = ml_collections.ConfigDict(dict(
      name="adamw",  # "adam" or "adamw"
      schedule="warmup_cosine",  # "rsqrt" (the paper; learning_rate scales it), "warmup_cosine", "constant"
      learning_rate=1e-3, warmup_steps=100, b1=0.9, b2=0.98, eps=1e-9,
      weight_decay=0.0,  # AdamW only; skips biases and norm scales
      clip_norm=1.0))  # global-norm clipping; 0 disables
  c.data = data_defaults()
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: the rest of the devices
  c.distributed = ml_collections.ConfigDict(dict(
      initialize=False,  # call jax.distributed.initialize (multi-host); fields below may stay None on TPU/SLURM
      coordinator_address=ml_collections.config_dict.placeholder(str),
      num_processes=ml_collections.config_dict.placeholder(int),
      process_id=ml_collections.config_dict.placeholder(int),
      local_device_ids=ml_collections.config_dict.placeholder(tuple)))
  c.decode = ml_collections.ConfigDict(dict(
      beam_size=1, alpha=0.6,  # eval decoding: greedy (1) or beam search with GNMT length penalty alpha
      max_len=64,  # longest decoded output (tokens)
      num_eval_examples=1000,  # translation: eval examples decoded for BLEU / exact match (0 = none)
      num_samples=0, prompt_tokens=8,  # LM: samples printed at the end, from this many prompt tokens
      temperature=0.8, top_k=0, top_p=0.95))
  return c
