"""Images at the rate a step needs: how fast training batches of a 224-px JPEG folder are delivered, against
PyTorch's DataLoader on the same files and cores, and what a training run on 2k and 20k images holds.

Run:  python -m benchmarks.input_pipeline [--images=2000 --big_images=20000 --repeats=3 --batches=30]
      python -m benchmarks.input_pipeline --layout=imagenette --only=throughput

Random JPEGs (smooth noise, quality 90) are written with PIL into a temporary directory (never into the
repo), laid out as --layout says: `flat`, 224 x 224, 2 classes, train/ and test/; or `imagenette`, the layout
of TFDS's imagenette (imagenette2-320: train/ and val/ of 10 WordNet-id class folders of .JPEG files, shorter
side 320 px, longer 320-480), which bigmodel resizes to 224 once when it prepares the folder and the PyTorch
side each time it reads an image (as torchvision's Resize((224, 224)) would). Then:
1. Storage: `python -m bigmodel.prepare_images` on the folder (all cores; images/s), and what reading one
   image costs from either stored form, on one core: a uint8 row from the prepared shards (a memory map
   by index) against decoding the JPEG (PIL, as workers would for JPEG bytes); bytes on disk per image.
2. Throughput, images/s delivered as float32 batches of 128 with random crop (4 px padding) + flip +
   per-channel normalisation, after the first batch: bigmodel's host pipeline (the prepared shards,
   streamed, data.workers = all cores; its uint8 batches scaled and normalised by the train step's own
   first operation, jitted, here on the same CPU cores) against torch's DataLoader(num_workers = all cores,
   shuffle) over a Dataset doing what torchvision's ImageFolder + RandomCrop(224, padding=4) +
   RandomHorizontalFlip + ToTensor + Normalize do (PIL decode of the JPEG each time). torchvision itself is
   not used: its PyPI wheel is built for CUDA torch and does not import beside torch 2.13.0+cpu. Each
   measurement is a fresh process; A B A B ..., --repeats each; medians. Time to the first batch beside.
3. Memory: peak RSS (ru_maxrss of the process, the largest of its children) and time to the first step of
   `bigmodel.train --config=configs/image_folder/binary_cnn.py --config.data.image_size=224` for a few steps
   on --images and --big_images images, each folder prepared beforehand.
Prints markdown tables; name the CPU (lscpu) and the load (uptime) when you copy them into RESULTS.md.
"""
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from absl import app, flags

flags.DEFINE_integer("images", 2000, "Training images of the folder for the throughput rows and the small RSS row.")
flags.DEFINE_integer("big_images", 20000, "Training images of the big RSS row (0: skip it).")
flags.DEFINE_integer("repeats", 3, "Runs of each throughput measurement (medians are reported).")
flags.DEFINE_integer("batches", 30, "Batches of 128 timed per throughput run, after the first.")
flags.DEFINE_integer("steps", 4, "Training steps of each memory row.")
flags.DEFINE_enum("only", "", ["", "throughput", "memory"], "Run one part only (storage rows come with both).")
flags.DEFINE_enum("layout", "flat", ["flat", "imagenette"], "The folder's layout and image sizes (see above).")
flags.DEFINE_string("dir", "", "Where the folders go (default: a temporary directory, removed after).")
flags.DEFINE_string("child", "", "internal: run one measurement (ours|torch) and print JSON")
flags.DEFINE_string("folder", "", "internal: the child's folder")
flags.DEFINE_string("data_dir", "", "internal: the child's prepared data_dir")
FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, BATCH, PADDING = 224, 128, 4
# imagenette's 10 classes (their ImageNet WordNet ids).
WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916", "n03417042", "n03425413",
         "n03445777", "n03888605")


def write_folder(root, n_train, n_test=100, seed=0):
  """n_train + n_test random JPEGs in --layout's form: <root>/{train,test}/class_<k>/*.jpg at 224 x 224, or
  <root>/{train,val}/<wnid>/*.JPEG at 320 x 320-480 (either orientation)."""
  from PIL import Image
  rng = np.random.default_rng(seed)
  imagenette = FLAGS.layout == "imagenette"
  classes = WNIDS if imagenette else ("class_0", "class_1")
  for split, n in (("train", n_train), ("val" if imagenette else "test", n_test)):
    for i in range(n):
      folder = os.path.join(root, split, classes[i % len(classes)])
      os.makedirs(folder, exist_ok=True)
      size = (SIZE, SIZE)
      if imagenette:  # (width, height): portrait and landscape in turn
        long = int(rng.integers(320, 481))
        size = (320, long) if i % 2 else (long, 320)
      small = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
      Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(
          os.path.join(folder, f"{i:06d}.JPEG" if imagenette else f"{i:06d}.jpg"), quality=90)
  return root


def decode(path):
  """One image as the PyTorch side (and JPEG bytes in workers) would make it: decoded, RGB, 224 x 224."""
  from PIL import Image
  with Image.open(path) as im:
    im = im.convert("RGB")
    if im.size != (SIZE, SIZE):  # bigmodel's preparation resizes the same way (data/image_folder.py)
      im = im.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(im)


def prepare(folder, data_dir):
  """(seconds, prepared directory) of python -m bigmodel.prepare_images at 224 px, all cores."""
  start = time.perf_counter()
  proc = subprocess.run([sys.executable, "-m", "bigmodel.prepare_images", f"--folder={folder}",
                         f"--image_size={SIZE}", f"--data_dir={data_dir}"], cwd=ROOT, check=True,
                        capture_output=True, text=True)
  return time.perf_counter() - start, proc.stdout.strip().splitlines()[-1]


def read_costs(folder, directory, n=300):
  """Per image, one core: (ms reading a uint8 row by index from the shards, ms decoding (and resizing) the JPEG;
  bytes of each)."""
  from bigmodel.data import image_folder
  split = image_folder.ImageShards(directory, image_folder.open_prepared(directory), "train")
  files = [p for p, _ in image_folder.scan(folder)["train"]]
  idx = np.random.default_rng(0).permutation(len(split))[:n]
  start = time.perf_counter()
  for i in idx:
    split.gather([i])
  shard_ms = (time.perf_counter() - start) / n * 1e3
  start = time.perf_counter()
  for i in idx:
    decode(files[i])
  jpeg_ms = (time.perf_counter() - start) / n * 1e3
  jpeg_bytes = np.mean([os.path.getsize(files[i]) for i in idx])
  return shard_ms, jpeg_ms, split.example_nbytes, jpeg_bytes


def child_ours():
  """bigmodel's training iterator on the prepared folder: streamed, all cores, crop + flip + normalise."""
  from bigmodel import config as config_lib, data
  from bigmodel.data import feed as feed_lib
  import ml_collections
  c = config_lib.resolve(ml_collections.ConfigDict(dict(model=dict(name="cnn2d"), data=dict(
      name="image_folder", folder=FLAGS.folder, image_size=SIZE, data_dir=FLAGS.data_dir, batch_size=BATCH,
      memory_mb=0, augment=("random_crop", "flip"), crop_padding=PADDING, normalize=True,
      eval_split="val" if FLAGS.layout == "imagenette" else "test"))))
  import jax
  start = time.perf_counter()
  ds = data.load(c.data, seed=0)
  feed = feed_lib.make(ds, c.data, 0, None)
  # What the train step does first with a column (here on the same CPU cores: on an accelerator it is free).
  scale = jax.jit(lambda column: feed.prepare(None, jax.tree.map(lambda a: a[:, 0], column)))
  x = scale(feed.next(1, 1))["x"].block_until_ready()
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    x = scale(feed.next(1, 1))["x"].block_until_ready()
  assert x.dtype == np.float32 and x.shape == (BATCH, SIZE, SIZE, 3), x.shape
  return FLAGS.batches * BATCH / (time.perf_counter() - start), first_s


def child_torch():
  """torch DataLoader over the JPEG files: what torchvision's ImageFolder + RandomCrop(padding) + flip +
  ToTensor + Normalize compute, with PIL."""
  import torch
  from bigmodel.data import image_folder
  files = image_folder.scan(FLAGS.folder)["train"]
  classes = sorted({cls for _, cls in files})
  mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

  class Folder(torch.utils.data.Dataset):
    def __len__(self):
      return len(files)

    def __getitem__(self, i):
      path, cls = files[i]
      x = torch.from_numpy(decode(path)).permute(2, 0, 1)  # C, H, W uint8
      x = torch.nn.functional.pad(x, (PADDING,) * 4)
      top, left = torch.randint(0, 2 * PADDING + 1, (2,)).tolist()
      x = x[:, top:top + SIZE, left:left + SIZE]
      if torch.rand(()) < 0.5:
        x = x.flip(-1)
      return (x.float() / 255 - mean) / std, classes.index(cls)

  torch.set_num_threads(1)
  start = time.perf_counter()
  loader = torch.utils.data.DataLoader(Folder(), batch_size=BATCH, shuffle=True, num_workers=os.cpu_count(),
                                       drop_last=True, persistent_workers=True)
  it = iter(loader)
  batches_per_epoch = len(loader)
  next(it)
  first_s = time.perf_counter() - start
  start = time.perf_counter()
  drawn = 1
  for _ in range(FLAGS.batches):
    if drawn == batches_per_epoch:
      it, drawn = iter(loader), 0
    x, _ = next(it)
    drawn += 1
  assert x.shape == (BATCH, 3, SIZE, SIZE)
  return FLAGS.batches * BATCH / (time.perf_counter() - start), first_s


def run_child(kind, folder, data_dir):
  proc = subprocess.run([sys.executable, "-m", "benchmarks.input_pipeline", f"--child={kind}", f"--folder={folder}",
                         f"--layout={FLAGS.layout}", f"--data_dir={data_dir}", f"--batches={FLAGS.batches}"], cwd=ROOT,
                        capture_output=True, text=True)
  if proc.returncode:
    raise SystemExit(f"the {kind} measurement failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def train_memory(folder, data_dir, workdir):
  """(peak RSS MB, first step s) of a training process on `folder` (prepared already)."""
  code = ("import resource, subprocess, sys, json\n"
          "proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
          "assert proc.returncode == 0, proc.stderr[-3000:]\n"
          "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, proc.stderr]))\n")
  cmd = [sys.executable, "-m", "bigmodel.train", "--config=configs/image_folder/binary_cnn.py", f"--workdir={workdir}",
         f"--config.data.folder={folder}", f"--config.data.image_size={SIZE}", f"--config.data.data_dir={data_dir}",
         f"--config.total_steps={FLAGS.steps}", "--config.optimizer.warmup_steps=1", "--config.data.batch_size=32",
         "--config.data.eval_batch_size=100", f"--config.eval_every={FLAGS.steps}", "--config.log_every=1",
         f"--config.checkpoint_every={FLAGS.steps}", "--config.compilation_cache="]
  proc = subprocess.run([sys.executable, "-c", code, *cmd], cwd=ROOT, check=True, capture_output=True, text=True)
  rss, stderr = json.loads(proc.stdout.strip().splitlines()[-1])
  first = float(re.search(r"first step done ([\d.]+) s", stderr).group(1))
  said = [line for line in stderr.splitlines() if line.startswith(("streaming", "holding"))]
  return rss, first, said


def main(argv):
  del argv
  if FLAGS.child:
    rate, first = child_ours() if FLAGS.child == "ours" else child_torch()
    print(json.dumps([rate, first]))
    return
  if FLAGS.layout == "imagenette" and FLAGS.only != "throughput":
    raise app.UsageError("--layout=imagenette is for the throughput rows: add --only=throughput (the memory rows "
                         "train configs/image_folder/binary_cnn.py, which needs two classes and a test split).")
  with tempfile.TemporaryDirectory(dir=FLAGS.dir or None) as work:
    folder = write_folder(os.path.join(work, "small"), FLAGS.images)
    data_dir = os.path.join(work, "prepared")
    seconds, directory = prepare(folder, data_dir)
    shard_ms, jpeg_ms, shard_bytes, jpeg_bytes = read_costs(folder, directory)
    n = FLAGS.images + 100
    print(f"\n{n:,} random JPEGs, layout {FLAGS.layout}, prepared at {SIZE} px, {os.cpu_count()} cores\n")
    print("| stored as | prepare (all cores) | read one image, one core | images/s a core | on disk per image |\n"
          "|---|---|---|---|---|")
    print(f"| uint8 shards (chosen) | {seconds:.1f} s, {n / seconds:,.0f} images/s | {shard_ms:.3f} ms | "
          f"{1e3 / shard_ms:,.0f} | {shard_bytes / 1e3:,.0f} kB |")
    print(f"| JPEG bytes, decoded in workers | (a copy) | {jpeg_ms:.3f} ms | {1e3 / jpeg_ms:,.0f} | "
          f"{jpeg_bytes / 1e3:,.0f} kB |", flush=True)
    if FLAGS.only != "memory":
      throughput_rows(folder, data_dir)
    if FLAGS.only != "throughput":
      memory_rows(work, folder, data_dir)


def throughput_rows(folder, data_dir):
  results = {"ours": [], "torch": []}
  for _ in range(FLAGS.repeats):
    for kind in results:
      results[kind].append(run_child(kind, folder, data_dir))
  print(f"\nimages/s delivered (float32 batches of {BATCH}, crop + flip + normalise), {FLAGS.batches} batches after "
        f"the first; medians of {FLAGS.repeats}, interleaved\n")
  print("| pipeline | images/s | runs | first batch |\n|---|---|---|---|")
  names = {"ours": f"bigmodel (uint8 shards, data.workers={os.cpu_count()})",
           "torch": f"torch DataLoader(num_workers={os.cpu_count()}) on the JPEGs"}
  for kind, rows in results.items():
    rates, firsts = zip(*rows)
    print(f"| {names[kind]} | {statistics.median(rates):,.0f} | {', '.join(f'{r:,.0f}' for r in rates)} | "
          f"{statistics.median(firsts):.1f} s |")
  ratio = statistics.median(r for r, _ in results["ours"]) / statistics.median(r for r, _ in results["torch"])
  print(f"\nratio bigmodel / torch: {ratio:.2f}", flush=True)


def memory_rows(work, folder, data_dir):
  sizes = [(FLAGS.images, folder)]
  if FLAGS.big_images:
    sizes.append((FLAGS.big_images, write_folder(os.path.join(work, "big"), FLAGS.big_images)))
    prepare(sizes[-1][1], data_dir)
  print(f"\n`bigmodel.train` binary_cnn at {SIZE} px, batch 32, {FLAGS.steps} steps, folder prepared before\n")
  print("| training images | peak RSS | first step | data |\n|---|---|---|---|")
  for n, path in sizes:
    rss, first, said = train_memory(path, data_dir, os.path.join(work, f"run_{n}"))
    print(f"| {n:,} | {rss:,.0f} MB | {first:.1f} s | {'; '.join(said)} |", flush=True)


if __name__ == "__main__":
  app.run(main)
