"""One process of a multi-process test (tests/test_multihost.py): trains a list of jobs in turn, then
records what this process's feeds read. Started N times by bigmodel.launch, or once as the
one-process reference, so each process compiles and loads jax once for all the jobs.

  python tests/multihost_worker.py SPEC.json

SPEC: {"data_dir", "corpus", "jobs": [{"config": "gpt" | "resnet" | <config file>, "set": {"a.b": value},
       "workdir"}], "shares": <directory> (optional)}.
"""
import importlib.util
import json
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]

import conftest  # noqa: E402 (the test XLA flags; those the launcher set are kept)

STEPS_READ = 3  # batches drawn from each feed


def config(job, spec):
  name = job["config"]
  if name == "gpt":
    c = conftest.gpt_config(spec["data_dir"], spec["corpus"])
  elif name == "resnet":
    c = conftest.resnet_config(spec["data_dir"])
  else:
    module_spec = importlib.util.spec_from_file_location("job_config", os.path.join(conftest.ROOT, name))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    c = module.get_config()
    c.data.data_dir = spec["data_dir"]
  for key, value in job.get("set", {}).items():
    section, _, field = key.rpartition(".")
    (c[section] if section else c)[field] = value
  return c


class Recorded:
  """A split that remembers the example indices of every gather: what this process read."""

  def __init__(self, split):
    self.split, self.reads = split, []

  def __len__(self):
    return len(self.split)

  def gather(self, indices):
    self.reads.append([int(i) for i in indices])
    return self.split.gather(indices)


def shares(spec):
  """The example indices this process's feeds read and send: the host-fed (grain) path on an array
  split, on text windows and on an image folder's shards, and the on-device path (the indices it sends)."""
  import jax
  from bigmodel import config as config_lib, experiment, sharding
  from bigmodel.data import feed as feed_lib
  out = {}
  for kind, c in (("host", conftest.tiny_config(spec["data_dir"])),
                  ("text", conftest.gpt_config(spec["data_dir"], spec["corpus"])),
                  ("images", conftest.image_shares_config(spec["data_dir"], spec["images"]))):
    c = config_lib.resolve(c)
    ex = experiment.build(c)
    split = Recorded(ex.dataset.splits[c.data.train_split])
    feed = feed_lib.HostFeed(split, c.data, c.seed, ex.dataset.norm, ex.dataset.mask)
    batches = [feed.next(1, 1) for _ in range(STEPS_READ)]
    out[kind] = {"reads": split.reads, "x": [jax.tree.map(lambda a: a[:, 0].tolist(), b)["x"] for b in batches]}
  c = config_lib.resolve(conftest.tiny_config(spec["data_dir"]))
  ex = experiment.build(c)
  feed = feed_lib.make(ex.dataset, c.data, c.seed, sharding.replicated(sharding.make_mesh(c.sharding)))
  assert isinstance(feed, feed_lib.DeviceFeed)
  out["device"] = {"sent": [feed.next(1, 1)["idx"][:, 0].tolist() for _ in range(STEPS_READ)]}
  with open(os.path.join(spec["shares"], f"process{jax.process_index()}.json"), "w") as f:
    json.dump(out, f)


def main(path):
  with open(path) as f:
    spec = json.load(f)
  from bigmodel import distributed, train
  if distributed.wanted({}):
    distributed.initialize(spec.get("heartbeat_timeout", 30))
  for job in spec["jobs"]:
    train.train_and_evaluate(config(job, spec), job["workdir"])
  if spec.get("shares"):
    shares(spec)


if __name__ == "__main__":
  main(sys.argv[1])
