"""PyTorch reference runs for the speed benchmark, our own code matching two baselines: the MNIST-1D
paper models (Greydanus & Kobak 2020; logreg, mlp, cnn, gru trained with Adam as in the mnist1d
notebooks) and nanoGPT's character-level Shakespeare CPU recipe.

Run:  python benchmarks/pytorch_ref.py mnist1d --data=mnist1d.npz --model=cnn
      python benchmarks/pytorch_ref.py nanogpt --data=shakespeare_char.npz

The mnist1d npz holds x_train, y_train, x_test, y_test; the nanogpt one train and val token ids
and vocab_size. Needs only torch and numpy (no jax, no bigmodel). Progress goes to stderr; the
result is one line of JSON on stdout.
"""
import argparse
import collections
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def log(msg):
  print(msg, file=sys.stderr, flush=True)


# MNIST-1D ------------------------------------------------------------------------------------

class ResidualMLP(nn.Module):
  def __init__(self, hidden=100):
    super().__init__()
    self.linear1, self.linear2 = nn.Linear(40, hidden), nn.Linear(hidden, hidden)
    self.linear3 = nn.Linear(hidden, 10)

  def forward(self, x):
    h = F.relu(self.linear1(x))
    return self.linear3(h + F.relu(self.linear2(h)))


class BiGRU(nn.Module):
  def __init__(self, hidden=6, length=40):
    super().__init__()
    self.gru = nn.GRU(1, hidden, batch_first=True, bidirectional=True)
    self.linear = nn.Linear(2 * hidden * length, 10)

  def forward(self, x):  # each of the 40 samples is one time step
    out, _ = self.gru(x.unsqueeze(-1), x.new_zeros(2, x.shape[0], self.gru.hidden_size))
    return self.linear(out.flatten(1))


def cnn():
  # Three stride-2 convolutions take 40 samples to 5 positions x 25 channels = 125 features.
  return nn.Sequential(nn.Unflatten(1, (1, 40)),
                       nn.Conv1d(1, 25, 5, stride=2, padding=1), nn.ReLU(),
                       nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
                       nn.Conv1d(25, 25, 3, stride=2, padding=1), nn.ReLU(),
                       nn.Flatten(), nn.Linear(125, 10))


MNIST1D_MODELS = {"logreg": lambda: nn.Linear(40, 10), "mlp": ResidualMLP, "cnn": cnn, "gru": BiGRU}


@torch.no_grad()
def evaluate(model, x, y):
  model.eval()
  logits = model(x)
  model.train()
  return (logits.argmax(-1) == y).float().mean().item(), F.cross_entropy(logits, y).item()


def run_mnist1d(args):
  d = np.load(args.data)
  x_train, x_test = (torch.from_numpy(d[k].astype(np.float32)) for k in ("x_train", "x_test"))
  y_train, y_test = (torch.from_numpy(d[k].astype(np.int64)) for k in ("y_train", "y_test"))
  model = MNIST1D_MODELS[args.model]()
  opt = torch.optim.Adam(model.parameters(), lr=args.lr)
  gen = torch.Generator().manual_seed(args.seed)  # batch order depends on --seed alone
  per_epoch, bs, losses = len(x_train) // args.batch_size, args.batch_size, []
  t0 = time.perf_counter()
  for step in range(1, args.steps + 1):
    b = (step - 1) % per_epoch
    if b == 0:
      perm = torch.randperm(len(x_train), generator=gen)
    idx = perm[b * bs:(b + 1) * bs]
    loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if step % args.log_every == 0:  # .item() waits for the step, so only now and then
      losses.append(loss.item())
    if step % args.eval_every == 0 or step == args.steps:
      acc, test_loss = evaluate(model, x_test, y_test)
      log(f"step {step}: train loss {losses[-1] if losses else float('nan'):.4f}, "
          f"test loss {test_loss:.4f}, test acc {acc:.4f}")
  seconds = time.perf_counter() - t0
  return {"task": "mnist1d", "model": args.model, "steps": args.steps, "train_seconds": seconds,
          "steps_per_sec": args.steps / seconds, "test_accuracy": acc, "test_loss": test_loss,
          "params": sum(p.numel() for p in model.parameters())}


# nanoGPT -------------------------------------------------------------------------------------

class CausalSelfAttention(nn.Module):
  def __init__(self, d, n_head):
    super().__init__()
    self.n_head = n_head
    self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)

  def forward(self, x):
    B, T, C = x.shape
    q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
               for t in self.c_attn(x).split(C, dim=2))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
  def __init__(self, d, n_head):
    super().__init__()
    self.ln_1, self.attn = nn.LayerNorm(d, bias=False), CausalSelfAttention(d, n_head)
    self.ln_2 = nn.LayerNorm(d, bias=False)
    self.mlp = nn.Sequential(collections.OrderedDict(  # names as nanoGPT's, for the c_proj init
        c_fc=nn.Linear(d, 4 * d, bias=False), gelu=nn.GELU(), c_proj=nn.Linear(4 * d, d, bias=False)))

  def forward(self, x):
    x = x + self.attn(self.ln_1(x))
    return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
  def __init__(self, vocab_size, block_size, n_layer, n_head, n_embd):
    super().__init__()
    self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
    self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
    self.ln_f = nn.LayerNorm(n_embd, bias=False)
    self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
    self.wte.weight = self.lm_head.weight  # tied
    for m in self.modules():
      if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    for name, p in self.named_parameters():  # GPT-2: residual branches scaled down with depth
      if name.endswith("c_proj.weight"):
        nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))

  def forward(self, idx):
    x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
    for block in self.h:
      x = block(x)
    return self.lm_head(self.ln_f(x))


def lm_loss(model, x, y):
  return F.cross_entropy(model(x).flatten(0, 1), y.flatten())


def get_batch(data, args):
  ix = torch.randint(len(data) - args.block_size, (args.batch_size,))
  x = torch.stack([data[i:i + args.block_size] for i in ix])
  y = torch.stack([data[i + 1:i + 1 + args.block_size] for i in ix])
  return x, y


def get_lr(it, args):
  if it < args.warmup_iters:
    return args.learning_rate * (it + 1) / (args.warmup_iters + 1)
  if it > args.lr_decay_iters:
    return args.min_lr
  ratio = (it - args.warmup_iters) / (args.lr_decay_iters - args.warmup_iters)
  return args.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (args.learning_rate - args.min_lr)


@torch.no_grad()
def estimate_loss(model, splits, args):
  model.eval()
  out = {k: float(np.mean([lm_loss(model, *get_batch(data, args)).item()
                           for _ in range(args.eval_iters)])) for k, data in splits.items()}
  model.train()
  return out


@torch.no_grad()
def full_val_loss(model, val, block_size, batch=256):
  model.eval()
  starts = torch.arange(0, len(val) - block_size, block_size)  # all s with s + block_size < len
  total = 0.0
  for chunk in starts.split(batch):
    idx = chunk[:, None] + torch.arange(block_size)
    logits = model(val[idx]).flatten(0, 1)
    total += F.cross_entropy(logits, val[idx + 1].flatten(), reduction="sum").item()
  return total / (len(starts) * block_size)


def run_nanogpt(args):
  d = np.load(args.data)
  splits = {k: torch.from_numpy(d[k].astype(np.int64)) for k in ("train", "val")}
  model = GPT(int(d["vocab_size"]), args.block_size, args.n_layer, args.n_head, args.n_embd)
  params = list(model.parameters())  # the tied wte/lm_head weight appears once
  opt = torch.optim.AdamW([  # decay matmul and embedding weights, not LayerNorm gains
      {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
      {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
      lr=args.learning_rate, betas=(args.beta1, args.beta2))
  x, y = get_batch(splits["train"], args)
  t0 = time.perf_counter()
  for it in range(args.max_iters + 1):  # like nanoGPT: iterations 0..max_iters inclusive
    for group in opt.param_groups:
      group["lr"] = get_lr(it, args)
    if it % args.eval_interval == 0:
      est = estimate_loss(model, splits, args)
      log(f"step {it}: train loss {est['train']:.4f}, val loss {est['val']:.4f}")
    loss = lm_loss(model, x, y)
    x, y = get_batch(splits["train"], args)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if it % args.log_interval == 0:  # .item() waits for the step, so only now and then
      log(f"iter {it}: loss {loss.item():.4f}")
  seconds, iters = time.perf_counter() - t0, args.max_iters + 1
  return {"task": "nanogpt", "iters": iters, "train_seconds": seconds,
          "ms_per_iter": 1000 * seconds / iters, "last_estimate_val_loss": est["val"],
          "val_loss_full": full_val_loss(model, splits["val"], args.block_size),
          "params": sum(p.numel() for p in params) - model.wpe.weight.numel()}  # nanoGPT leaves out wpe


def parse_args(argv=None):
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--data", required=True, help=".npz file with the task's arrays")
  common.add_argument("--seed", type=int, default=0)
  common.add_argument("--threads", type=int, default=2)
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="task", required=True)
  m = sub.add_parser("mnist1d", parents=[common])
  m.add_argument("--model", choices=list(MNIST1D_MODELS), default="cnn")
  g = sub.add_parser("nanogpt", parents=[common])
  for p, defaults in [
      (m, dict(lr=1e-2, batch_size=100, steps=8000, eval_every=1000, log_every=250)),
      (g, dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000,
               lr_decay_iters=2000, eval_iters=20, eval_interval=250, log_interval=10,
               learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, beta1=0.9, beta2=0.99,
               weight_decay=0.1, grad_clip=1.0))]:
    for name, default in defaults.items():
      p.add_argument(f"--{name}", type=type(default), default=default)
  return parser.parse_args(argv)


def main():
  args = parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  np.random.seed(args.seed)
  result = {"mnist1d": run_mnist1d, "nanogpt": run_nanogpt}[args.task](args)
  print(json.dumps({**result, "torch": torch.__version__, "threads": args.threads}))


if __name__ == "__main__":
  main()
