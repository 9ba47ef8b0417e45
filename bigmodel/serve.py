"""Serves an exported model over HTTP: `python -m bigmodel.serve --model=model_dir --port=8000`, or a
published language model directly: `--model=SmolLM2-135M-Instruct.Q4_1.gguf` (or a Hugging Face checkpoint
dir), exported on the first start into a cache keyed by the file's hash (bigmodel/published.py).

The server is bigmodel/serving/ (its __init__ lists the endpoints and its modules); this module is
the command line: the flags (serving/options.py declares them), and the compilation before the
server answers.

Classify requests are batched (batching.Batcher: what arrived within --batch_wait_ms, padded to
the next of --batch_sizes). Language models decode with continuous batching (batching.Generator:
--slots KV-cache rows; a request joins at the next token and leaves when it is done). A
classifier's batch sizes are compiled before the server answers; a language model's cheapest
prefill and decode step, and the rest on a background thread (/healthz counts them; a request that
needs one first runs in a larger compiled one or waits for it), or all first with --compile_all.
What is compiled is kept in JAX's persistent cache (--compilation_cache), so a restart loads it.
A request waits at most --queue_timeout_s for a row and --token_timeout_s for each next token
(serving/app.py), and gives up its rows and queue places when its client goes.
"""
import os
import sys
import time

from absl import flags, logging

from bigmodel import artifact, errors, platform, published
from bigmodel.serving import options as options_lib
from bigmodel.serving.app import App
from bigmodel.serving.http import make_server


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  o = options_lib.from_flags()
  model_dir = o.model
  if published.is_published(o.model):  # a .gguf file or a Hugging Face checkpoint: its export, cached
    model_dir = published.cached_dir(o.model, o.max_context)
    if not os.path.exists(os.path.join(model_dir, artifact.SPEC)):
      print(f"Exporting {o.model} into {model_dir} (once)", file=sys.stderr, flush=True)
  platform.use_compilation_cache(o.compilation_cache, model_dir)  # before anything compiles
  if model_dir != o.model:
    published.model_dir(o.model, o.max_context, out=model_dir)
  model = artifact.load(model_dir, o.batch_sizes, o.lengths)
  app_ = App(model, o)
  try:
    httpd = make_server(app_.routes(), o.host, o.port, o.max_body_bytes, o.log_requests)
  except OSError as e:
    raise errors.UserError(f"cannot listen on {o.host}:{o.port} ({e.strerror}). Choose another --port "
                           "(0 = any free one).") from None
  start = time.perf_counter()
  app_.warmup(background=not o.compile_all)
  host, port = httpd.server_address[:2]
  if model.task == "generate":
    health = app_.health()
    buckets = (f"{o.slots} slots, prompt lengths {model.lengths}; {health['buckets_compiled']} of "
               f"{health['buckets']} buckets")
  else:
    buckets = f"batch sizes {model.batch_sizes}"
  print(f"Serving {o.model} as {app_.name!r} ({model.task}; {buckets}, compiled in "
        f"{time.perf_counter() - start:.1f} s) on http://{host}:{port}", file=sys.stderr, flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()


if __name__ == "__main__":
  options_lib.define_flags()
  flags.mark_flags_as_required(["model"])
  errors.run(main)
