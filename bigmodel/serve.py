"""Serves an exported model over HTTP: `python -m bigmodel.serve --model=model_dir --port=8000`.

The endpoints, their requests and replies (OpenAI's completions API among them) are in
bigmodel/endpoints.py; the HTTP transport (keep-alive, bodies, server-sent events) in
bigmodel/http_server.py. This module is the command line: its flags, and the compilation before
the server answers.

Classify requests are batched (batching.Batcher: what arrived within --batch_wait_ms, padded to
the next of --batch_sizes). Language models decode with continuous batching (batching.Generator:
--slots KV-cache rows; a request joins at the next token and leaves when it is done). A
classifier's batch sizes are compiled before the server answers; a language model's cheapest
prefill and decode step, and the rest on a background thread (/healthz counts them; a request that
needs one first runs in a larger compiled one or waits for it), or all first with --compile_all.
What is compiled is kept in JAX's persistent cache (--compilation_cache), so a restart loads it.
A request waits at most --queue_timeout_s for a row and --token_timeout_s for each next token
(endpoints.py), and gives up its rows and queue places when its client goes.
"""
import os
import sys
import time

from absl import flags, logging

from bigmodel import artifact, errors, platform
from bigmodel.endpoints import App
from bigmodel.http_server import make_server


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  platform.use_compilation_cache(f.compilation_cache, f.model)  # before anything compiles
  model = artifact.load(f.model, [int(b) for b in f.batch_sizes], [int(n) for n in f.lengths])
  if f.slots < 1 or f.max_queue < 1:
    raise errors.UserError(f"--slots and --max_queue must be >= 1, got {f.slots} and {f.max_queue}.")
  app_ = App(model, f.model_name or os.path.basename(os.path.abspath(f.model)), f.max_body_bytes,
             f.max_new_tokens, f.batch_wait_ms, f.queue_timeout_s, f.token_timeout_s, f.slots, f.max_queue)
  try:
    httpd = make_server(app_, f.host, f.port, f.log_requests)
  except OSError as e:
    raise errors.UserError(f"cannot listen on {f.host}:{f.port} ({e.strerror}). Choose another --port "
                           "(0 = any free one).") from None
  start = time.perf_counter()
  app_.warmup(background=not f.compile_all)
  host, port = httpd.server_address[:2]
  if model.task == "generate":
    health = app_.health()
    buckets = (f"{f.slots} slots, prompt lengths {model.lengths}; {health['buckets_compiled']} of "
               f"{health['buckets']} buckets")
  else:
    buckets = f"batch sizes {model.batch_sizes}"
  print(f"Serving {f.model} as {app_.name!r} ({model.task}; {buckets}, compiled in "
        f"{time.perf_counter() - start:.1f} s) on http://{host}:{port}", file=sys.stderr, flush=True)
  try:
    httpd.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    httpd.server_close()


if __name__ == "__main__":
  flags.DEFINE_string("model", None, "A model dir written by `python -m bigmodel.export`.")
  flags.DEFINE_string("model_name", "", "The model's name in /v1/models and requests; default the dir's name.")
  flags.DEFINE_string("host", "127.0.0.1", "Address to listen on; 0.0.0.0 to accept other machines.")
  flags.DEFINE_integer("port", 8000, "Port to listen on; 0 picks a free one (printed at start).")
  flags.DEFINE_list("batch_sizes", ["1", "8", "32"], "Batch sizes compiled; a batch is padded up to one "
                    "(language models: the rows a decode step runs, those below --slots and --slots).")
  flags.DEFINE_list("lengths", [], "Language models: prompt lengths, and lengths a decode step attends over, "
                    "compiled (the context is added); default 16, 32, ... below the context.")
  flags.DEFINE_bool("compile_all", False, "Language models: compile every bucket before answering, not only "
                    "the cheapest (the rest then compile on a background thread).")
  flags.DEFINE_string("compilation_cache", "auto", "JAX's persistent compilation cache: auto = .jax_cache next to "
                      "the model dir (as training's, next to the workdir); \"\" = off; or a directory.")
  flags.DEFINE_integer("slots", 16, "Language models: sequences decoded together (KV-cache rows); more wait.")
  flags.DEFINE_integer("max_queue", 256, "Requests (language models: sequences) that may wait; more get 503.")
  flags.DEFINE_integer("max_body_bytes", 1_000_000, "Larger request bodies get 413.")
  flags.DEFINE_integer("max_new_tokens", 256, "The most tokens one request may ask for (max_tokens).")
  flags.DEFINE_float("batch_wait_ms", 2.0, "Classifiers: how long the batcher waits for more requests after the first.")
  flags.DEFINE_float("queue_timeout_s", 120.0, "A request that waits this long for a row (none of its sequences "
                     "decoding; classifiers: for its answer) gets 503.")
  flags.DEFINE_float("token_timeout_s", 60.0, "Language models: a request that gets no token for this long while "
                     "one of its sequences decodes gets 503 (a stalled model); a reply that keeps coming is "
                     "never cut.")
  flags.DEFINE_bool("log_requests", False, "Log every request to stderr.")
  flags.mark_flags_as_required(["model"])
  errors.run(main)
