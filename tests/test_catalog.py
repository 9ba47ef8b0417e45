"""TFDS catalog datasets, end to end and offline: TFDS's own builders download from a server on
127.0.0.1 that holds the real files (Debian's Fashion-MNIST, an archive in the aclImdb layout), prepare
them, and our pipeline trains and evaluates on them. Without TensorFlow, the error says what to install."""
import functools
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds

from bigmodel import config as config_lib
from bigmodel.data import text
from bigmodel.train import train_and_evaluate
from conftest import OPTIONAL_DATASETS, ROOT, tiny_config

pytestmark = pytest.mark.slow  # the whole module: the fast tier (-m 'not slow') leaves it out
FASHION = os.path.dirname(OPTIONAL_DATASETS["fashion_mnist"][0])


@pytest.fixture
def server():
  """serve(directory) -> the base URL of an HTTP server on 127.0.0.1 holding that directory's files."""
  servers = []

  def serve(directory):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    servers.append(httpd)
    return f"http://127.0.0.1:{httpd.server_address[1]}/"

  yield serve
  for httpd in servers:
    httpd.shutdown()


@pytest.mark.needs("fashion_mnist", "tensorflow")
def test_tfds_fashion_mnist_prepares_from_its_download_trains_and_evaluates(server, tmp_path, monkeypatch):
  monkeypatch.setattr(tfds.image_classification.mnist.FashionMNIST, "URL", server(FASHION))
  c = tiny_config(str(tmp_path / "tfds"), total_steps=2, log_every=2, eval_every=2, checkpoint_every=2)
  c.data.update(name="fashion_mnist", batch_size=16, eval_batch_size=100, eval_examples=100)
  c.model = dict(name="cnn2d")
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert 0 <= final["accuracy"] <= 1 and len(final["confusion_matrix"]) == 10
  prepared = tfds.builder("fashion_mnist", data_dir=str(tmp_path / "tfds"))
  assert prepared.info.splits["train"].num_examples == 60_000 and prepared.info.splits["test"].num_examples == 10_000


def acl_imdb_archive(directory, per_class=40):
  """aclImdb_v1.tar.gz as the real one is laid out: {train,test}/{pos,neg}/<id>_<stars>.txt, train/unsup/."""
  words = {"pos": "a wonderful moving film, superb acting", "neg": "an awful boring mess, dreadful acting"}
  with tarfile.open(os.path.join(directory, "aclImdb_v1.tar.gz"), "w:gz") as tar:
    for split in ("train", "test"):
      for label, review in words.items():
        for i in range(per_class):
          data = f"{review} number {i} of the {split} set.".encode()
          info = tarfile.TarInfo(f"aclImdb/{split}/{label}/{i}_{8 if label == 'pos' else 2}.txt")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
    for i in range(5):
      data = f"an unlabelled review {i}".encode()
      info = tarfile.TarInfo(f"aclImdb/train/unsup/{i}_0.txt")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


@pytest.mark.needs("tensorflow")
def test_tfds_imdb_reviews_prepares_from_its_download_and_trains_a_text_classifier(server, tmp_path, monkeypatch):
  from tensorflow_datasets.datasets.imdb_reviews import imdb_reviews_dataset_builder as imdb
  acl_imdb_archive(tmp_path)
  monkeypatch.setattr(imdb, "_DOWNLOAD_URL", server(tmp_path) + "aclImdb_v1.tar.gz")
  c = tiny_config(str(tmp_path / "tfds"), total_steps=30, log_every=10, eval_every=30, checkpoint_every=30)
  c.data.update(name="imdb_reviews", tokenizer="byte", seq_len=48, batch_size=16, eval_batch_size=80)
  c.model = dict(name="gpt", num_layers=1, num_heads=2, dim=32, max_len=48, pool="mean")
  c.loss = "softmax_xent"
  ds = text.load_tfds_labelled(config_lib.resolve(c).data)
  assert ds.label_names == ("neg", "pos") and len(ds.splits["train"]) == len(ds.splits["test"]) == 80
  batch = ds.splits["test"].gather(np.arange(80))  # each text's label is the folder it came from
  said_pos = [ds.tokenizer.decode(ids[ids >= 0]).startswith("a wonderful") for ids in batch["x"]]
  assert list(batch["y"]) == [int(p) for p in said_pos] and 0 < sum(said_pos) < 80
  final = train_and_evaluate(c, str(tmp_path / "run"))
  assert 0 <= final["accuracy"] <= 1 and len(final["confusion_matrix"]) == 2


def site_packages_without_tensorflow(tmp_path):
  """A copy (as symlinks) of this environment's site-packages with TensorFlow left out: a Python started
  with -S and this on its path has everything but TensorFlow, as after `pip install -r requirements.txt`."""
  import site
  here = next(p for p in site.getsitepackages() if os.path.isdir(os.path.join(p, "tensorflow_datasets")))
  copy = tmp_path / "site-packages"
  copy.mkdir()
  for name in os.listdir(here):
    if not name.lower().startswith(("tensorflow-", "tensorflow_cpu", "tensorflow/")) and name != "tensorflow":
      os.symlink(os.path.join(here, name), copy / name)
  return str(copy)


@pytest.mark.needs("fashion_mnist")
def test_without_tensorflow_preparing_a_catalog_image_dataset_says_what_to_install(tmp_path):
  """The real preparation of TFDS's fashion_mnist, in a Python that has no TensorFlow: TFDS's image
  encoder needs it, and the error says what to install instead of blaming the network."""
  script = f"""
import functools, http.server, importlib.util, threading
assert importlib.util.find_spec("tensorflow") is None
import ml_collections, tensorflow_datasets as tfds
from bigmodel import data, config, errors

handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory={FASHION!r})
httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=httpd.serve_forever, daemon=True).start()
tfds.image_classification.mnist.FashionMNIST.URL = f"http://127.0.0.1:{{httpd.server_address[1]}}/"
c = config.resolve(ml_collections.ConfigDict(dict(model=dict(name="cnn2d"),
                                                  data=dict(name="fashion_mnist", data_dir={str(tmp_path)!r}))))
try:
  data.load(c.data)
except errors.UserError as e:
  print(e)
"""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, site_packages_without_tensorflow(tmp_path)]))
  out = subprocess.run([sys.executable, "-S", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert "encodes its examples with TensorFlow, which is not installed: pip install -r requirements-catalog.txt" \
      in out.stdout, out.stdout + out.stderr[-2000:]
