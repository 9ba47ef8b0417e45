"""The one trainer: `python -m bigmodel.train --config=configs/mnist1d/cnn.py --workdir=runs/x`.

Everything the run needs is in the config (see bigmodel/config.py for every key
and its default). The workdir receives the resolved config, checkpoints,
TensorBoard events and metrics.jsonl; rerunning the same command resumes from
the newest checkpoint, data order included.
"""
import functools
import json
import os
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging
from flax.training import train_state
from ml_collections import config_flags
from tqdm import tqdm

from bigmodel import checkpoint, config as config_lib, data, losses, metrics, models, optim, sharding
from bigmodel.data import pipeline
from bigmodel.metric_writer import MetricWriter


class TrainState(train_state.TrainState):
  rng: jax.Array  # dropout and other randomness: folded with the step each update
  model_state: Any  # non-parameter collections, e.g. BatchNorm statistics


def train_step(state, batch, *, loss_fn, task):
  """One optimizer update on a global batch; pure, jitted once in `Experiment`."""
  rng = jax.random.fold_in(state.rng, state.step)
  w = losses.weights(task, batch["y"])  # which examples (or tokens) count

  def loss_and_aux(params):
    variables = {"params": params, **state.model_state}
    if state.model_state:
      out, model_state = state.apply_fn(variables, batch["x"], train=True, rngs={"dropout": rng},
                                        mutable=list(state.model_state))
    else:
      out, model_state = state.apply_fn(variables, batch["x"], train=True, rngs={"dropout": rng}), {}
    return jnp.sum(loss_fn(out, batch["y"]) * w) / jnp.maximum(w.sum(), 1), (out, model_state)

  (loss, (out, model_state)), grads = jax.value_and_grad(loss_and_aux, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, model_state=model_state)
  step_metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
  if task == "language_model":
    step_metrics["accuracy"] = jnp.sum((jnp.argmax(out, -1) == batch["y"]) * w) / jnp.maximum(w.sum(), 1)
  elif task == "classification" and batch["y"].ndim == 1:
    step_metrics["accuracy"] = jnp.mean(losses.predict_classes(out) == batch["y"])
  return state, step_metrics


def eval_step(state, batch, *, loss_fn, task, num_classes):
  """Sums of evaluation statistics over the real (mask=True) rows of a batch."""
  out = state.apply_fn({"params": state.params, **state.model_state}, batch["x"], train=False)
  mask = batch["mask"].astype(jnp.float32)
  if task == "language_model":
    w_BxL = losses.weights(task, batch["y"]) * mask[:, None]
    return {"loss": jnp.sum(loss_fn(out, batch["y"]) * w_BxL), "tokens": w_BxL.sum(),
            "correct": jnp.sum((jnp.argmax(out, -1) == batch["y"]) * w_BxL)}
  sums = {"loss": jnp.sum(loss_fn(out, batch["y"]) * mask)}
  if task == "classification":  # a confusion matrix holds every other metric
    true_BxC = jax.nn.one_hot(batch["y"], num_classes) * mask[:, None]
    pred_BxC = jax.nn.one_hot(losses.predict_classes(out), num_classes)
    sums["confusion"] = jnp.einsum("bi,bj->ij", true_BxC, pred_BxC)
  else:
    y = batch["y"].reshape(out.shape)
    err = out - y
    sums.update(count=mask.sum() * out.shape[-1],
                sq_err=jnp.sum((err ** 2).sum(-1) * mask), abs_err=jnp.sum(jnp.abs(err).sum(-1) * mask),
                y=jnp.sum(y.sum(-1) * mask), y2=jnp.sum((y ** 2).sum(-1) * mask))
  return sums


class Experiment:
  """What a config builds: data, model, optimizer, mesh, and the jitted steps."""

  def __init__(self, config):
    self.config = config = config_lib.resolve(config)
    self.mesh = sharding.make_mesh()
    self.dataset = data.load(config.data)
    self.task = losses.TASKS[config.loss]
    self.num_classes = self.dataset.num_classes if self.task == "classification" else None
    if self.task == "classification" and not self.num_classes:
      raise ValueError(f"loss={config.loss!r} needs a labelled dataset; {config.data.name!r} has no classes.")
    is_corpus = self.dataset.bytes_per_token is not None
    if (self.task == "language_model") != is_corpus:
      raise ValueError(f"loss={config.loss!r} and data.name={config.data.name!r} do not go together: "
                       "language-model corpora need loss='lm_xent', and lm_xent needs a corpus "
                       "(shakespeare, text_files, fine_foods_text, tiny_shakespeare, lm1b).")
    model_config = dict(config.model)
    model_config.setdefault("num_outputs", self.dataset.num_classes if is_corpus else
                            losses.num_outputs(config.loss, self.num_classes))
    if self.dataset.tokenizer is not None and model_config.get("vocab_size") == 0:
      # +1 for the masked-LM mask id. A classifier on a pretrained BERT sets model.vocab_size to the BERT's.
      model_config["vocab_size"] = self.dataset.tokenizer.vocab_size + (self.dataset.mask is not None)
    self.model = models.build(model_config)
    self.tx, self.schedule = optim.optimizer(config.optimizer, config.total_steps)
    n = self.mesh.devices.size
    for key in ("batch_size", "eval_batch_size"):
      if config.data[key] % n:
        raise ValueError(f"data.{key}={config.data[key]} must be a multiple of the {n} devices.")

    repl, batch_sh = sharding.replicated(self.mesh), sharding.batch_sharded(self.mesh)
    self.state = jax.jit(self._init_state, out_shardings=repl)()
    state_sh = jax.tree.map(lambda _: repl, self.state)
    loss_fn = losses.LOSSES[config.loss]
    self.train_step = jax.jit(
        functools.partial(train_step, loss_fn=loss_fn, task=self.task),
        in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl), donate_argnums=0)
    self.eval_step = jax.jit(
        functools.partial(eval_step, loss_fn=loss_fn, task=self.task, num_classes=self.num_classes),
        in_shardings=(state_sh, batch_sh), out_shardings=repl)

  def _init_state(self):
    params_rng, dropout_rng, state_rng = jax.random.split(jax.random.key(self.config.seed), 3)
    x = jnp.zeros((1, *self.dataset.example_shape), self.dataset.input_dtype)
    variables = self.model.init({"params": params_rng, "dropout": dropout_rng}, x, train=False)
    params = variables.pop("params")
    return TrainState.create(apply_fn=self.model.apply, params=params, tx=self.tx,
                             rng=jax.random.key_data(state_rng), model_state=variables)

  def evaluate(self, state):
    split = self.dataset.splits[self.config.data.eval_split]
    total = None
    for batch in pipeline.eval_batches(split, self.config.data.eval_batch_size, self.dataset.norm,
                                       self.dataset.mask):
      sums = self.eval_step(state, sharding.put_batch(batch, self.mesh))
      total = sums if total is None else jax.tree.map(jnp.add, total, sums)
      if sharding.must_block_each_step(self.mesh):
        jax.block_until_ready(total)
    total = jax.device_get(total)
    if self.task == "language_model":
      return metrics.language_model(total, self.dataset.bytes_per_token[self.config.data.eval_split])
    if self.num_classes:
      return metrics.classification(total["confusion"], total["loss"])
    return metrics.regression(total)


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps."""

  def __init__(self):
    self.requested = False

  def __enter__(self):
    self.previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    self.requested = True

  def __exit__(self, *exc):
    signal.signal(signal.SIGTERM, self.previous)


def _read(pending, first_step):
  """Fetches the metrics of the steps since the last read; stops on a non-finite loss."""
  fetched = jax.device_get(pending)
  losses_ = np.array([m["loss"] for m in fetched])
  bad = np.flatnonzero(~np.isfinite(losses_))
  if bad.size:
    raise FloatingPointError(
        f"Loss became {losses_[bad[0]]} at step {first_step + bad[0] + 1}. Training stopped; "
        "the checkpoints in the workdir are from before it. Try a lower learning rate, "
        "gradient clipping (optimizer.grad_clip_norm) or float32.")
  return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns eval metrics."""
  ex = Experiment(config)
  c = ex.config
  os.makedirs(workdir, exist_ok=True)
  main_host = jax.process_index() == 0
  say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if main_host else (lambda msg: None)
  if main_host:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(c.to_json(indent=2))
    if ex.dataset.tokenizer is not None:  # generation and fine-tuning read text the same way
      ex.dataset.tokenizer.save(workdir)

  mngr = checkpoint.manager(workdir, c.keep_checkpoints)
  train_iter = pipeline.train_iterator(ex.dataset.splits[c.data.train_split], c.data, c.seed, ex.dataset.norm,
                                       ex.dataset.mask)
  state = ex.state
  if mngr.latest_step() is not None:
    state, data_state = checkpoint.restore(mngr, mngr.latest_step(), checkpoint.abstract(state))
    train_iter.set_state(data_state)
    say(f"Resumed from step {int(state.step)} in {workdir}")
  elif c.init.checkpoint:  # a new run starting from another run's parameters
    params, model_state, message = checkpoint.load_pretrained(
        c.init, state.params, state.model_state, sharding.replicated(ex.mesh))
    state = state.replace(params=params, model_state=model_state)
    say(message)
  n_params = sum(p.size for p in jax.tree.leaves(state.params))
  say(f"{c.model.name}: {n_params:,} parameters, {ex.mesh.devices.size} device(s), "
      f"{c.total_steps} steps, data {c.data.name}")

  writer = MetricWriter(workdir, enabled=main_host)
  block = sharding.must_block_each_step(ex.mesh)
  step = int(state.step)
  bar = tqdm(total=c.total_steps, initial=step, disable=not main_host, dynamic_ncols=True)
  pending, t_read, data_wait, eval_metrics = [], time.perf_counter(), 0.0, None
  try:
    with _Preemption() as preemption:
      while step < c.total_steps:
        t_wait = time.perf_counter()
        batch = next(train_iter)
        data_wait += time.perf_counter() - t_wait
        state, step_metrics = ex.train_step(state, sharding.put_batch(batch, ex.mesh))
        step += 1
        pending.append(step_metrics)
        if block:
          step_metrics["loss"].block_until_ready()
        done = step == c.total_steps
        stop = preemption.requested
        save = done or stop or step % c.checkpoint_every == 0
        evaluate = done or step % c.eval_every == 0
        if save or evaluate or step % c.log_every == 0:
          train_metrics = _read(pending, step - len(pending))  # raises before a bad state is saved
          now = time.perf_counter()
          train_metrics.update(steps_per_sec=len(pending) / (now - t_read),
                               examples_per_sec=len(pending) * c.data.batch_size / (now - t_read),
                               **({"tokens_per_sec": len(pending) * c.data.batch_size * c.data.seq_len /
                                   (now - t_read)} if ex.task == "language_model" else {}),
                               data_wait_fraction=data_wait / (now - t_read),  # time inside next()
                               learning_rate=float(ex.schedule(step - 1)))
          writer.write(step, "train", train_metrics)
          bar.set_postfix(loss=f"{train_metrics['loss']:.4f}", steps_per_s=f"{train_metrics['steps_per_sec']:.0f}")
          bar.update(step - bar.n)
          if evaluate:
            eval_metrics = ex.evaluate(state)
            writer.write(step, "eval", eval_metrics)
            say(f"step {step} eval: " + ", ".join(
                f"{k}={v:.4f}" for k, v in eval_metrics.items() if isinstance(v, float)))
          if save:
            checkpoint.save(mngr, step, state, train_iter.get_state())
          pending, t_read, data_wait = [], time.perf_counter(), 0.0
        if stop:
          say(f"SIGTERM: saved a checkpoint at step {step}; rerun the same command to resume.")
          break
  finally:  # a checkpoint still being written is a good one: let it finish
    bar.close()
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  if eval_metrics is None and step == c.total_steps:  # the workdir was already finished
    eval_metrics = ex.evaluate(state)
  return eval_metrics


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  final = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  if final is not None:
    print(json.dumps({k: v for k, v in final.items() if k != "confusion_matrix"}))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the resolved config.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
