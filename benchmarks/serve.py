"""Generation serving, the previous server against this one: tokens/s, time to first token, p50/p99.

    python benchmarks/serve.py --root=runs/bench_serve      # prints a markdown table

Two language models: the char GPT (configs/shakespeare/gpt_char.py, trained --gpt_steps; accuracy
does not matter) and a GPT-2-small-shaped one (12 layers x 768, context 1,024, a 50,257-token
byte-level BPE learnt on Shakespeare, random weights: written as a Hugging Face checkpoint and
imported with init.hf, one training step at learning rate 1e-9 to make a workdir). Each is exported
twice: by this checkout, and by --legacy (a commit whose bigmodel/ is unpacked with `git archive`
into the root, so the old export and server run as they were: whole-context recompute for every
token, a batch running until its longest request is done). Both servers run at once, each in its
own process on a free loopback port; rounds interleave them (old, new, old, new, ...) at 1, 8
and 32 concurrent clients, each client on its own keep-alive connection, and the table gives the
median over rounds. A request asks for --max_tokens (GPT-2: --gpt2_max_tokens) at temperature
0.8 after a 6 to 32 character prompt. The new server streams (/v1/completions): time to first
token is when the first token arrives; the old one answers whole (/v1/generate), so its first
token comes with its last. tokens/s counts generated tokens over the level's wall time.

Start time (the second table): seconds from starting `python -m bigmodel.serve` to a healthy
/healthz, and to every bucket compiled (/healthz's buckets_compiled, where the server reports it),
over --start_runs rounds that interleave the servers, each with a cold persistent compilation cache
(an empty directory) and then a warm one (the cache that cold run wrote). --before=DIR adds a
server "before": the bigmodel/ package in DIR (a copy of this checkout's from before a change), run
as this one is (streaming, compiling at start); `--servers=before,new` compares just those two.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # bigmodel, benchmarks and configs, run from anywhere
PROMPTS = ["ROMEO:", "JULIET:\nO", "First Citizen:\nBefore we proceed", "KING HENRY:\nOnce more"]


def char_gpt(root, steps):
  import importlib
  c = importlib.import_module("configs.shakespeare.gpt_char").get_config()
  c.total_steps = c.eval_every = c.checkpoint_every = steps
  c.log_every = min(c.log_every, steps)
  return train(c, os.path.join(root, "shakespeare_char"), steps)


def gpt2_small(root):
  """A GPT-2-small-shaped workdir of random weights (see the module's docstring)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  from benchmarks.hf_import import VOCAB, write_checkpoint
  from bigmodel import config as config_lib
  from bigmodel.data import shakespeare
  hf = os.path.join(root, "gpt2_small_random_hf")
  if not os.path.exists(os.path.join(hf, "config.json")):
    os.makedirs(hf, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator([shakespeare.load(0.1)["train"]], trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    bpe.add_tokens([f"<unused{i}>" for i in range(VOCAB - bpe.get_vocab_size())])  # GPT-2's vocabulary size
    bpe.save(os.path.join(hf, "tokenizer.json"))
    write_checkpoint(hf, layers=12, dim=768)
  import ml_collections
  c = ml_collections.ConfigDict()
  c.init = dict(hf=hf)
  c.data = dict(name="shakespeare", seq_len=64, batch_size=1, eval_batch_size=1, eval_examples=1, eval_split="val")
  c.loss = "lm_xent"
  c.optimizer = dict(name="adamw", learning_rate=1e-9)
  c.total_steps = c.log_every = c.eval_every = c.checkpoint_every = 1
  return train(config_lib.resolve(c), os.path.join(root, "gpt2_small_random"), 1)


def train(config, workdir, steps):
  from bigmodel.train import train_and_evaluate
  if not os.path.exists(os.path.join(workdir, "checkpoints", str(steps))):
    train_and_evaluate(config, workdir)
  return workdir


def unpack_legacy(root, commit):
  """The bigmodel/ package of `commit`, in a directory of its own; returns that directory."""
  out = os.path.join(root, f"legacy_{commit}")
  if not os.path.exists(os.path.join(out, "bigmodel")):
    os.makedirs(out, exist_ok=True)
    archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "bigmodel"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", out], input=archive.stdout, check=True)
  return out


# The workdir's config.json as the old code reads it: keys added since (data.train_examples=0,
# model.attention=auto, model.scan_layers=False, optimizer.lora with rank 0: what the old code did) are
# left out, or it refuses them.
LEGACY_CONFIG = """
import dataclasses, json, sys
from bigmodel import config
from bigmodel.models.gpt import GPT
c = json.load(open(sys.argv[1]))
known = {"model": {f.name for f in dataclasses.fields(GPT)}, **{k: set(v) for k, v in config.SECTIONS.items()}}
out = {k: {kk: vv for kk, vv in v.items() if kk in known[k]} if k in known else v for k, v in c.items()
       if k in known or k in config.DEFAULTS}
print("legacy config leaves out", {k: v for k, v in c.items() if k not in out},
      {k: {kk: vv for kk, vv in v.items() if kk not in out[k]} for k, v in c.items() if k in known}, file=sys.stderr)
json.dump(out, open(sys.argv[2], "w"), indent=2)
"""


def legacy_workdir(code, workdir):
  """A copy of `workdir` that the old code in `code` reads (its checkpoints linked, not copied)."""
  out = workdir + "_legacy"
  os.makedirs(out, exist_ok=True)
  for name in os.listdir(workdir):
    if name != "config.json" and not os.path.exists(os.path.join(out, name)):
      os.symlink(os.path.join(workdir, name), os.path.join(out, name))
  subprocess.run([sys.executable, "-c", LEGACY_CONFIG, os.path.join(workdir, "config.json"),
                  os.path.join(out, "config.json")], cwd=code, env=dict(os.environ, PYTHONPATH=code), check=True)
  return out


def export(code, workdir, out):
  """`python -m bigmodel.export` as the checkout in `code` has it."""
  subprocess.run([sys.executable, "-m", "bigmodel.export", f"--workdir={workdir}", f"--out={out}", "--platforms=cpu"],
                 cwd=code, env=dict(os.environ, PYTHONPATH=code), check=True, capture_output=True)
  return out


# The old server compiled every (batch size, length) bucket at start, the context's included: for a
# 1,024-token context at batch 32 that is a 32 x 1,024-token forward pass (and 6.6 GB of logits) that
# no request here needs. Here it compiles each bucket on first use, in an unmeasured warm-up pass.
LEGACY_MAIN = ("import runpy; from bigmodel import artifact; artifact.Artifact.warmup = lambda self: None; "
               "runpy.run_module('bigmodel.serve', run_name='__main__')")


class Server:
  """A server process; `ready_s`: seconds from its start to a healthy /healthz."""

  def __init__(self, code, model_dir, log_path, flags, legacy):
    self.legacy = legacy
    command = ["-c", LEGACY_MAIN] if legacy else ["-m", "bigmodel.serve"]
    # The old server takes over 2 min for 32 GPT-2 requests on a busy CPU (its one limit, queue wait included).
    with open(os.path.join(code, "bigmodel", "serve.py")) as f:
      timeout = "--queue_timeout_s=900" if "queue_timeout_s" in f.read() else "--request_timeout_s=900"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}  # each its own (or none)
    self.start = time.perf_counter()
    self.proc = subprocess.Popen([sys.executable, *command, f"--model={model_dir}", "--port=0", *flags, timeout],
                                 cwd=code, env=dict(env, PYTHONPATH=code), stdout=open(log_path, "w"),
                                 stderr=subprocess.STDOUT)
    while True:
      found = re.search(r"compiled in ([\d.]+) s\) on http://127\.0\.0\.1:(\d+)", open(log_path).read())
      if found:
        self.compile_s, self.port = float(found.group(1)), int(found.group(2))
        break
      if self.proc.poll() is not None:
        sys.exit(f"The server failed to start:\n{open(log_path).read()[-3000:]}")
      time.sleep(0.05)
    self.health()
    self.ready_s = time.perf_counter() - self.start

  def health(self):
    """/healthz's reply, once it is healthy."""
    while True:
      try:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        if response.status == 200:
          return json.loads(response.read())
      except OSError:
        pass
      time.sleep(0.05)

  def all_compiled(self):
    """Seconds from the start until every bucket is compiled (None: the server does not say)."""
    while "buckets" in (health := self.health()):
      if health["buckets_compiled"] == health["buckets"]:
        return time.perf_counter() - self.start
      time.sleep(0.1)
    return None

  def body(self, i, max_tokens):
    prompt, settings = PROMPTS[i % len(PROMPTS)], dict(temperature=0.8, seed=i)
    if self.legacy:
      return json.dumps({"prompt": prompt, "max_new_tokens": max_tokens, **settings}).encode()
    return json.dumps({"model": "m", "prompt": prompt, "max_tokens": max_tokens, "stream": True, **settings}).encode()

  def request(self, conn, body):
    """(seconds to the first token, seconds to the last, tokens)."""
    start = time.perf_counter()
    conn.request("POST", "/v1/generate" if self.legacy else "/v1/completions", body=body,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
      raise RuntimeError(f"{response.status}: {response.read()[:300]}")
    if self.legacy:
      tokens = json.loads(response.read())["new_tokens"]
      return time.perf_counter() - start, time.perf_counter() - start, tokens
    first, tokens = None, 0
    for line in response:
      if line.startswith(b"data: {"):
        tokens += 1
        first = first or time.perf_counter() - start
      elif line.startswith(b"data: [DONE]"):
        response.read()
        break
    return first, time.perf_counter() - start, tokens

  def stop(self):
    self.proc.terminate()
    self.proc.wait()


def level(server, clients, requests, max_tokens):
  """Every request once from `clients` threads: (wall s, [(ttft s, latency s, tokens)])."""
  results, lock, next_i = [], threading.Lock(), iter(range(requests))

  def client():
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=900)
    while (i := next(next_i, None)) is not None:
      result = server.request(conn, server.body(i, max_tokens))
      with lock:
        results.append(result)
    conn.close()

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    for f in [pool.submit(client) for _ in range(clients)]:
      f.result()
  return time.perf_counter() - start, results


def start_times(name, code_of, model_dirs, log_dir, flags, runs):
  """Interleaved rounds of starting each stream server (before and new), each with a cold compilation cache
  (an empty directory) and then a warm one (the cache that cold start wrote): table rows of the medians of
  (s to a healthy /healthz, s to every bucket compiled)."""
  measured, variants = {}, [(label, cache) for label in code_of for cache in ("cold", "warm")]
  for r in range(runs):
    for label, cache in variants:
      cache_dir = os.path.join(log_dir, f"jax_cache_{os.getpid()}_{label}_{r}")
      extra = [f"--compilation_cache={cache_dir}"]
      if cache == "cold":
        shutil.rmtree(cache_dir, ignore_errors=True)
      server = Server(code_of[label], model_dirs[label], os.path.join(log_dir, f"start_{label}_{cache}.log"),
                      [*flags, *extra], legacy=False)
      measured.setdefault((label, cache), []).append((server.ready_s, server.all_compiled()))
      server.stop()
      print(f"start round {r} {name} {label} ({cache} cache): {measured[label, cache][-1]}", flush=True)
  rows = []
  for label, cache in variants:
    m = measured[label, cache]
    ready = statistics.median(x[0] for x in m)
    compiled = [x[1] for x in m if x[1] is not None]
    rows.append(f"| {name} | {label} | {cache} | {len(m)} | {ready:.1f} | "
                f"{statistics.median(compiled) if compiled else ready:.1f} |")
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--root", default="runs/bench_serve", help="Workdirs, exports and the old code go here.")
  p.add_argument("--legacy", default="8e7439f", help="The commit whose server is compared (before issue 20).")
  p.add_argument("--before", default="", help="A directory holding a bigmodel/ package: the server 'before'.")
  p.add_argument("--servers", default="old,new", help="Of old (--legacy), before (--before) and new.")
  p.add_argument("--gpt_steps", type=int, default=200)
  p.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; medians are reported.")
  p.add_argument("--start_runs", type=int, default=3, help="Interleaved rounds of start times (0: none).")
  p.add_argument("--levels", default="1,8,32", help="Concurrent clients, comma-separated.")
  p.add_argument("--requests_per_client", type=int, default=2, help="char GPT (GPT-2: 1); at least 4 a level.")
  p.add_argument("--max_tokens", type=int, default=32)
  p.add_argument("--gpt2_max_tokens", type=int, default=16)
  p.add_argument("--models", default="char,gpt2")
  args = p.parse_args()
  root = os.path.abspath(args.root)
  levels = [int(n) for n in args.levels.split(",")]
  os.makedirs(root, exist_ok=True)
  labels = args.servers.split(",")
  code_of = {"old": unpack_legacy(root, args.legacy) if "old" in labels else None,
             "before": os.path.abspath(args.before) if args.before else None, "new": ROOT}
  if "before" in labels and not args.before:
    sys.exit("--servers=before needs --before=DIR (a directory holding the bigmodel/ package to compare).")
  models = {"char": ("char GPT", lambda: char_gpt(root, args.gpt_steps), args.requests_per_client, args.max_tokens,
                     ["--lengths=16,32"]),
            "gpt2": ("GPT-2-small shape", lambda: gpt2_small(root), 1, args.gpt2_max_tokens, ["--lengths=16,32"])}
  header = ["| model | server | clients | requests | tokens/s | first token p50 ms | p50 ms | p99 ms |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
  start_header = ["| model | server | compilation cache | runs | to a healthy /healthz s | to every bucket compiled s |",
                  "|---|---|---|---:|---:|---:|"]
  rows, start_rows, notes = [], [], []
  for key in args.models.split(","):
    name, make, per_client, max_tokens, flags = models[key]
    workdir = make()
    model_dirs = {label: export(code_of[label], legacy_workdir(code_of[label], workdir) if label == "old" else workdir,
                                os.path.join(root, f"{key}_{label}_export")) for label in labels}
    stream = {label: code_of[label] for label in labels if label != "old"}
    server_flags = lambda label: (["--batch_sizes=1,8,32", f"--max_new_tokens={max_tokens}"] if label == "old" else
                                  [f"--slots={max(levels)}", "--model_name=m", f"--max_new_tokens={max_tokens}"])
    if args.start_runs and stream:
      start_rows += start_times(name, stream, model_dirs, root, [*flags, *server_flags("new")], args.start_runs)
      print("\n".join(start_rows[-len(stream) - 1:]), flush=True)
    if not args.rounds:
      continue
    servers = {}
    try:
      for label in labels:
        extra = [f"--compilation_cache={os.path.join(root, 'jax_cache_tokens')}"] if label == "new" else []
        servers[label] = Server(code_of[label], model_dirs[label], os.path.join(root, f"serve_{key}_{label}.log"),
                                flags + server_flags(label) + extra, label == "old")
        compiled = servers[label].all_compiled()  # tokens/s is measured once every bucket is compiled
        notes.append(f"{name}, {label}: healthy in {servers[label].ready_s:.1f} s"
                     + (f", every bucket compiled in {compiled:.1f} s" if compiled else ""))
      measured = {}
      for r in range(args.rounds):
        for clients in levels:
          requests = max(4, clients * per_client)
          for label, server in servers.items():  # old, new, old, new, ...
            if r == 0:
              level(server, clients, clients, max_tokens)  # compiles what this level needs (the old server's buckets)
            wall, results = level(server, clients, requests, max_tokens)
            ttft, latency, tokens = map(np.array, zip(*results))
            measured.setdefault((label, clients), []).append(
                (tokens.sum() / wall, np.percentile(ttft, 50), np.percentile(latency, 50), np.percentile(latency, 99),
                 requests))
            print(f"round {r} {name} {label} {clients} clients: {tokens.sum() / wall:.1f} tokens/s", flush=True)
      for clients in levels:
        for label in servers:
          m = measured[label, clients]
          med = [statistics.median(x[i] for x in m) for i in range(4)]
          rows.append(f"| {name} | {label} | {clients} | {m[0][4]} | {med[0]:.1f} | {med[1] * 1e3:.0f} | "
                      f"{med[2] * 1e3:.0f} | {med[3] * 1e3:.0f} |")
          print(rows[-1], flush=True)
    finally:
      for server in servers.values():
        server.stop()
  if rows:
    print("\n" + "\n".join(header + rows))
    print("; ".join(notes))
  if start_rows:
    print("\n" + "\n".join(start_header + start_rows))


if __name__ == "__main__":
  main()
