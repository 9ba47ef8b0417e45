"""Tasks by name: what a model is trained to do, and everything that depends on it.

A task owns the losses it accepts, the model's output size, the statistics the train step sums
over a batch, the sums evaluation adds up over batches and devices, and the metrics made from
them. The trainer and evaluation call these and never branch on the task. A new task is one class:

  @tasks.register("my_task")
  class MyTask(tasks.Task):
    losses = {"my_loss": my_loss_fn}
    ...

Chosen by the config's `task` key; left empty, the `loss` names it (softmax_xent or sigmoid_bce:
classification, mse: regression, lm_xent: language_model, or masked_lm when data.mlm_mask_rate > 0).
"""
import jax
import jax.numpy as jnp

from bigmodel import errors, losses, metrics, registry

TASKS = {}  # name -> Task instance


def register(name):
  def wrap(cls):
    TASKS[name] = cls()
    TASKS[name].name = name
    return cls
  return wrap


def get(name):
  return registry.lookup(TASKS, name, "task")


def resolve(task, loss, mlm_mask_rate=0.0):
  """(task name, loss name) of a config: the task's default loss, or the task the loss implies."""
  if loss:
    registry.lookup(losses.LOSSES, loss, "loss")
  if not task:
    owners = [name for name, t in TASKS.items() if loss in t.losses] if loss else ["classification"]
    task = "masked_lm" if owners[0] == "language_model" and mlm_mask_rate else owners[0]
  t = get(task)
  loss = loss or next(iter(t.losses))
  if loss not in t.losses:
    raise errors.UserError(f"task={task!r} takes loss {' or '.join(map(repr, t.losses))}, not {loss!r}.")
  return task, loss


class Task:
  """The interface, with the defaults of an example-level task (one target per example)."""
  name = ""
  losses = {}  # loss name -> per-example loss(outputs, targets); the first is the default
  kinds = ()  # the Dataset kinds it trains on
  serves = None  # what an export of it does: "classify", "generate", or None (not exportable)
  not_served = "export serves classifiers and language models"  # why not, when serves is None

  def check(self, config, dataset):
    """Raises ValueError if this task cannot train on `dataset`."""
    if dataset.kind not in self.kinds:
      raise errors.UserError(f"task={self.name!r} (loss={config.loss!r}) needs a {' or '.join(self.kinds)} dataset; "
                             f"data.name={config.data.name!r} is a {dataset.kind} dataset.")

  def num_outputs(self, dataset, loss):
    raise NotImplementedError

  def input_vocab(self, dataset):
    """The model's input vocabulary, for token-id datasets."""
    return dataset.tokenizer.vocab_size

  def weights(self, y):
    """Which loss entries count (1.0) and which not (0.0): here, every example."""
    return jnp.ones(y.shape[:1], jnp.float32)

  def train_sums(self, out, y, loss_fn):
    """Sums over a batch: "loss", "weight" (what the loss is averaged over) and optionally
    "correct" (reported as accuracy = correct / weight)."""
    w = self.weights(y)
    return {"loss": jnp.sum(loss_fn(out, y) * w), "weight": jnp.sum(w)}

  def eval_sums(self, out, y, mask_B, loss_fn):
    """Sums over the real (mask_B = 1) rows of an evaluation batch; they add across batches."""
    raise NotImplementedError

  def metrics(self, sums, dataset, split):
    raise NotImplementedError

  def tokens_per_example(self, data_config):
    """For the throughput log: tokens per example, or None where examples are not token windows."""
    return None


def predict_classes(logits_BxO):
  """Class predictions matching how each classification loss reads the logits."""
  if logits_BxO.shape[-1] == 1:  # sigmoid with one output: class 1 when logit > 0
    return (logits_BxO[:, 0] > 0).astype(jnp.int32)
  return jnp.argmax(logits_BxO, axis=-1)


@register("classification")
class Classification(Task):
  """Softmax over classes, or sigmoids (one output for two classes; one per class otherwise)."""
  losses = {"softmax_xent": losses.softmax_xent, "sigmoid_bce": losses.sigmoid_bce}
  kinds = ("labelled",)
  serves = "classify"

  def num_outputs(self, dataset, loss):
    return 1 if loss == "sigmoid_bce" and dataset.num_classes == 2 else dataset.num_classes

  def train_sums(self, out, y, loss_fn):
    sums = super().train_sums(out, y, loss_fn)
    if y.ndim == 1:  # integer labels (not multi-label targets)
      sums["correct"] = jnp.sum(predict_classes(out) == y).astype(jnp.float32)
    return sums

  def eval_sums(self, out, y, mask_B, loss_fn):
    C = max(out.shape[-1], 2)  # a confusion matrix holds every other metric
    true_BxC = jax.nn.one_hot(y, C) * mask_B[:, None]
    pred_BxC = jax.nn.one_hot(predict_classes(out), C)
    return {"loss": jnp.sum(loss_fn(out, y) * mask_B), "confusion": jnp.einsum("bi,bj->ij", true_BxC, pred_BxC)}

  def metrics(self, sums, dataset, split):
    return metrics.classification(sums["confusion"], sums["loss"])


@register("regression")
class Regression(Task):
  """Real-valued targets, one per output."""
  losses = {"mse": losses.mse}
  kinds = ("targets",)

  def num_outputs(self, dataset, loss):
    return 1  # a scalar target

  def eval_sums(self, out, y, mask_B, loss_fn):
    y = y.reshape(out.shape)
    err = out - y
    return {"loss": jnp.sum(loss_fn(out, y) * mask_B), "count": mask_B.sum() * out.shape[-1],
            "sq_err": jnp.sum((err ** 2).sum(-1) * mask_B), "abs_err": jnp.sum(jnp.abs(err).sum(-1) * mask_B),
            "y": jnp.sum(y.sum(-1) * mask_B), "y2": jnp.sum((y ** 2).sum(-1) * mask_B)}

  def metrics(self, sums, dataset, split):
    return metrics.regression(sums)


@register("language_model")
class LanguageModel(Task):
  """Next-token prediction over a corpus: a loss per position; targets < 0 do not count."""
  losses = {"lm_xent": losses.lm_xent}
  kinds = ("corpus",)
  serves = "generate"

  def check(self, config, dataset):
    super().check(config, dataset)
    if (dataset.mask is not None) != (self.name == "masked_lm"):
      raise errors.UserError(f"task={self.name!r} and data.mlm_mask_rate={config.data.mlm_mask_rate} do not go "
                             "together: masked-LM pretraining is task='masked_lm' with data.mlm_mask_rate > 0 (BERT: "
                             "0.15); next-token prediction is task='language_model' with data.mlm_mask_rate=0.")

  def num_outputs(self, dataset, loss):
    return dataset.tokenizer.vocab_size

  def weights(self, y):
    return (y >= 0).astype(jnp.float32)

  def train_sums(self, out, y, loss_fn):
    sums = super().train_sums(out, y, loss_fn)
    sums["correct"] = jnp.sum((jnp.argmax(out, -1) == y) * self.weights(y))
    return sums

  def eval_sums(self, out, y, mask_B, loss_fn):
    w_BxL = self.weights(y) * mask_B[:, None]
    return {"loss": jnp.sum(loss_fn(out, y) * w_BxL), "tokens": w_BxL.sum(),
            "correct": jnp.sum((jnp.argmax(out, -1) == y) * w_BxL)}

  def metrics(self, sums, dataset, split):
    return metrics.language_model(sums, dataset.bytes_per_token[split])

  def tokens_per_example(self, data_config):
    return data_config.seq_len


@register("masked_lm")
class MaskedLM(LanguageModel):
  """BERT's pretraining: predict the masked tokens (mlm.py) from both sides. The mask id is the
  tokenizer's [MASK] or, if it has none, one past its vocabulary, so the model's input and output
  vocabularies are then one larger. It cannot continue text, so it is not exported for generation."""
  serves = None
  not_served = ("it is a masked LM: it predicts masked tokens from both sides and cannot generate text. "
                "Fine-tune it into a classifier (docs/fine-tuning.md) and export that")

  def num_outputs(self, dataset, loss):
    return self.input_vocab(dataset)

  def input_vocab(self, dataset):
    return dataset.tokenizer.vocab_size + (getattr(dataset.tokenizer, "mask_id", None) is None)
