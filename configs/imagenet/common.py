"""ImageNet-1k as both configs/imagenet/ recipes read it: a class-folder layout prepared at 224 px (their
docstrings say how to lay it out), batch 1,024, pad-and-crop and flip, per-channel normalisation."""
import ml_collections

EPOCH = 1_281_167 // 1024  # steps per epoch at batch 1,024


def setup():
  """The data and the logging, evaluation and checkpoint cadence of an ImageNet run; a recipe adds its model,
  optimizer and total_steps."""
  c = ml_collections.ConfigDict()
  c.data = dict(name="image_folder", folder="imagenet", image_size=224, channels=3, eval_split="val",
                batch_size=1024, eval_batch_size=1000, normalize=True, augment=("random_crop", "flip"),
                crop_padding=16)
  c.log_every = 100
  c.eval_every = 5 * EPOCH
  c.checkpoint_every = EPOCH
  return c
