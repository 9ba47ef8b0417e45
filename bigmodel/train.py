"""The one trainer: `python -m bigmodel.train --config=configs/mnist1d/cnn.py --workdir=runs/x`.

Everything the run needs is in the config. `--print_config` prints every key of
it as the run resolves it, with its default, range and meaning, and trains
nothing (each key is declared once beside the code that reads it: see
bigmodel/config.py). The workdir receives the resolved config,
checkpoints, TensorBoard events and metrics.jsonl; rerunning the same command
resumes from the newest checkpoint, data order included.
"""
import concurrent.futures
import functools
import inspect
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging
from flax import linen as nn
from flax.training import train_state
from ml_collections import config_flags
from tqdm import tqdm

import bigmodel
from bigmodel import (checkpoint, config as config_lib, data, distributed, errors, evaluate, experiment, models, optim,
                      platform, pruning, registry, sharding, starting_weights, workdir as workdir_lib)
from bigmodel.data import feed as feed_lib
from bigmodel.metric_writer import MetricWriter


class TrainState(train_state.TrainState):
  rng: jax.Array  # dropout and other randomness: folded with the step each update
  model_state: Any  # non-parameter collections, e.g. BatchNorm statistics


def train_step(state, batch, *, loss_fn, task, micro_batches=1):
  """One optimizer update on a global batch; pure, jitted once in `Trainer`.

  With micro_batches > 1 the batch is split and the gradients summed over the parts in a
  `lax.scan` (gradient accumulation): the update equals the whole batch's, at a micro-batch's
  activation memory (BatchNorm statistics are then per micro-batch)."""
  rng = jax.random.fold_in(state.rng, state.step)

  def sums(params, model_state, mb, rng):
    """The task's sums over the batch (the loss summed, not averaged, over what counts)."""
    variables = {"params": params, **model_state}
    if model_state:
      out, model_state = state.apply_fn(variables, mb["x"], train=True, rngs={"dropout": rng},
                                        mutable=list(model_state), **data.model_inputs(mb))
    else:
      out = state.apply_fn(variables, mb["x"], train=True, rngs={"dropout": rng}, **data.model_inputs(mb))
    stats = task.train_sums(out, mb["y"], loss_fn)
    return stats["loss"], (stats, model_state)

  grad_fn = jax.grad(sums, has_aux=True)
  if micro_batches == 1:
    grads, (stats, model_state) = grad_fn(state.params, state.model_state, batch, rng)
  else:
    parts = jax.tree.map(lambda x: x.reshape(micro_batches, x.shape[0] // micro_batches, *x.shape[1:]), batch)

    def accumulate(carry, part_i):
      grads, stats, model_state = carry
      part, i = part_i
      g, (s, model_state) = grad_fn(state.params, model_state, part, jax.random.fold_in(rng, i))
      return (jax.tree.map(jnp.add, grads, g), jax.tree.map(jnp.add, stats, s), model_state), None

    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), tree)
    stats_shape = jax.eval_shape(lambda: grad_fn(state.params, state.model_state,
                                                 jax.tree.map(lambda x: x[0], parts), rng)[1][0])
    (grads, stats, model_state), _ = jax.lax.scan(
        accumulate, (zeros(state.params), zeros(stats_shape), state.model_state),
        (parts, jnp.arange(micro_batches)))
  weight = jnp.maximum(stats["weight"], 1)
  grads = jax.tree.map(lambda g: g / weight, grads)
  state = state.apply_gradients(grads=grads, model_state=model_state)
  step_metrics = {"loss": stats["loss"] / weight, "grad_norm": optax.global_norm(grads)}
  if "correct" in stats:
    step_metrics["accuracy"] = stats["correct"] / weight
  return state, step_metrics


def train_steps(state, columns, num_steps, device_data, *, step_fn, prepare):
  """`num_steps` updates in one dispatch (platform.repeat_steps); step i's batch is
  `prepare(device_data, column i)`: the feed's own (data/feed.py)."""
  one = jax.jit(lambda state, column: step_fn(state, prepare(device_data, column)))  # traced once
  return platform.repeat_steps(one, state, columns, num_steps)


def check(c, mesh):
  """The checks of a resolved config that need the mesh but no data: `train_and_evaluate` runs them before it
  reads any (a mistake is reported in a second, not after loading a corpus)."""
  optim.schedule(c.optimizer, c.total_steps)
  pruning.check(c.pruning, c.total_steps)
  sharding.check_processes_split_batch(mesh)
  n = sharding.batch_devices(mesh)
  for key in ("batch_size", "eval_batch_size"):
    if c.data[key] % n:
      raise errors.UserError(f"data.{key}={c.data[key]} must be a multiple of the {n} data-parallel devices "
                             "(sharding.data x sharding.fsdp).")
  if c.data.batch_size % (n * c.micro_batches):
    raise errors.UserError(f"data.batch_size={c.data.batch_size} must split into micro_batches="
                           f"{c.micro_batches} parts of a multiple of {n} devices each.")
  if c.data.pack and "name" in c.model:  # else init.hf names it: the Trainer checks the model it builds
    check_packing(c.model.name)


def check_packing(name):
  """data.pack=True: the model `name` must take a packed batch's segments (data.model_inputs)."""
  model_class = registry.lookup(models.MODELS, name, "model")[0]
  if "segments_BxL" not in inspect.signature(model_class.__call__).parameters:
    raise errors.UserError(f"data.pack=True needs a model that keeps packed conversations apart (the Llama family); "
                           f"model {name!r} does not: set data.pack=False.")


class Trainer:
  """Training one experiment on one mesh: optimizer, state and its shardings, feed, jitted steps."""

  def __init__(self, exp, mesh=None):
    self.exp = exp
    c = exp.config
    self.mesh = mesh or sharding.make_mesh(c.sharding)
    check(c, self.mesh)
    if c.data.pack:  # init.hf's architecture is named now (experiment.fill)
      check_packing(c.model.name)
    self.tx, schedule = optim.optimizer(c.optimizer, c.total_steps)
    self.schedule = jax.jit(schedule)  # one compilation, not one per jnp op (0.03-0.05 s each)
    if c.pruning.target_sparsity:  # the masks ride in the optimizer state, so checkpoints keep them
      self.tx = optax.chain(self.tx, pruning.magnitude_pruning(c.pruning))

    # Shardings from the parameters' logical axis names (see sharding.py), read off an abstract init.
    logical = nn.get_partition_spec(jax.eval_shape(self._init_variables))["params"]
    abstract = jax.eval_shape(self._init_state)
    params_sh = sharding.param_shardings(abstract.params, logical, self.mesh, c.sharding.rules)
    self.state_shardings = state_sh = sharding.mirror_params(abstract, params_sh, self.mesh)
    self.abstract_state = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                                       abstract, state_sh)
    repl, batch_sh = sharding.replicated(self.mesh), sharding.batch_sharded(self.mesh)
    # Before the init thread starts: a host feed imports grain, and one of grain's modules swaps
    # builtins.__import__ while it imports (etils' lazy_imports), which would hand the thread's own imports a
    # LazyModule ("'LazyModule' object is not callable" inside jax's lowering: once in a full run under load).
    self.feed = feed_lib.make(exp.dataset, c.data, c.seed, repl)
    init = jax.jit(self._init_state, out_shardings=state_sh, compiler_options=platform.init_compiler_options())
    # Initialising compiles and runs in a thread while the caller compiles the train step from the
    # abstract state: the two are independent, and neither keeps a CPU's cores busy on its own.
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="init")
    self._state = pool.submit(init)
    pool.shutdown(wait=False)
    step_fn = sharding.traced_on(functools.partial(train_step, loss_fn=exp.loss_fn, task=exp.task,
                                                   micro_batches=c.micro_batches), self.mesh)
    self.train_step = jax.jit(step_fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, repl),
                              donate_argnums=0)
    self.train_steps = jax.jit(
        functools.partial(train_steps, step_fn=step_fn, prepare=self.feed.prepare),
        in_shardings=(state_sh, batch_sh, repl, repl), out_shardings=(state_sh, repl), donate_argnums=0)
    self.eval_step = evaluate.jit_eval_step(exp, self.variables(state_sh), self.mesh)

  @property
  def state(self):
    """The initialised train state (waits for the initialising thread)."""
    return self._state.result()

  @staticmethod
  def variables(state):
    return {"params": state.params, **state.model_state}

  def evaluate(self, state):
    return evaluate.evaluate(self.exp, self.eval_step, self.variables(state), self.mesh)

  def _init_variables(self):
    """The model's variables, parameters still boxed with their logical axis names."""
    params_rng, dropout_rng, _ = jax.random.split(jax.random.key(self.exp.config.seed), 3)
    dataset = self.exp.dataset
    x = jnp.zeros((1, *dataset.example_shape), dataset.input_dtype)
    return self.exp.model.init({"params": params_rng, "dropout": dropout_rng}, x, train=False)

  def _init_state(self):
    variables = nn.unbox(self._init_variables())
    params = variables.pop("params")
    state_rng = jax.random.split(jax.random.key(self.exp.config.seed), 3)[2]
    return TrainState.create(apply_fn=self.exp.model.apply, params=params, tx=self.tx,
                             rng=jax.random.key_data(state_rng), model_state=variables)

  def preflight(self, compiled, compile_seconds):
    """What one device holds and one step costs, from the compiled train step (XLA's own analyses)."""
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    memory = compiled.memory_analysis()
    per_device = {
        "params": sharding.bytes_per_device(self.abstract_state.params, self.state_shardings.params),
        "optimizer_state": sharding.bytes_per_device(self.abstract_state.opt_state, self.state_shardings.opt_state),
        "temporaries": getattr(memory, "temp_size_in_bytes", None),
        "arguments": getattr(memory, "argument_size_in_bytes", None),
        "outputs": getattr(memory, "output_size_in_bytes", None),
        "generated_code": getattr(memory, "generated_code_size_in_bytes", None)}
    nbytes = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
    return {"parameters": sum(p.size for p in jax.tree.leaves(self.abstract_state.params)),
            "mesh": dict(self.mesh.shape), "flops_per_step_per_device": cost.get("flops"),
            "bytes_per_device": per_device,
            "bytes_total": {"params": nbytes(self.abstract_state.params),
                            "optimizer_state": nbytes(self.abstract_state.opt_state)},
            "compile_seconds": compile_seconds}


def _next_event(step, c):
  """The first step after `step` that logs, evaluates, checkpoints or ends the run."""
  return min(c.total_steps, *((step // every + 1) * every for every in (c.log_every, c.eval_every,
                                                                          c.checkpoint_every)))


def _read(pending, first_step, c, first_loss, saved):
  """Fetches the metrics of the calls since the last read; returns (their means, the run's first loss).
  Stops on a non-finite loss, or one above `_loss_limit` (the run's first loss sets it), naming the
  newest checkpoint (`saved`: its step), which is from before the bad step."""
  fetched = jax.device_get([m for m, _ in pending])
  per_step = {k: np.concatenate([m[k][:n] for m, (_, n) in zip(fetched, pending)]) for k in fetched[0]}
  loss = per_step["loss"]
  first_loss = float(loss[0]) if first_loss is None else first_loss
  limit = _loss_limit(c, first_loss)
  bad = np.flatnonzero(~np.isfinite(loss) | (loss > limit))
  if bad.size:
    why = "" if not np.isfinite(loss[bad[0]]) else (
        f", above the divergence limit {limit:.4g} (divergence_factor x the first loss {first_loss:.4g}, or max_loss)")
    raise errors.Diverged(
        f"Loss became {loss[bad[0]]:.4g} at step {first_step + bad[0] + 1}{why}. Training stopped; the "
        f"newest checkpoint ({'step ' + str(saved) if saved is not None else 'none yet'}) is from before it. "
        "Try a lower learning rate, gradient clipping (optimizer.grad_clip_norm) or float32; "
        "divergence_factor=0 and max_loss=0 turn the guard off.")
  return {k: float(np.mean(v)) for k, v in per_step.items()}, first_loss


def _loss_limit(c, first_loss):
  """The loss above which a run has diverged: `max_loss`, and `divergence_factor` times the first loss
  this process logged (a loss a thousand times its starting value is not coming back)."""
  by_factor = c.divergence_factor * first_loss if c.divergence_factor and first_loss > 0 else np.inf
  return min(c.max_loss or np.inf, by_factor)


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns eval metrics. Raises
  errors.Stopped when SIGTERM stopped it before the last step (a checkpoint of where it stopped is saved)."""
  config = config_lib.resolve(config)
  distributed.check_same_config(config, workdir)  # before any compiling: a mismatch would deadlock
  platform.use_compilation_cache(config.compilation_cache, workdir)
  mesh = sharding.make_mesh(config.sharding)
  check(config, mesh)  # before any data is read
  ex = experiment.build(config)
  trainer = Trainer(ex, mesh)
  os.makedirs(workdir, exist_ok=True)
  main_host = jax.process_index() == 0
  held = workdir_lib.lock(workdir) if main_host else None  # one run per workdir: see workdir.lock
  try:
    return _train(ex, trainer, workdir, main_host)
  finally:
    if held:
      held.close()


def restore_or_start(trainer, mngr, workdir, say, main_host):
  """The state a run goes on from: its newest readable checkpoint (the data order restored into the trainer's
  feed; a damaged step is reported and set aside), or for a new run the weights `init` names
  (starting_weights.py) over the trainer's fresh state, or None: a fresh run takes trainer.state once its
  train step is compiled (see Trainer)."""
  c = trainer.exp.config
  if mngr.latest_step() is not None:
    (state, data_state), _, damaged = checkpoint.newest_readable(
        mngr, lambda step: checkpoint.restore(mngr, step, trainer.abstract_state), say)
    if damaged and main_host:
      aside = checkpoint.set_aside(mngr, damaged, workdir_lib.path(workdir, workdir_lib.DAMAGED_CHECKPOINTS))
      say(f"Moved damaged step(s) {', '.join(map(str, damaged))} to {aside}")
    trainer.feed.set_state(data_state)
    say(f"Resumed from step {int(state.step)} in {workdir}")
    return state
  if not (c.init.checkpoint or c.init.hf):
    return None
  state = trainer.state  # each array read goes straight onto its parameter's sharding
  params, model_state, message = starting_weights.load(c.init, c.model, state.params, state.model_state,
                                                       sharding.replicated(trainer.mesh))
  say(message)
  return jax.device_put(state.replace(params=params, model_state=model_state), trainer.state_shardings)


def _train(ex, trainer, workdir, main_host):
  """The loop of `train_and_evaluate`: resume or initialise, train, evaluate, checkpoint."""
  c = ex.config
  say = (lambda msg: tqdm.write(msg, file=sys.stderr)) if main_host else (lambda msg: None)
  if main_host:
    workdir_lib.write_config(workdir, c)
    workdir_lib.write_data_spec(workdir, ex.dataset, c.data.train_split)  # export reads it, not the dataset
    if ex.dataset.tokenizer is not None:  # generation and fine-tuning read text the same way
      ex.dataset.tokenizer.save(workdir)

  mngr = workdir_lib.checkpoints(workdir, c.keep_checkpoints)
  feed = trainer.feed
  state = restore_or_start(trainer, mngr, workdir, say, main_host)
  n_params = sum(p.size for p in jax.tree.leaves(trainer.abstract_state.params))
  on_device = feed.device_data is not None
  say(f"{c.model.name}: {n_params:,} parameters, {trainer.mesh.devices.size} device(s), "
      f"{c.total_steps} steps, data {c.data.name}{' (on device)' if on_device else ''}")

  writer = MetricWriter(workdir, enabled=main_host)
  block = platform.must_block_each_step(trainer.mesh)
  tokens_per_example = ex.task.tokens_per_example(c.data)
  step = 0 if state is None else int(state.step)
  bar = tqdm(total=c.total_steps, initial=step, disable=not main_host, dynamic_ncols=True)
  pending, t_read, data_wait, eval_metrics = [], time.perf_counter(), 0.0, None
  first_loss = None  # the divergence guard's reference (_read)
  train_steps, calls, stopped = None, 0, None
  try:
    with distributed.Preemption() as preemption:
      while step < c.total_steps:
        # The first call runs one step (time to first step); later ones run to the next log, eval or checkpoint.
        n = 1 if train_steps is None else min(c.steps_per_call, _next_event(step, c) - step)
        t_wait = time.perf_counter()
        columns = sharding.put_batch(feed.next(n, c.steps_per_call), trainer.mesh)
        data_wait += time.perf_counter() - t_wait
        first = train_steps is None
        if first:  # compile once, ahead of time, and report what the step will cost
          train_steps = _compile_and_report(trainer, columns, workdir, say, main_host)
          state = trainer.state if state is None else state
          t_read, data_wait = time.perf_counter(), 0.0
        state, metrics_K = train_steps(state, columns, np.int32(n), feed.device_data)
        pending.append((metrics_K, n))
        if block or first:
          metrics_K["loss"].block_until_ready()
        if first:
          say(f"first step done {time.perf_counter() - bigmodel.STARTED:.1f} s after start")
        step += n
        calls += 1
        done = step == c.total_steps
        stop = preemption.stop_requested(calls)
        save = done or stop or step % c.checkpoint_every == 0
        run_eval = done or step % c.eval_every == 0
        if save or run_eval or step % c.log_every == 0:
          steps_read = sum(n for _, n in pending)
          train_metrics, first_loss = _read(  # raises before a bad state is saved
              pending, step - steps_read, c, first_loss, mngr.latest_step())
          now = time.perf_counter()
          train_metrics.update(steps_per_sec=steps_read / (now - t_read),
                               examples_per_sec=steps_read * c.data.batch_size / (now - t_read),
                               **({"tokens_per_sec": steps_read * c.data.batch_size * tokens_per_example /
                                   (now - t_read)} if tokens_per_example else {}),
                               data_wait_fraction=data_wait / (now - t_read),  # time preparing batches
                               learning_rate=float(trainer.schedule(step - 1)))
          writer.write(step, "train", train_metrics)
          bar.set_postfix(loss=f"{train_metrics['loss']:.4f}", steps_per_s=f"{train_metrics['steps_per_sec']:.0f}")
          bar.update(step - bar.n)
          if run_eval:
            eval_metrics = trainer.evaluate(state)
            writer.write(step, "eval", eval_metrics)
            say(f"step {step} eval: " + ", ".join(
                f"{k}={v:.4f}" for k, v in eval_metrics.items() if isinstance(v, float)))
          if save:
            checkpoint.save(mngr, step, state, feed.get_state())  # names a full disk, saved or not
          pending, t_read, data_wait = [], time.perf_counter(), 0.0
        if stop:  # every process says so: with several, they stopped at the same step (distributed.Preemption)
          who = f" (process {jax.process_index()} of {jax.process_count()})" if jax.process_count() > 1 else ""
          stopped = f"SIGTERM: saved a checkpoint at step {step}{who}; rerun the same command to resume."
          tqdm.write(stopped, file=sys.stderr)
          break
  finally:  # a checkpoint still being written is a good one: let it finish
    bar.close()
    checkpoint.wait(mngr)
    mngr.close()
    writer.close()
  if stopped and step < c.total_steps:  # not finished: the exit status says so (errors.RESUMABLE)
    raise errors.Stopped(stopped)
  if eval_metrics is None and step == c.total_steps:  # the workdir was already finished
    eval_metrics = trainer.evaluate(state)
  if c.pruning.target_sparsity and main_host:
    _report_sparsity(c.pruning, state.params, workdir, say)
  return eval_metrics


def _compile_and_report(trainer, columns, workdir, say, main_host):
  """The train steps compiled for these shapes and shardings; writes and prints the pre-flight report."""
  start = time.perf_counter()
  compiled = trainer.train_steps.lower(trainer.abstract_state, columns, np.int32(1),
                                       trainer.feed.device_data).compile()
  report = trainer.preflight(compiled, time.perf_counter() - start)
  if main_host:
    workdir_lib.write_json(workdir, workdir_lib.PREFLIGHT, report)
  mb = lambda n: f"{n / 2**20:,.1f} MB" if n is not None else "n/a"
  per_device, flops = report["bytes_per_device"], report["flops_per_step_per_device"]
  say(f"pre-flight: mesh {report['mesh']}, compiled in {report['compile_seconds']:.1f} s, "
      f"{flops / 1e9 if flops else float('nan'):,.3f} GFLOP per step per device; per device: params "
      f"{mb(per_device['params'])}, optimizer state {mb(per_device['optimizer_state'])}, temporaries "
      f"{mb(per_device['temporaries'])} ({workdir_lib.PREFLIGHT})")
  return compiled


def _report_sparsity(c, params, workdir, say):
  report = pruning.report(c, jax.device_get(params))
  workdir_lib.write_json(workdir, workdir_lib.SPARSITY, report)
  say(f"sparsity: {report['in_scope_sparsity']:.4f} of {report['in_scope_parameters']:,} in-scope weights "
      f"(target {c.target_sparsity}), {report['overall_sparsity']:.4f} of all {report['parameters']:,}; "
      f"per layer in {workdir_lib.SPARSITY}")
  for path, layer in report["layers"].items():
    say(f"  {path}: {layer['sparsity']:.4f} of {layer['size']:,}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  if flags.FLAGS.print_config:  # resolved as the run resolves it; builds no dataset or model, needs no workdir
    print(config_lib.describe(flags.FLAGS.config))
    return
  if distributed.wanted(flags.FLAGS.config):  # before jax starts its backend
    distributed.initialize(flags.FLAGS.config.get("heartbeat_timeout", config_lib.DEFAULTS["heartbeat_timeout"]))
  final = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  if final is not None:
    print(json.dumps({k: v for k, v in final.items() if k != "confusion_matrix"}))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/...).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and the resolved config.")
  flags.DEFINE_bool("print_config", False, "Print every key of the resolved config (value, default, range, "
                    "meaning) and exit without training.")
  flags.mark_flag_as_required("config")
  flags.register_multi_flags_validator(["workdir", "print_config"], lambda f: bool(f["workdir"] or f["print_config"]),
                                       "--workdir is required (except with --print_config).")
  errors.run(main)
