"""Scalars to TensorBoard event files (tensorboardX: no TensorFlow) and metrics.jsonl."""
import json
import os

import tensorboardX


class MetricWriter:

  def __init__(self, workdir, enabled=True):
    self.enabled = enabled  # only the first host writes
    if enabled:
      self.tb = tensorboardX.SummaryWriter(os.path.join(workdir, "tensorboard"))
      self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

  def write(self, step, split, metrics):
    """Scalars go to both; lists (a confusion matrix) to the JSON lines only."""
    if not self.enabled:
      return
    for k, v in metrics.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(f"{split}/{k}", v, step)
    self.jsonl.write(json.dumps({"step": step, "split": split, **metrics}) + "\n")
    self.jsonl.flush()

  def close(self):
    if self.enabled:
      self.tb.close()
      self.jsonl.close()
