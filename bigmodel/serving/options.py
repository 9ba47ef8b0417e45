"""The server's options, each declared once with its default, meaning and range: `python -m bigmodel.serve`
makes a flag of each (`define_flags`) and reads them back into one checked `Options` (`from_flags`); the
app, the transport and the tests take that object."""
import dataclasses
import os

from absl import flags

from bigmodel import errors


def _option(default, meaning, low=None):
  return dataclasses.field(default=default, metadata=dict(meaning=meaning, low=low))


@dataclasses.dataclass(frozen=True)
class Options:
  model: str = _option(None, "A model dir written by `python -m bigmodel.export`, or a published language model: a "
                       ".gguf file or a Hugging Face checkpoint dir (exported on the first start into a cache, "
                       "bigmodel/published.py).")
  max_context: int = _option(2048, "A published model: the most positions it reads (its own context, cut to this: "
                             "the KV cache holds --slots rows of it).", 1)
  model_name: str = _option("", "The model's name in /v1/models and requests; default the dir's name.")
  host: str = _option("127.0.0.1", "Address to listen on; 0.0.0.0 to accept other machines.")
  port: int = _option(8000, "Port to listen on; 0 picks a free one (printed at start).", 0)
  batch_sizes: tuple = _option((1, 8, 32), "Batch sizes compiled; a batch is padded up to one (language models: "
                               "the rows a decode step runs, those below --slots and --slots).", 1)
  lengths: tuple = _option((), "Language models: prompt lengths, and lengths a decode step attends over, compiled "
                           "(the context is added); default 16, 32, ... below the context.", 1)
  compile_all: bool = _option(False, "Language models: compile every bucket before answering, not only the "
                              "cheapest (the rest then compile on a background thread).")
  compilation_cache: str = _option("auto", "JAX's persistent compilation cache: auto = .jax_cache next to the "
                                   "model dir (as training's, next to the workdir); \"\" = off; or a directory.")
  slots: int = _option(16, "Language models: sequences decoded together (KV-cache rows); more wait.", 1)
  max_queue: int = _option(256, "Requests (language models: sequences) that may wait; more get 503.", 1)
  max_body_bytes: int = _option(1_000_000, "Larger request bodies get 413.", 1)
  max_new_tokens: int = _option(256, "The most tokens one request may ask for (max_tokens).", 1)
  batch_wait_ms: float = _option(2.0, "Classifiers: how long the batcher waits for more requests after the "
                                 "first.", 0)
  queue_timeout_s: float = _option(120.0, "A request that waits this long for a row (none of its sequences "
                                   "decoding; classifiers: for its answer) gets 503.", 0)
  token_timeout_s: float = _option(60.0, "Language models: a request that gets no token for this long while one "
                                   "of its sequences decodes gets 503 (a stalled model); a reply that keeps "
                                   "coming is never cut.", 0)
  log_requests: bool = _option(False, "Log every request to stderr.")

  def __post_init__(self):
    for f in dataclasses.fields(self):
      low, value = f.metadata["low"], getattr(self, f.name)
      if low is not None and any(v < low for v in (value if f.type is tuple else [value])):
        raise errors.UserError(f"--{f.name} must be >= {low}, got {value}.")

  @property
  def name(self):
    """The model's name in requests and /v1/models."""
    return self.model_name or os.path.basename(os.path.abspath(self.model or "model"))


_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, float: flags.DEFINE_float, bool: flags.DEFINE_bool,
           tuple: flags.DEFINE_list}


def define_flags():
  """A flag per option, with its default and meaning."""
  for f in dataclasses.fields(Options):
    default = [str(v) for v in f.default] if f.type is tuple else f.default
    _DEFINE[f.type](f.name, default, f.metadata["meaning"])


def from_flags(values=flags.FLAGS):
  """The Options that the flags give, checked (errors.UserError names the flag)."""
  kwargs = {}
  for f in dataclasses.fields(Options):
    value = values[f.name].value
    if f.type is tuple:
      try:
        value = tuple(int(v) for v in value)
      except ValueError:
        raise errors.UserError(f"--{f.name} must be a list of integers, got {','.join(value)}.") from None
    kwargs[f.name] = value
  return Options(**kwargs)
