"""Masked-LM inputs (Devlin et al. 2019), made on the host from a batch of token windows.

Of the real (non-padding) tokens, `rate` are chosen; a chosen token becomes the mask id
(80 %), a random token (10 %) or stays (10 %). Targets are the original ids at the chosen
positions and -1 (ignored by `lm_xent`) elsewhere. The mask id is the tokenizer's own
([MASK] of a pretrained BERT's) or, for tokenizers without one, one past its vocabulary, so
the model's vocabulary is then one larger.
"""
import numpy as np


def mask_batch(batch, rng, *, rate, vocab_size, mask_id):
  tokens_BxL = batch["x"]
  chosen_BxL = (rng.random(tokens_BxL.shape) < rate) & (tokens_BxL >= 0)
  r_BxL = rng.random(tokens_BxL.shape)
  inputs_BxL = np.where(chosen_BxL & (r_BxL < 0.8), mask_id, tokens_BxL)
  random_BxL = rng.integers(0, vocab_size, tokens_BxL.shape)
  inputs_BxL = np.where(chosen_BxL & (r_BxL >= 0.8) & (r_BxL < 0.9), random_BxL, inputs_BxL)
  return {**batch, "x": inputs_BxL.astype(np.int32), "y": np.where(chosen_BxL, tokens_BxL, -1).astype(np.int32)}
