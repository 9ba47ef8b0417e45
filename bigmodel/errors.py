"""User errors: what the person running bigmodel can fix (a config key, a path, a damaged file).

Raise `UserError` (a ValueError) or `NotFound` (a FileNotFoundError) with what is wrong and
what to do about it. Every command line (train, evaluate, generate, export, serve) runs through
`run`, which prints `error: <message>` and exits with status 2 for them, and for a bad flag or
`--config.` override; anything else is our bug and keeps its traceback, as does everything
with BIGMODEL_TRACEBACK=1. A run that SIGTERM stopped before its end (`Stopped`) exits with
RESUMABLE (75): not finished, rerun to resume.
"""
import ast
import os
import re
import sys
import traceback

from absl import app, flags


class UserError(ValueError):
  """A mistake in what the user gave: the message says what is wrong and how to fix it."""


class NotFound(UserError, FileNotFoundError):
  """A file or directory the user named is not there."""


RESUMABLE = 75  # EX_TEMPFAIL of sysexits.h, "try again later": a run stopped short of its end, checkpoint saved


class Stopped(Exception):
  """SIGTERM stopped training before its last step, after saving a checkpoint: rerunning the same command
  resumes it. The command exits with status RESUMABLE, so a scheduler can tell it from a finished run."""


class Diverged(UserError, FloatingPointError):
  """Training stopped on a non-finite or exploding loss; the checkpoints are from before it."""


def chain(e):
  """`e` and the exceptions it was raised from or during, outermost first (libraries wrap the one that
  says what happened, e.g. tensorstore's OSError inside orbax's, TensorFlow's missing module inside TFDS's)."""
  while e is not None:
    yield e
    e = e.__cause__ or e.__context__


def _show_tracebacks():
  return os.environ.get("BIGMODEL_TRACEBACK") == "1"


def _fail(message):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _parse_flags(argv):
  """absl's flag parsing, with a bad flag or --config override (a typo, a value of the wrong type, a
  config file that is missing or raises) told in one line instead of a traceback."""
  try:
    argv = flags.FLAGS(argv)
    if "config" in flags.FLAGS and flags.FLAGS["config"].value is not None:
      flags.FLAGS["config"].value.to_dict  # a config file that failed to load raises on first use: here
    return argv
  except Exception as e:  # ml_collections raises AttributeError, KeyError, TypeError, IOError...
    if _show_tracebacks():
      raise
    text = str(e.args[0] if e.args else e)
    if len(text) >= 2 and text[0] in "'\"" and text[-1] == text[0]:  # ml_collections wraps a KeyError's repr
      text = ast.literal_eval(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    message = lines[-1] if "Attempted" in str(e) else " ".join(lines)  # a missing file: its OS error
    where = _in_config_file(e, argv)
    if where:  # the config file's own code raised (`assert False`, a KeyError() with no message...)
      _fail(f"{where}: {type(e).__name__}{': ' + message if message else ''} (the config file raised it)")
    culprit = _culprit(argv, message)
    _fail(f"{culprit + ': ' if culprit else ''}{message} (python -m {_module()} --helpfull lists the flags)")


def _in_config_file(e, argv):
  """"<config file>, line N" where `e` (or an exception it came from) was raised by the --config file's
  own code, else None. The file's name comes from argv: ml_collections records it only once it loaded."""
  args = argv[1:]
  paths = [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
  paths += [b for a, b in zip(args, args[1:]) if a == "--config"]
  if not paths:
    return None
  name = paths[-1].split(":", 1)[0]  # "file.py:arg" passes an argument to get_config
  path = os.path.abspath(name)
  for error in chain(e):
    lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
             if os.path.abspath(frame.filename) == path]
    if isinstance(error, SyntaxError) and error.filename and os.path.abspath(error.filename) == path:
      lines = [error.lineno]  # the file does not parse: no frame of it ran
    if lines:
      return f"{name}, line {lines[-1]}"
  return None


def _culprit(argv, message):
  """The command-line argument an error message is about: the one holding the quoted name it gives."""
  quoted = re.findall(r"'([^']+)'", message)
  for arg in argv[1:]:
    name = arg.split("=", 1)[0]
    if arg.startswith("--") and any(q and q in arg for q in quoted) and name not in message:
      return name
  return None


def _module():
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec else os.path.basename(sys.argv[0])


def run(main):
  """absl's app.run(main), with user errors as one line and exit status 2."""
  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      if _show_tracebacks():
        raise
      _fail(e)
    except Stopped:  # its message is printed where it stopped, on every process
      sys.exit(RESUMABLE)
  app.run(guarded, flags_parser=_parse_flags)
