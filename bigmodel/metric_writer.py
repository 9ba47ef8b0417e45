"""Scalars to TensorBoard event files (tensorboardX: no TensorFlow) and metrics.jsonl."""
import json
import sys
import time

from bigmodel import workdir as workdir_lib


def _import_tensorboardx():
  """tensorboardX imports torch when it is installed (2-3 s here) only to accept torch tensors; we
  write floats, so hide torch while it imports (unless this process already imported it)."""
  hide = "torch" not in sys.modules
  if hide:
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    import tensorboardX
  finally:
    if hide:
      del sys.modules["torch"]
  return tensorboardX


class MetricWriter:

  def __init__(self, workdir, enabled=True):
    self.enabled = enabled  # only the first host writes
    # TensorBoard's writer opens at the first write, so its imports (0.2 s) come after the first step.
    self.tb, self.tb_dir = None, workdir_lib.path(workdir, workdir_lib.TENSORBOARD)
    if enabled:
      self.jsonl = open(workdir_lib.path(workdir, workdir_lib.METRICS), "a")

  def write(self, step, split, metrics):
    """Scalars go to both; lists (a confusion matrix) to the JSON lines only, with the wall-clock `time`
    (Unix seconds, as TensorBoard stores it), so runs compare at equal wall time as well as equal steps."""
    if not self.enabled:
      return
    if self.tb is None:
      self.tb = _import_tensorboardx().SummaryWriter(self.tb_dir)
    for k, v in metrics.items():
      if isinstance(v, (int, float)):
        self.tb.add_scalar(f"{split}/{k}", v, step)
    self.jsonl.write(json.dumps({"step": step, "split": split, "time": round(time.time(), 3), **metrics}) + "\n")
    self.jsonl.flush()

  def close(self):
    if self.enabled:
      if self.tb is not None:
        self.tb.close()
      self.jsonl.close()
