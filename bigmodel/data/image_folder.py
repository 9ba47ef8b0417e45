"""Your own images: a folder of splits, each a folder of classes, as a TFDS dataset.

  my_scans/train/benign/001.png      data.name = "image_folder"
  my_scans/train/malignant/002.jpg   data.folder = "my_scans"
  my_scans/val/benign/...            data.image_size = 64 (resized, square), data.channels = 1 or 3

Class names are the train split's subfolders, sorted (their index is the label).
Images are decoded with PIL, converted to grey or RGB and resized once, when TFDS
prepares the dataset; a changed folder (files added, removed or rewritten) is
prepared again, as a new TFDS config. TFDS's own `ImageFolder` needs TensorFlow.
"""
import hashlib
import os

import numpy as np
import tensorflow_datasets as tfds

from bigmodel import errors

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _scan(folder):
  """{split: [(path, class_name), ...]} for every split folder that holds class folders."""
  if not os.path.isdir(folder):
    raise errors.NotFound(f"data.folder={folder!r} is not a directory. Expected "
                          f"<folder>/<split>/<class>/<image files>, e.g. {folder}/train/cats/1.png.")
  splits = {}
  for split in sorted(os.listdir(folder)):
    split_dir = os.path.join(folder, split)
    if split.startswith(".") or not os.path.isdir(split_dir):
      continue
    files = [(os.path.join(split_dir, cls, f), cls)
             for cls in sorted(os.listdir(split_dir)) if os.path.isdir(os.path.join(split_dir, cls))
             for f in sorted(os.listdir(os.path.join(split_dir, cls))) if f.lower().endswith(EXTENSIONS)]
    if files:
      splits[split] = files
  if "train" not in splits:
    raise errors.NotFound(f"No images under {folder}/train/<class>/. Expected "
                          f"<folder>/<split>/<class>/<image files> with a 'train' split; found splits: "
                          f"{', '.join(splits) or 'none'}.")
  return splits


def _fingerprint(splits, image_size, channels):
  h = hashlib.sha1(f"{image_size},{channels}".encode())
  for files in splits.values():
    for path, cls in files:
      st = os.stat(path)
      h.update(f"{path}|{cls}|{st.st_size}|{st.st_mtime_ns}".encode())
  return h.hexdigest()[:10]


def read_image(path, image_size, channels):
  from PIL import Image
  try:
    with Image.open(path) as im:
      im = im.convert("L" if channels == 1 else "RGB")
      if image_size:
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
      x = np.asarray(im, np.uint8)
  except OSError as e:
    raise errors.UserError(f"Could not read image {path}: {e}. Remove it or convert it to PNG/JPEG.") from e
  return x[..., None] if channels == 1 else x


class ImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Images from <folder>/<split>/<class>/, resized to image_size x image_size."""
  VERSION = tfds.core.Version("1.0.0")

  def __init__(self, *, folder, image_size, channels, **kwargs):
    if channels not in (1, 3):
      raise errors.UserError(f"data.channels={channels}: use 1 (grey) or 3 (RGB).")
    self.folder, self.image_size, self.channels = os.path.abspath(folder), image_size, channels
    self.files = _scan(self.folder)
    self.classes = sorted({cls for _, cls in self.files["train"]})
    unknown = {cls for files in self.files.values() for _, cls in files} - set(self.classes)
    if unknown:
      raise errors.UserError(f"Classes {sorted(unknown)} appear in other splits of {folder} but not in train/.")
    if not image_size:  # keep the files' own size: they must all agree
      shapes = {read_image(p, 0, channels).shape for files in self.files.values() for p, _ in files[:1]}
      if len(shapes) > 1:
        raise errors.UserError(f"Images in {folder} differ in size {sorted(shapes)}: set data.image_size.")
      self.shape = shapes.pop()
    else:
      self.shape = (image_size, image_size, channels)
    name = f"{os.path.basename(self.folder) or 'root'}_{_fingerprint(self.files, image_size, channels)}"
    super().__init__(config=tfds.core.BuilderConfig(name=name), **kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, description=f"Images from {self.folder}",
        features=tfds.features.FeaturesDict({
            "x": tfds.features.Tensor(shape=self.shape, dtype=np.uint8),
            "y": tfds.features.ClassLabel(names=self.classes)}),
        supervised_keys=("x", "y"))

  def _split_generators(self, dl_manager):
    del dl_manager  # the files are local
    return {split: self._generate_examples(files) for split, files in self.files.items()}

  def _generate_examples(self, files):
    for path, cls in files:
      x = read_image(path, self.image_size, self.channels)
      if x.shape != self.shape:
        raise errors.UserError(f"{path} is {x.shape[:2]}, the others {self.shape[:2]}: set data.image_size.")
      yield path, {"x": x, "y": self.classes.index(cls)}
