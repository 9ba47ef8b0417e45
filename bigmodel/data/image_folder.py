"""Your own images: a folder of splits, each a folder of classes, prepared once into uint8 shards.

  my_scans/train/benign/001.png      data.name = "image_folder"
  my_scans/train/malignant/002.jpg   data.folder = "my_scans"
  my_scans/val/benign/...            data.image_size = 64 (resized, square), data.channels = 1 or 3

Class names are the train split's subfolders, sorted (their index is the label). The first run that
reads a folder prepares it (or ahead of time: `python -m bigmodel.prepare_images --folder=my_scans
--image_size=224`): worker processes (every core) decode each image with PIL, convert it to grey or RGB,
resize it and write it into shards of decoded pixels. A changed folder (files added, removed or rewritten)
or another size is prepared again, into another directory. No TFDS and no TensorFlow on this path.

This module holds the contract between the writer (`prepare`) and the reader (`ImageShards`):

    <data_dir>/image_folder/<folder name>_<fingerprint>/
      manifest.json            written last: shape, classes, and per split its shards, examples and byte
                               counts per channel (data.normalize's statistics, no image read again)
      train-labels.npy         int32 label of every image, in the folder's sorted order
      train-00000.bin ...      raw uint8 images, shard_examples x H x W x C each (the last shorter)

Why decoded pixels and not JPEG bytes: a batch is then a few reads by offset from memory-mapped files
and nothing to decode, so a training process keeps up with an accelerator on few cores, at ~7x the disk of
JPEGs at quality 90 (224 x 224 x 3 = 147 KB an image; ImageNet's 1.28 M: 193 GB). Measured in
benchmarks/input_pipeline.py (benchmarks/RESULTS.md).

A shard is written by one worker to a temporary name and renamed when whole: a killed preparation rerun
with the same command keeps the finished shards, writes the others, and ends byte-identical to an
uninterrupted one. An image PIL cannot read stops it with one line naming the file.
"""
import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np

from bigmodel import errors
from bigmodel.data import pipeline
from bigmodel.data.dataset import Dataset, InMemory, held_in_memory, register
from bigmodel.registry import Key, Range, at_least

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MANIFEST = "manifest.json"
FORMAT = 1  # the manifest's "format": bumped when a reader could misread an older layout
SHARD_MB = 64  # decoded bytes per shard: a worker's unit of work and of resuming
KEYS = dict(  # data.<key>: see data/__init__.py
    folder=Key("", "image_folder: <folder>/<split>/<class>/<images>"),
    image_size=Key(0, "image_folder: resize to image_size x image_size; 0 = keep (all must agree)", at_least(0)),
    channels=Key(3, "image_folder: 1 = grey, 3 = RGB", Range(1, 1, also=(3,))),
)


def scan(folder):
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


def _fingerprint(splits, image_size, channels, shard_examples):
  h = hashlib.sha1(f"{image_size},{channels},{shard_examples}".encode())
  for files in splits.values():
    for path, cls in files:
      st = os.stat(path)
      h.update(f"{path}|{cls}|{st.st_size}|{st.st_mtime_ns}".encode())
  return h.hexdigest()[:10]


def read_image(path, image_size, channels):
  """One image as uint8 (H, W, C), resized to image_size x image_size unless 0."""
  from PIL import Image
  try:
    with Image.open(path) as im:
      if image_size:
        im.draft("L" if channels == 1 else "RGB", (image_size, image_size))  # JPEG: decode at 1/2..1/8 scale
      im = im.convert("L" if channels == 1 else "RGB")
      if image_size:
        im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
      x = np.asarray(im, np.uint8)
  except (OSError, ValueError, SyntaxError) as e:  # PIL's kinds of "not an image it can read"
    raise errors.UserError(f"Could not read image {path}: {e}. Remove it or convert it to PNG/JPEG, then run "
                           "the same command again (finished shards are kept).") from None
  return x[..., None] if channels == 1 else x


def shard_name(split, i):
  return f"{split}-{i:05d}.bin"


def _write_shard(task):
  """A worker's task: the images `paths` decoded into shard file `path` (a temporary name, renamed when
  whole), or with `paths` None the shard an earlier run finished, read back. Returns (split, shard index,
  images written, the shard's byte counts per channel: pipeline.byte_counts, for data.normalize)."""
  split, i, path, paths, image_size, channels, shape = task
  if paths is None:
    return split, i, 0, pipeline.byte_counts(np.fromfile(path, np.uint8).reshape(-1, channels))
  counts = 0
  with open(path + ".tmp", "wb") as f:
    for p in paths:
      x = read_image(p, image_size, channels)
      if x.shape != shape:
        raise errors.UserError(f"{p} is {x.shape[0]}x{x.shape[1]}, the others {shape[0]}x{shape[1]}: set "
                               "data.image_size.")
      counts = counts + pipeline.byte_counts(x)
      f.write(x.tobytes())
  os.replace(path + ".tmp", path)
  return split, i, len(paths), counts


def _write_json(path, record):
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f, indent=1)
  os.replace(path + ".tmp", path)


def prepare(folder, image_size, channels, data_dir="", workers=-1, shard_mb=SHARD_MB, progress=True):
  """The directory of `folder` prepared (see the module docstring), made now if it is not complete."""
  from bigmodel.data import tokens  # its cheap shard fingerprint
  folder = os.path.abspath(folder)
  if channels not in (1, 3):
    raise errors.UserError(f"data.channels={channels}: use 1 (grey) or 3 (RGB).")
  files = scan(folder)
  classes = sorted({cls for _, cls in files["train"]})
  unknown = {cls for split_files in files.values() for _, cls in split_files} - set(classes)
  if unknown:
    raise errors.UserError(f"Classes {sorted(unknown)} appear in other splits of {folder} but not in train/.")
  shape = ((image_size, image_size, channels) if image_size else
           read_image(files["train"][0][0], 0, channels).shape)  # all must agree: _write_shard checks
  per_shard = max(1, int(shard_mb * 2**20) // int(np.prod(shape)))
  root = os.path.join(data_dir or os.path.expanduser("~/tensorflow_datasets"), "image_folder")
  name = f"{os.path.basename(folder) or 'root'}_{_fingerprint(files, image_size, channels, per_shard)}"
  out = os.path.join(root, name)
  if os.path.exists(os.path.join(out, MANIFEST)):
    return out
  os.makedirs(out, exist_ok=True)
  for name in os.listdir(out):  # a killed run's unfinished shards start again
    if name.endswith(".tmp"):
      os.remove(os.path.join(out, name))
  tasks, done = [], 0  # a task for every shard: finished ones are read back for their byte counts
  for split, split_files in files.items():
    labels = np.asarray([classes.index(cls) for _, cls in split_files], np.int32)
    labels_path = os.path.join(out, f"{split}-labels.npy")
    if not os.path.exists(labels_path):
      np.save(labels_path + ".tmp.npy", labels)
      os.replace(labels_path + ".tmp.npy", labels_path)
    for i, start in enumerate(range(0, len(split_files), per_shard)):
      paths = [p for p, _ in split_files[start:start + per_shard]]
      path = os.path.join(out, shard_name(split, i))
      finished = os.path.exists(path) and os.path.getsize(path) == len(paths) * int(np.prod(shape))
      done += len(paths) if finished else 0  # by an earlier run
      tasks.append((split, i, path, None if finished else paths, image_size, channels, tuple(shape)))
  total = sum(len(f) for f in files.values())
  t0 = time.perf_counter()
  counts = _run(tasks, workers, total, done, progress)
  manifest = {"format": FORMAT, "folder": folder, "image_size": image_size, "channels": channels,
              "shape": list(shape), "classes": classes, "shard_examples": per_shard,
              "splits": {split: {"examples": len(split_files), "labels": f"{split}-labels.npy",
                                 "shards": [{"file": shard_name(split, i),
                                             "examples": min(per_shard, len(split_files) - i * per_shard),
                                             "fingerprint": tokens.fingerprint(os.path.join(out, shard_name(split, i)))}
                                            for i in range(-(-len(split_files) // per_shard))],
                                 # How often each byte value occurs per channel: data.normalize's statistics
                                 # of the whole split, with no image read again (pipeline.stats_of_byte_counts).
                                 "byte_counts": sum(counts.get(split, []), np.zeros((channels, 256), np.int64)
                                                    ).tolist()}
                         for split, split_files in files.items()}}
  _write_json(os.path.join(out, MANIFEST), manifest)
  if done < total:
    print(f"prepared {folder}: {total:,} images of {'x'.join(map(str, shape))} in {out} "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
  return out


def _run(tasks, workers, total, done, progress):
  """The shard tasks on `workers` processes (-1 or 0: one per core), with a progress bar in images.
  Returns {split: [byte counts of each shard]}."""
  from jax._src import xla_bridge  # backends_are_initialized: no public API says whether jax's threads started
  from tqdm import tqdm
  if not tasks:
    return {}
  workers = min(workers if workers > 0 else os.cpu_count(), len(tasks))
  # Forked workers start at once; spawned ones import jax again (~1 s each), but a process whose jax
  # backend runs threads (a training run) must not fork.
  forkable = "fork" in multiprocessing.get_all_start_methods() and not xla_bridge.backends_are_initialized()
  context = multiprocessing.get_context("fork" if forkable else "spawn")
  with context.Pool(workers) as pool, tqdm(total=total, initial=done, unit="img", desc="prepare images",
                                           disable=not progress, dynamic_ncols=True, smoothing=0.1) as bar:
    counts = {}
    for split, _, n, shard_counts in pool.imap_unordered(_write_shard, tasks):  # a worker's error raises here
      counts.setdefault(split, []).append(shard_counts)
      bar.update(n)
  return counts


class ImageShards:
  """One split's images, read by index through memory maps of its shards (mapped per read and let go,
  so the process's memory does not grow with what it has read); its labels held (4 bytes an image)."""

  def __init__(self, directory, manifest, split):
    entry = manifest["splits"][split]
    self.paths = [os.path.join(directory, s["file"]) for s in entry["shards"]]
    self.shape = tuple(manifest["shape"])
    self.per_shard = manifest["shard_examples"]
    self.y = np.load(os.path.join(directory, entry["labels"]))

  def __len__(self):
    return len(self.y)

  @property
  def example_nbytes(self):
    return int(np.prod(self.shape))

  def labels(self):
    return self.y

  def gather(self, indices):
    indices = np.asarray(indices, np.int64)
    x = np.empty((len(indices), *self.shape), np.uint8)
    shard = indices // self.per_shard
    for s in np.unique(shard):
      here = shard == s
      mapped = np.memmap(self.paths[s], np.uint8, mode="r").reshape(-1, *self.shape)
      x[here] = mapped[indices[here] - s * self.per_shard]
      del mapped
    return {"x": x, "y": self.y[indices]}


def open_prepared(directory):
  """The manifest of a prepared directory, each shard checked against it (size and fingerprint)."""
  from bigmodel.data import tokens
  with open(os.path.join(directory, MANIFEST), encoding="utf-8") as f:
    manifest = json.load(f)
  nbytes = int(np.prod(manifest["shape"]))
  for entry in manifest["splits"].values():
    for shard in entry["shards"]:
      path = os.path.join(directory, shard["file"])
      if (not os.path.exists(path) or os.path.getsize(path) != shard["examples"] * nbytes
          or tokens.fingerprint(path) != shard["fingerprint"]):
        raise errors.UserError(f"Shard {path} is missing or not the one {MANIFEST} lists: delete {directory} "
                               "and run again to prepare the folder anew.")
  return manifest


@register("image_folder")
def load(c) -> Dataset:
  """data.name=image_folder: the folder prepared (once) and its train and eval splits opened."""
  if not c.folder:
    raise errors.UserError("data.name='image_folder' needs data.folder=<dir holding train/<class>/ images>.")
  directory = prepare(c.folder, c.image_size, c.channels, c.data_dir, workers=c.workers)
  manifest = open_prepared(directory)
  splits = {}
  for split in dict.fromkeys((c.train_split, c.eval_split)):
    if split not in manifest["splits"]:
      raise errors.UserError(f"Dataset {c.name!r} has no split {split!r}. Splits: {', '.join(manifest['splits'])}.")
    source = ImageShards(directory, manifest, split)
    held = held_in_memory(c, split, len(source), source.example_nbytes)
    splits[split] = InMemory(source.gather(np.arange(len(source)))) if held else source
  classes = tuple(manifest["classes"])
  counts = manifest["splits"][c.train_split].get("byte_counts")  # folders prepared before it was kept: None
  norm = pipeline.stats_of_byte_counts(counts) if c.normalize and counts else None
  return Dataset(name=c.name, kind="labelled", splits=splits, num_classes=len(classes), label_names=classes,
                 example_shape=tuple(manifest["shape"]), norm=norm)

