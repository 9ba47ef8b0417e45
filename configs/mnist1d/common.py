"""The MNIST-1D paper's training setup, shared by every configs/mnist1d/ model.

Adam at a constant 1e-2, batch 100, 8,000 steps (Greydanus & Kobak, 2020).
"""
import ml_collections

from bigmodel import config as config_lib


def paper_setup(**model):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="mnist1d", batch_size=100)
  c.model = model
  c.loss = "softmax_xent"
  c.optimizer = dict(name="adam", learning_rate=1e-2, schedule="constant")
  c.total_steps = 8000
  c.log_every = 250
  c.eval_every = 1000
  c.checkpoint_every = 1000
  # The 4,000 training examples live on the device; 250 steps (one log interval) run per dispatch.
  c.steps_per_call = 250
  return c


def resolved(c):
  return config_lib.resolve(c)  # every default filled in: any key can be overridden
