"""Name lookups for config-chosen components, with errors that list the choices."""
from collections.abc import Iterable, Mapping


def lookup(table: Mapping, name: str, kind: str):
  """Returns table[name]; an unknown name raises ValueError listing the known ones."""
  if name not in table:
    raise ValueError(f"Unknown {kind} {name!r}. Known: {', '.join(sorted(table))}.")
  return table[name]


def check_keys(given: Iterable[str], valid: Iterable[str], where: str):
  """Raises ValueError naming each key in `given` that is not in `valid`."""
  valid = set(valid)
  unknown = sorted(set(given) - valid)
  if unknown:
    keys = ", ".join(f"{where}.{k}" if where else k for k in unknown)
    raise ValueError(
        f"Unknown config key(s): {keys}. Valid keys"
        f"{' under ' + repr(where) if where else ''}: {', '.join(sorted(valid))}.")
