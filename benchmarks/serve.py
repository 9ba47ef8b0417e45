"""Serving throughput and latency: requests/s and p50/p99 at 1, 8 and 32 concurrent clients.

    python benchmarks/serve.py --root=runs/bench_serve      # prints a markdown table

Trains the MNIST-1D CNN (configs/mnist1d/cnn.py) and the char GPT (configs/shakespeare/gpt_char.py)
for a few steps (accuracy does not matter here; a finished workdir is reused), exports each,
starts `python -m bigmodel.serve` on a free loopback port with its default buckets, and sends a
fixed number of requests per level from that many client threads, each with its own keep-alive
connection. Latency is a request's round trip seen by the client; the clients share the machine
with the server.
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # bigmodel and configs, run from anywhere


def train_and_export(config_module, root, name, steps):
  """A workdir trained for `steps` (reused if already there) and its export; returns the model dir."""
  import importlib

  from bigmodel import export
  from bigmodel.train import train_and_evaluate
  c = importlib.import_module(config_module).get_config()
  c.total_steps = c.eval_every = c.checkpoint_every = steps
  c.log_every = min(c.log_every, steps)
  workdir, model_dir = os.path.join(root, name), os.path.join(root, f"{name}_model")
  if not os.path.exists(os.path.join(workdir, "checkpoints", str(steps))):
    train_and_evaluate(c, workdir)
  export.export(workdir, model_dir)
  return model_dir


class Server:
  def __init__(self, model_dir, log_path):
    self.log_path = log_path
    self.proc = subprocess.Popen([sys.executable, "-m", "bigmodel.serve", f"--model={model_dir}", "--port=0"],
                                 cwd=ROOT, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    while True:
      found = re.search(r"compiled in ([\d.]+) s\) on http://127\.0\.0\.1:(\d+)", open(log_path).read())
      if found:
        self.compile_s, self.port = float(found.group(1)), int(found.group(2))
        return
      if self.proc.poll() is not None:
        sys.exit(f"The server failed to start:\n{open(log_path).read()[-3000:]}")
      time.sleep(0.2)

  def counts(self):
    conn = http.client.HTTPConnection("127.0.0.1", self.port)
    conn.request("GET", "/healthz")
    health = json.loads(conn.getresponse().read())
    conn.close()
    return health["requests"], health["batches"]

  def stop(self):
    self.proc.terminate()
    self.proc.wait()


def load(port, path, bodies, clients):
  """Sends every body once from `clients` threads; returns (wall seconds, latencies in seconds)."""
  latencies, lock, next_i = [], threading.Lock(), iter(range(len(bodies)))

  def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    while True:
      with lock:
        i = next(next_i, None)
      if i is None:
        break
      start = time.perf_counter()
      conn.request("POST", path, body=bodies[i], headers={"Content-Type": "application/json"})
      response = conn.getresponse()
      reply = response.read()
      if response.status != 200:
        raise RuntimeError(f"{path} answered {response.status}: {reply[:300]}")
      with lock:
        latencies.append(time.perf_counter() - start)
    conn.close()

  start = time.perf_counter()
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    for f in [pool.submit(client) for _ in range(clients)]:
      f.result()
  return time.perf_counter() - start, np.array(latencies)


def bench(name, server, path, bodies, levels):
  rows = []
  load(server.port, path, bodies[:4], 1)  # first requests: connection setup, caches
  for clients in levels:
    requests0, batches0 = server.counts()
    wall, lat = load(server.port, path, bodies, clients)
    requests1, batches1 = server.counts()
    mean_batch = (requests1 - requests0) / max(batches1 - batches0, 1)
    rows.append(f"| {name} | {path} | {clients} | {len(bodies)} | {len(bodies) / wall:.1f} | "
                f"{np.percentile(lat, 50) * 1e3:.1f} | {np.percentile(lat, 99) * 1e3:.1f} | {mean_batch:.1f} |")
    print(rows[-1], flush=True)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--root", default="runs/bench_serve", help="Workdirs and exports go here.")
  p.add_argument("--cnn_steps", type=int, default=500)
  p.add_argument("--gpt_steps", type=int, default=200)
  p.add_argument("--classify_requests", type=int, default=400, help="Requests per concurrency level.")
  p.add_argument("--generate_requests", type=int, default=96, help="Requests per concurrency level.")
  p.add_argument("--max_new_tokens", type=int, default=32)
  p.add_argument("--levels", default="1,8,32", help="Concurrent clients, comma-separated.")
  args = p.parse_args()
  levels = [int(n) for n in args.levels.split(",")]
  os.makedirs(args.root, exist_ok=True)
  cnn_dir = train_and_export("configs.mnist1d.cnn", args.root, "mnist1d_cnn", args.cnn_steps)
  gpt_dir = train_and_export("configs.shakespeare.gpt_char", args.root, "shakespeare_char", args.gpt_steps)

  rng = np.random.default_rng(0)
  signals = rng.normal(size=(args.classify_requests, 40)).round(4)
  classify = [json.dumps({"input": x.tolist()}).encode() for x in signals]
  prompts = ["ROMEO:", "JULIET:\nO", "First Citizen:\nBefore we proceed", "KING HENRY:\nOnce more"]
  generate = [json.dumps({"prompt": prompts[i % len(prompts)], "max_new_tokens": args.max_new_tokens,
                          "temperature": 0.8, "top_k": 40, "seed": i}).encode()
              for i in range(args.generate_requests)]

  header = ["| model | endpoint | clients | requests | requests/s | p50 ms | p99 ms | mean batch |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
  print("\n".join(header), flush=True)
  rows, compile_notes = [], []
  for name, model_dir, path, bodies in (("MNIST-1D CNN", cnn_dir, "/v1/classify", classify),
                                        ("char GPT", gpt_dir, "/v1/generate", generate)):
    server = Server(model_dir, os.path.join(args.root, f"serve_{os.path.basename(model_dir)}.log"))
    try:
      rows += bench(name, server, path, bodies, levels)
      compile_notes.append(f"{name}: {server.compile_s:.1f} s to compile its buckets at start")
    finally:
      server.stop()
  print("\n" + "\n".join(header + rows))
  print("; ".join(compile_notes))


if __name__ == "__main__":
  main()
