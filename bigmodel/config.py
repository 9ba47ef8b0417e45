"""Fills a config's missing keys with defaults and rejects keys nothing reads.

An experiment config names only what differs from these defaults and returns
`resolve(c)`: the resolved config holds every key (so any of them can be
overridden with --config.<key>=...), and it is what the trainer uses and writes
into the workdir.

The keys live beside the code that reads them, each table with a comment on its keys: the top
level here (DEFAULTS), `data` in data/__init__.py, `optimizer` in optim.py with its `lora` block in
lora.py, `init` in checkpoint.py (INIT_DEFAULTS), `pruning` in pruning.py, `sharding` in
sharding.py, and `model` in the fields of the chosen model's module (models/). Their ranges are
each table's RANGES. `describe` (python -m bigmodel.train --print_config) prints them all for one
config, reading the meanings from those comments.
"""
import ast
import functools
import inspect
import io
import os
import sys
import textwrap
import tokenize

import ml_collections

from bigmodel import checkpoint, data, errors, experiment, lora, models, optim, pruning, registry, sharding, tasks

DEFAULTS = dict(
    seed=0,  # parameters, dropout and data order all derive from it
    total_steps=1000,  # optimizer updates in the run (schedules and pruning count in them)
    task="",  # classification | regression | language_model | masked_lm (tasks.py); "" = the one `loss` implies
    loss="",  # softmax_xent | sigmoid_bce | mse | lm_xent; "" = the task's default (classification: softmax_xent)
    log_every=100,  # steps between reading train metrics (each read syncs the host)
    eval_every=1000,  # steps between evaluations on data.eval_split (and at the end)
    checkpoint_every=1000,  # steps between checkpoints (and at the end, and on SIGTERM)
    keep_checkpoints=3,  # the newest this many checkpoints are kept, older ones deleted
    micro_batches=1,  # gradient accumulation: each batch runs as this many sequential parts, one update
    steps_per_call=1,  # > 1: up to this many steps run in one jitted call (a lax.fori_loop), one dispatch
    compilation_cache="auto",  # persistent XLA cache: auto = <workdir>/../.jax_cache; "" = off; or a directory
    divergence_factor=1000.0,  # stop when a logged loss exceeds this multiple of the first one this run logged; 0 = off
    max_loss=0.0,  # stop when a logged loss exceeds this; 0 = off (NaN and inf always stop a run)
    distributed=False,  # multi-host (TPU pod, multi-node GPU): jax.distributed.initialize() at start
    heartbeat_timeout=30,  # multi-host: seconds a process may be silent before the others stop (distributed.py)
)
at_least = registry.at_least
RANGES = dict(seed=at_least(0), total_steps=at_least(1), log_every=at_least(1), eval_every=at_least(1),
              checkpoint_every=at_least(1), keep_checkpoints=at_least(1), micro_batches=at_least(1),
              steps_per_call=at_least(1), divergence_factor=at_least(0), max_loss=at_least(0),
              heartbeat_timeout=at_least(1))
SECTION_RANGES = {"": RANGES, "data": data.RANGES, "optimizer": optim.RANGES, "optimizer.lora": lora.RANGES,
                  "pruning": pruning.RANGES, "sharding": sharding.RANGES, "model": models.RANGES}
SECTIONS = {"data": data.DEFAULTS, "optimizer": optim.DEFAULTS, "init": checkpoint.INIT_DEFAULTS,
            "pruning": pruning.DEFAULTS, "sharding": sharding.DEFAULTS}


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  given = config.to_dict()
  registry.check_keys(given, [*DEFAULTS, *SECTIONS, "model"], "")
  out = {**DEFAULTS, **{k: v for k, v in given.items() if k in DEFAULTS}}
  for section, defaults in SECTIONS.items():
    out[section] = _merged(defaults, given.get(section, {}), section)
  tasks.resolve(out["task"], out["loss"], out["data"]["mlm_mask_rate"])  # fails early; experiment.py fills them in
  if out["init"]["hf"] and out["init"]["checkpoint"]:
    raise errors.UserError("init.hf and init.checkpoint are both set: start from one of them.")
  model = given.get("model", {})
  if "name" in model:
    registry.check_keys(model, ["name", *models.fields(model["name"])], "model")
  if out["init"]["hf"]:  # the checkpoint's config.json gives the model; experiment.fill merges it in
    out["model"] = model
  elif "name" not in model:
    raise errors.UserError(f"The config needs model.name (or init.hf). Known: {', '.join(sorted(models.MODELS))}.")
  else:
    out["model"] = {**models.defaults(model["name"]), **model}
  for section, ranges in SECTION_RANGES.items():  # before any data or compile work
    values = functools.reduce(lambda block, key: block[key], section.split("."), out) if section else out
    registry.check_ranges(values, ranges, section)
  return ml_collections.ConfigDict(out)


def _merged(defaults, given, where):
  """`defaults` with the `given` keys on top; a nested block (optimizer.lora) is merged key by key too."""
  registry.check_keys(given, defaults, where)
  return {key: _merged(default, given.get(key, {}), f"{where}.{key}") if isinstance(default, dict)
          else given.get(key, default) for key, default in defaults.items()}


def describe(config: ml_collections.ConfigDict) -> str:
  """Every key of `config` as a run resolves it, one line each: `key = value  # meaning; default (where the
  value differs); range`. The resolution is `resolve`, then experiment.settle (the task and loss; with init.hf,
  a local checkpoint's model). No dataset is built: the model keys a dataset decides are shown as such."""
  c = resolve(config)
  local = os.path.isdir(c.init.hf) or (c.init.hf.endswith(".gguf") and os.path.isfile(c.init.hf))
  c = experiment.settle(c, read_hf=local)  # a hub id is not downloaded for a printout
  values = c.to_dict()
  model = values["model"]
  defaults = {**DEFAULTS, **SECTIONS, "model": {}}
  notes, from_data = [], []
  if "name" in model:
    defaults["model"] = models.defaults(model["name"])
    model_meanings = {**models.MEANINGS, **_field_comments(models.MODELS[model["name"]][0]),
                      "name": f"the model: {', '.join(sorted(models.MODELS))}"}
    from_data = [f for f in models.fields(model["name"]) if f not in model]  # experiment.fill sets them
  else:
    model_meanings = models.MEANINGS
    notes.append(f"# model: init.hf={c.init.hf!r} gives the model and its sizes from its config.json when the run "
                 "starts (not read here: only a local directory is); the model keys above override them.")
  rows = list(_rows(values, defaults, _comments(DEFAULTS), "", {"model": model_meanings}))
  rows += [(f"model.{f}", "<from the dataset>", model_meanings.get(f, "")) for f in from_data]
  width = max(len(key) for key, _, _ in rows)
  column = min(max(len(value) for _, value, _ in rows), 28)
  lines = ["# Every config key as this run resolves it: key = value  # meaning; default (where it differs); "
           "range. Override one with --config.<key>=<value>."]
  lines += [f"{key:<{width}} = {value:<{column}}{'  # ' + about if about else ''}".rstrip()
            for key, value, about in sorted(rows)]
  return "\n".join(lines + notes)


_NONE = object()


def _rows(values, defaults, meanings, section, explained):
  """(key, value, what it is) for every leaf of `values`, with its default from `defaults` and its meaning
  from `meanings` (a nested block's from its own table's comments, or `explained[block]`)."""
  ranges = SECTION_RANGES.get(section, {})
  for key, value in values.items():
    name = f"{section}.{key}" if section else key
    default = defaults.get(key, _NONE)
    if isinstance(value, dict):
      table = default if isinstance(default, dict) else {}
      yield from _rows(value, table, explained.get(name) or _comments(table), name, explained)
      continue
    about = [meanings.get(key, "")]
    if default is not _NONE and _plain(value) != _plain(default):
      about.append(f"default {default!r}")
    numbers = [x for x in (value if isinstance(value, (list, tuple)) else [value])
               if isinstance(x, (int, float)) and not isinstance(x, bool)]
    if key in ranges and numbers:  # as registry.check_ranges: a range is of numbers (models.RANGES' pool is CNNs')
      about.append(f"range {ranges[key]}")
    yield name, repr(_plain(value)), "; ".join(a for a in about if a)


def _plain(value):
  """Lists as tuples (a config read back from JSON holds lists where the defaults hold tuples)."""
  return tuple(map(_plain, value)) if isinstance(value, (list, tuple)) else value


def _comments(table):
  """{key: the comment on it} for a DEFAULTS-style `NAME = dict(key=value,  # comment ...)` table, read from
  the source of the bigmodel module that binds it."""
  for module in [m for name, m in sys.modules.items() if name.startswith("bigmodel")]:
    for name, value in vars(module).items():
      if value is table and name.isupper():
        source = inspect.getsource(module)
        for node in ast.parse(source).body:
          if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]
              and isinstance(node.value, ast.Call)):
            return _key_comments(source, [(k.arg, k.lineno, k.value.end_lineno, k.col_offset)
                                              for k in node.value.keywords])
  return {}


def _field_comments(cls):
  """{field: the comment on it} for a model's dataclass fields (`width: int = 100  # comment`), in its MRO."""
  out = {}
  for klass in reversed([k for k in cls.__mro__ if "__annotations__" in vars(k)]):
    try:
      source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # a class without a source file (a builtin, flax's Module)
      continue
    body = next(n for n in ast.parse(source).body if isinstance(n, ast.ClassDef)).body
    out.update(_key_comments(source, [(n.target.id, n.lineno, n.end_lineno, n.col_offset) for n in body
                                      if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)]))
  return out


def _key_comments(source, spans):
  """{key: comment} for `spans` [(key, first line, last line, column)] in `source`, in order: the comment that
  ends a key's lines, with the comment lines under it; the comment lines right above a key that has no comment
  of its own, at its column, are its instead (a note on the next key, not the rest of the last one's)."""
  comments = {}  # line -> (text, column, whether the line holds only the comment)
  for token in tokenize.generate_tokens(io.StringIO(source).readline):
    if token.type == tokenize.COMMENT:
      comments[token.start[0]] = (token.string.lstrip("#").strip(), token.start[1],
                                  not token.line[:token.start[1]].strip())
  alone = lambda n: n in comments and comments[n][2]
  own = {key: [n for n in range(first, last + 1) if n in comments and not comments[n][2]]
         for key, first, last, _ in spans}
  for (key, first, _, column), before in zip(spans, [None, *spans]):
    above = []
    while alone(first - 1 - len(above)):
      above.insert(0, first - 1 - len(above))
    if not own[key] and above and all(comments[n][1] <= column for n in above):
      own[key] = above  # a note on this key
      above = []
    if before and own[before[0]]:
      own[before[0]] += [n for n in above if n > before[2]]  # the rest of the last key's comment
  for key, first, last, _ in spans[-1:]:
    n = last + 1
    while own[key] and alone(n):
      own[key].append(n)
      n += 1
  return {key: _sentence(" ".join(comments[n][0] for n in lines)) for key, lines in own.items() if lines}


def _sentence(text):
  """`text` without a closing full stop ("..." stays), to be followed by "; default ..."."""
  return text[:-1] if text.endswith(".") and not text.endswith("..") else text
