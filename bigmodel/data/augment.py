"""Image augmentations by name, on the host, on whole batches (B, H, W, C) of stored pixels (uint8 or float).

They run on grain's threads before the batch reaches the device, with a generator
grain seeds from the run's seed and the batch's index: the same seed gives the same
crops and flips, also after a resume.
"""
import functools

import numpy as np

from bigmodel import errors


def random_crop(x_BxHxWxC, rng, padding):
  """Zero-pad each side by `padding`, then cut a random HxW window per image."""
  B, H, W, _ = x_BxHxWxC.shape
  padded = np.pad(x_BxHxWxC, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  top_B, left_B = rng.integers(0, 2 * padding + 1, size=(2, B))
  return np.stack([padded[b, t:t + H, l:l + W] for b, (t, l) in enumerate(zip(top_B, left_B))])


def flip(x_BxHxWxC, rng):
  """Mirror a random half of the images left to right."""
  flip_B = rng.random(len(x_BxHxWxC)) < 0.5
  return np.where(flip_B[:, None, None, None], x_BxHxWxC[:, :, ::-1], x_BxHxWxC)


def build(names, crop_padding):
  """The named augmentations in order, as one function (x_BxHxWxC, rng) -> x_BxHxWxC."""
  ops = {"random_crop": functools.partial(random_crop, padding=crop_padding), "flip": flip}
  unknown = [n for n in names if n not in ops]
  if unknown:
    raise errors.UserError(f"Unknown augmentation {unknown[0]!r} in data.augment. Known: {', '.join(ops)}.")
  chosen = [ops[n] for n in names]

  def apply(x_BxHxWxC, rng):
    if x_BxHxWxC.ndim != 4:
      raise errors.UserError(f"data.augment works on image batches (B, H, W, C); got shape {x_BxHxWxC.shape}.")
    for op in chosen:
      x_BxHxWxC = op(x_BxHxWxC, rng)
    return x_BxHxWxC
  return apply
