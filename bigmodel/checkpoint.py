"""Checkpoints: a thin layer over orbax's CheckpointManager.

A checkpoint holds two items: `state` (the TrainState pytree) and `data` (the
input iterator's position, as JSON). Orbax writes each step into a temporary
directory and renames it when complete, so a killed run never leaves a partial
checkpoint behind, and keeps the newest `keep` steps.

`load_pretrained` starts a new run from another run's parameters (fine-tuning):
arrays are matched by path, so a new head or extra layers start fresh. `read_weights` gives the parameters
as they are stored (a LoRA run's with its factors: workdir.read_weights merges them in). This module
knows orbax, not a run's layout: the callers pass the folders (workdir.py names them). Hugging Face
checkpoints (`init.hf`) are read by bigmodel/huggingface/. Both, and resuming, take checkpoints of
either layer layout (`model.scan_layers`, models/stack.py) into either.
"""
import asyncio
import contextlib
import errno
import re
import sys
import time

import jax
import orbax.checkpoint as ocp
from etils import epath

from bigmodel import errors, paths
from bigmodel.models import stack


def manager(directory, keep):
  """Orbax's manager of the checkpoints in `directory` (a run's: workdir.checkpoints), keeping the newest `keep`."""
  return ocp.CheckpointManager(
      epath.Path(directory).absolute(),
      options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True),
      item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})


def save(mngr, step, state, data_state):
  """Starts writing `step` (orbax finishes it in the background); a failed earlier write surfaces here."""
  with _disk_errors(mngr, step):
    mngr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)


def wait(mngr):
  """Waits for the write in progress; a failure (a full disk) is told as a user error."""
  with _disk_errors(mngr, None):
    mngr.wait_until_finished()


@contextlib.contextmanager
def _disk_errors(mngr, step):
  """A checkpoint that cannot be written for lack of space (or permission) stops the run with what to do;
  the steps already written are untouched (orbax writes each into a temporary directory first)."""
  try:
    yield
  except Exception as e:
    causes = list(errors.chain(e))
    failed = next((c for c in causes if isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT, errno.EACCES,
                                                                                errno.EROFS)), None)
    if failed is None and not any("No space left" in str(c) for c in causes):
      raise
    what = failed.strerror if failed is not None else "No space left on device"
    directory = epath.Path(mngr.directory)
    complete = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / COMMIT_MARKER).exists()]
    previous = max(complete, default=None)
    raise errors.UserError(
        f"Could not write the checkpoint{f' of step {step}' if step is not None else ''} in {mngr.directory}: "
        f"{what}. The newest complete checkpoint (step {previous}) is intact: free space (or fix the "
        "permissions), then rerun the same command to resume from it.") from e


INIT_DEFAULTS = dict(
    checkpoint="",  # start from this run's parameters: a workdir (newest step) or <workdir>/checkpoints/<step>
    hf="",  # or from a Hugging Face checkpoint: a hub id ("gpt2"), a local save_pretrained directory or a
            # llama.cpp .gguf file; its config.json (a GGUF's metadata) gives the model (bigmodel/huggingface/),
            # the keys under `model` override it
    reinit=("^head/",),  # regexes on parameter paths that start afresh instead (the classifier head)
)


def _shapes(tree):
  """{'params/conv0/kernel': (5, 1, 25), ...} for every array leaf."""
  names, leaves, _ = paths.flatten(tree)
  return {name: tuple(leaf.shape) for name, leaf in zip(names, leaves) if hasattr(leaf, "shape")}


def check_compatible(mngr, step, abstract_state):
  """Raises ValueError naming every parameter whose path or shape differs (`abstract_state`: a tree, or
  {path: array})."""
  stored = _shapes(mngr.item_metadata(step)["state"])
  wanted = _shapes(abstract_state)
  problems = [f"  {p}: checkpoint has {stored.get(p, 'nothing')}, model wants {wanted.get(p, 'nothing')}"
              for p in sorted(set(stored) | set(wanted), key=lambda p: (not p.startswith("params/"), p))
              if stored.get(p) != wanted.get(p)]
  if problems:
    raise errors.UserError(
        f"The checkpoint at step {step} in {mngr.directory} was made by a different model or "
        f"optimizer. Mismatched arrays:\n" + "\n".join(problems[:20]) +
        (f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else "") +
        "\nUse a new --workdir, or the config that made this checkpoint.")


def restore(mngr, step, like, with_data=True):
  """Returns (state, data_state) saved at `step`, with the shapes, dtypes and shardings of `like`
  (a state, or its jax.ShapeDtypeStructs): restored straight into the current shardings.

  A checkpoint whose blocks are in the other layout (scanned or not: models/stack.py) is read in its
  own layout, each array onto the sharding its part of `like` has, then rearranged into `like`'s."""
  abstract_state = jax.tree.map(ocp.tree.to_shape_dtype_struct, like)
  stored = mngr.item_metadata(step)["state"]
  names, leaves, treedef = paths.flatten(abstract_state)
  read_as = stack.relayout(dict(zip(names, leaves)), paths.flatten(stored)[0])
  check_compatible(mngr, step, read_as)
  same_layout = set(read_as) == set(names)
  target = abstract_state if same_layout else jax.tree_util.tree_map_with_path(
      lambda keypath, _: read_as[paths.keystr(keypath)], stored)
  items = dict(state=ocp.args.StandardRestore(target))
  if with_data:
    items["data"] = ocp.args.JsonRestore()
  restored = mngr.restore(step, args=ocp.args.Composite(**items))
  state = restored["state"]
  if not same_layout:
    got = stack.relayout(dict(zip(*paths.flatten(state)[:2])), names)
    state = jax.device_put(jax.tree.unflatten(treedef, [got[n] for n in names]),
                           jax.tree.map(lambda x: x.sharding, abstract_state))
  return state, restored.get("data") if with_data else None


def _warn(message):
  print(message, file=sys.stderr)


class _DrainingLoop(asyncio.SelectorEventLoop):
  """An event loop that, when closed, first lets the tasks still on it end and takes their outcomes.

  orbax runs each restore on a fresh loop and closes it as soon as one read fails, while the step's other
  reads are still in flight: tensorstore then calls back into the closed loop ("Event loop is closed") and
  the garbage collector tears the abandoned reads down ("Exception ignored in: <coroutine ...>"), each
  with a traceback that reads like a crash. Waited for, each read just fails or succeeds on its own."""

  def close(self):
    while not self.is_running() and not self.is_closed():
      pending = [task for task in asyncio.all_tasks(self) if not task.done()]
      if not pending:
        break
      self.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    super().close()


class _DrainingPolicy(asyncio.DefaultEventLoopPolicy):
  def new_event_loop(self):
    return _DrainingLoop()


@contextlib.contextmanager
def _reads_end_before_their_loop_closes():
  """orbax's loops made inside are _DrainingLoops (it makes them with asyncio.new_event_loop)."""
  previous = asyncio.get_event_loop_policy()
  asyncio.set_event_loop_policy(_DrainingPolicy())
  try:
    yield
  finally:
    asyncio.set_event_loop_policy(previous)


def newest_readable(mngr, read, say=_warn):
  """`read(step)` of the newest checkpoint it succeeds on, that step, and the damaged steps above it.

  A checkpoint that cannot be read (a truncated or overwritten file, a missing item, no commit
  marker) is reported with its step and path, and the one before it is tried. A mismatch with the
  model (a UserError from `read`) is not damage: it stops at once."""
  damaged = []
  for step in sorted(mngr.all_steps(), reverse=True):
    path = epath.Path(mngr.directory) / str(step)
    try:
      if not (path / COMMIT_MARKER).exists():
        raise errors.NotFound(f"{COMMIT_MARKER} is missing: the save did not finish")
      with _reads_end_before_their_loop_closes():  # a failed read leaves only our message below
        return read(step), step, [s for s, _, _ in damaged]
    except errors.UserError as e:
      if not isinstance(e, errors.NotFound):
        raise
      damaged.append((step, path, e))
    except Exception as e:  # orbax and tensorstore raise many kinds on a damaged file
      damaged.append((step, path, e))
    say(f"Checkpoint step {step} ({path}) cannot be read: {_first_line(damaged[-1][2])}. "
        + ("Trying the one before it." if step != min(mngr.all_steps()) else ""))
  if damaged:
    raise errors.UserError(
        f"No readable checkpoint in {mngr.directory}: steps {', '.join(str(s) for s, _, _ in damaged)} are all "
        f"damaged. To start over, move that directory away (or train in a new --workdir).")
  return None, None, []


def set_aside(mngr, steps, aside):
  """Moves damaged checkpoint steps out of orbax's directory into `aside` (a run's damaged_checkpoints/:
  kept for inspection, never deleted), so that training can save those steps again."""
  aside = epath.Path(aside)
  aside.mkdir(parents=True, exist_ok=True)
  for step in steps:
    (epath.Path(mngr.directory) / str(step)).rename(aside / f"{step}.{int(time.time())}")
  mngr.reload()
  return aside


COMMIT_MARKER = "commit_success.txt"  # orbax writes it last, when every item of a step is on disk


def _first_line(e):
  """The gist of an orbax / tensorstore error (whose text goes on to dump a whole tensorstore spec)."""
  text = str(e).split("See full TensorStore details")[0].strip().splitlines()
  text = text[0][:300].rstrip(".") if text else ""
  return text if type(e) is Exception or isinstance(e, errors.UserError) else f"{type(e).__name__}: {text}"


def _open_pretrained(path, step):
  """(read-only manager, step) of the checkpoints folder `path`: `step`, or its newest if None."""
  path = epath.Path(path)
  if not path.exists():
    raise errors.NotFound(f"{path} does not exist. Give a training workdir or <workdir>/checkpoints/<step>.")
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
  mngr = ocp.CheckpointManager(path, options=options, item_handlers={
      "state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()})
  step = mngr.latest_step() if step is None else step
  if step is None or step not in mngr.all_steps():
    raise errors.NotFound(f"No checkpoint in {path}: train first, or give a workdir that holds one.")
  return mngr, step


def read_weights(path, step, sharding, say=_warn):
  """(params, model_state, step) of checkpoint `step` in the checkpoints folder `path`, as plain dicts;
  with step None, its newest readable one (a damaged one is reported and skipped). A run's checkpoint is
  read by workdir.read_weights, which finds the folder and step that a path names."""
  chosen = step is not None
  mngr, step = _open_pretrained(path, step)

  def read(step):
    meta = mngr.item_metadata(step)["state"]
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), meta)
    return mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]

  if not chosen:  # the newest: fall back past damage
    state, step, _ = newest_readable(mngr, read, say)
  else:
    state = read(step)
  mngr.close()
  return state["params"], state.get("model_state", {}), step


def load_pretrained(c, params, model_state, sharding, read):
  """Returns (params, model_state, message): arrays taken from checkpoint `c.checkpoint` by path, as
  `read(c.checkpoint, sharding)` gives them (workdir.read_weights, which merges a LoRA run's factors in).

  Arrays matching a `c.reinit` regex, or absent from the checkpoint, keep their fresh
  initialisation; any other shape mismatch is an error naming the parameter.
  """
  stored_params, stored_state, step = read(c.checkpoint, sharding)
  stored = {name: x for tree in (stored_params, stored_state) for name, x in zip(*paths.flatten(tree)[:2])}
  # Its blocks scanned or not, as this model has them (models/stack.py).
  stored = stack.relayout(stored, [*paths.flatten(params)[0], *paths.flatten(model_state)[0]])
  fresh, problems, used = [], [], set()

  def merge(keypath, leaf):
    path = paths.keystr(keypath)
    if any(re.search(r, path) for r in c.reinit) or path not in stored:
      fresh.append(path)
      return leaf
    if stored[path].shape != leaf.shape:
      problems.append(f"  {path}: checkpoint has {tuple(stored[path].shape)}, this model {tuple(leaf.shape)}")
      return leaf
    used.add(path)
    return stored[path].astype(leaf.dtype)

  params = jax.tree_util.tree_map_with_path(merge, params)
  model_state = jax.tree_util.tree_map_with_path(merge, model_state)
  if problems:
    raise errors.UserError(f"init.checkpoint {c.checkpoint} (step {step}) does not fit this model:\n" +
                           "\n".join(problems) + "\nStart those parameters afresh by adding a regex that matches "
                           "them to init.reinit, or change the model config to match the checkpoint.")
  if not used:
    raise errors.UserError(f"init.checkpoint {c.checkpoint} (step {step}) shares no parameter path with this "
                           f"model: it was made by a different architecture. Checkpoint arrays: "
                           f"{', '.join(sorted(stored)[:8])}, ...")
  message = (f"Initialised {len(used)} arrays from {c.checkpoint} (step {step}); fresh: "
             f"{paths.listed(fresh)}; unused from the checkpoint: {len(set(stored) - used)}")
  return params, model_state, message
