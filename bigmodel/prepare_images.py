"""Prepare an image folder ahead of training (the first run that reads it would do the same).

    python -m bigmodel.prepare_images --folder=my_scans --image_size=224 [--data_dir=...] [--workers=N]

Prints the prepared directory. The format, the resuming after a kill and the reader are
bigmodel/data/image_folder.py's.
"""
from absl import flags

from bigmodel import errors
from bigmodel.data import image_folder


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.folder:
    raise errors.UserError("--folder is required.")
  print(image_folder.prepare(f.folder, f.image_size, f.channels, f.data_dir, f.workers, f.shard_mb))


if __name__ == "__main__":
  flags.DEFINE_string("folder", None, "<folder>/<split>/<class>/<images>.")
  flags.DEFINE_integer("image_size", 0, "Resize to image_size x image_size; 0 = keep (all must agree).")
  flags.DEFINE_integer("channels", 3, "1 = grey, 3 = RGB.")
  flags.DEFINE_string("data_dir", "", "Where prepared datasets live (data.data_dir); empty = ~/tensorflow_datasets.")
  flags.DEFINE_integer("workers", -1, "Decoding processes; -1 = one per core.")
  flags.DEFINE_float("shard_mb", image_folder.SHARD_MB, "Decoded MB per shard (a worker's unit of work and of "
                     "resuming).")
  errors.run(main)
