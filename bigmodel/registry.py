"""Config keys declared once (default, meaning, range), name lookups for config-chosen components with
errors that list the choices, and the ranges numeric keys may take."""
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from bigmodel import errors


def lookup(table: Mapping, name: str, kind: str):
  """Returns table[name]; an unknown name raises ValueError listing the known ones."""
  if name not in table:
    raise errors.UserError(f"Unknown {kind} {name!r}. Known: {', '.join(sorted(table))}.")
  return table[name]


def check_keys(given: Iterable[str], valid: Iterable[str], where: str):
  """Raises ValueError naming each key in `given` that is not in `valid`."""
  valid = set(valid)
  unknown = sorted(set(given) - valid)
  if unknown:
    keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
    raise errors.UserError(
        f"Unknown config key(s): {keys}. Valid keys"
        f"{' under ' + repr(where) if where else ''}: {', '.join(sorted(valid))}.")


@dataclasses.dataclass(frozen=True)
class Range:
  """The values a numeric config key may take: low <= x (low < x if low_open) and x <= high (x < high if
  high_open), or one of `also` (e.g. -1 = "the rest"). A key joins validation by declaring one (`Key.range`);
  `config.resolve` checks every key that has one, and each element of a list."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  also: tuple = ()

  def admits(self, x):
    above = x > self.low if self.low_open else x >= self.low
    below = x < self.high if self.high_open else x <= self.high
    return (above and below) or x in self.also

  def __str__(self):
    if self.low == self.high:
      return " or ".join(f"{v:g}" for v in (self.low, *self.also))
    lo = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
    hi = f"< {self.high:g}" if self.high_open else f"<= {self.high:g}"
    bounds = " and ".join(b for b, inf in ((lo, self.low == -math.inf), (hi, self.high == math.inf)) if not inf)
    return bounds + "".join(f" (or {a})" for a in self.also)

  def outside(self):
    """A value this range refuses (for tests)."""
    return self.low - 1 if self.low > -math.inf else self.high + 1


def at_least(n, also=()):
  return Range(low=n, also=also)


def above(x):
  return Range(low=x, low_open=True)


FRACTION = Range(0, 1, high_open=True)  # [0, 1): rates, sparsities
UNIT = Range(0, 1)  # [0, 1]


@dataclasses.dataclass(frozen=True)
class Key:
  """One config key, declared once beside the code that reads it: its default, what it means, and (for a
  number, or a list of numbers) the values it may take. A config section is a {name: Key} table (a nested
  table is a block: optimizer.lora); a model's keys are its dataclass fields, made with `field`.
  `config.resolve` fills, validates and `--print_config` explains every key from these declarations alone."""
  default: Any
  meaning: str
  range: Range | None = None


def field(default=dataclasses.MISSING, meaning="", range=None):  # noqa: A002 (the Key's field name)
  """A model's dataclass field declared as config key `model.<name>` (no default: the trainer fills it)."""
  return dataclasses.field(default=default, metadata={"key": Key(default, meaning, range)})


def defaults(keys: Mapping) -> dict:
  """{name: default} of a {name: Key} table, a nested table as a nested dict."""
  return {name: defaults(k) if isinstance(k, Mapping) else k.default for name, k in keys.items()}


def model_keys(cls) -> dict:
  """{field: Key} of a model class's dataclass fields (flax's parent and name are not config keys). A plain
  field (a model of your own) is a key too, without a meaning or range."""
  return {f.name: f.metadata.get("key") or Key(f.default, "") for f in dataclasses.fields(cls)
          if f.name not in ("parent", "name")}


def check_regexes(patterns: Iterable[str], key: str):
  """Raises UserError naming `key` (e.g. "pruning.scope") for a pattern that is not a valid regex."""
  for pattern in patterns:
    try:
      re.compile(pattern)
    except re.error as e:
      raise errors.UserError(f"{key} pattern {pattern!r} is not a valid regex: {e}.") from None


def check_ranges(values: Mapping, keys: Mapping, where: str):
  """Raises UserError naming the first key of `values` outside the range its Key in `keys` declares."""
  for key, declared in keys.items():
    allowed = getattr(declared, "range", None)
    if allowed is None:
      continue
    value = values.get(key)
    elements = value if isinstance(value, (list, tuple)) else [value]
    for x in elements:
      if isinstance(x, (int, float)) and not isinstance(x, bool) and not allowed.admits(x):
        name = f"{where}.{key}" if where else key
        raise errors.UserError(f"{name}={value!r} is out of range: it must be {allowed}. Fix it in the config "
                               f"or with --config.{name}=...")
