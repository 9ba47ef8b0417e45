"""Samples text from a trained language model.

  python -m bigmodel.generate --workdir=runs/shakespeare_char --prompt="ROMEO:" \\
      --max_new_tokens=200 --temperature=0.8 --top_k=40      # or --top_p=0.9, or --greedy

Reads the workdir's newest checkpoint, its config and its tokenizer (workdir.py), and decodes
through bigmodel/decoding.py, as the exported model and the server do: GPT and Llama models with a
KV cache (one position's work per token); once the context is full, the window slides: the last
max_len tokens are encoded afresh for each new token, as without a cache. Other language models
(lstm_lm) re-read the text for every token. Tokens are drawn by sampling.py; the same seed gives
the same text (sample i of --num_samples uses seed + i). A sample ends at the tokenizer's
end-of-text token if it has one (a checkpoint's: GPT-2's <|endoftext|>; not a char, byte or BPE
one), which is not printed; --ignore_eos goes on to --max_new_tokens.

  python -m bigmodel.generate --model=SmolLM2-135M-Instruct.Q4_1.gguf --chat --greedy

runs a model without a training run (an export, or a published .gguf file or Hugging Face checkpoint dir,
exported once into a cache: bigmodel/published.py); --chat reads the user's messages from stdin, a line
each, and answers each through the model's chat template (bigmodel/chat.py) up to its end of turn.
"""
import sys

import jax
import numpy as np
from absl import flags, logging

from bigmodel import chat as chat_lib, config as config_lib, decoding, errors, runs, tasks


def load(workdir):
  """(model, params, tokenizer) from a language-model training workdir."""
  config = config_lib.read(workdir)
  task = tasks.get(config.task)
  if task.serves != "generate":
    raise errors.UserError(f"{workdir} trained a {config.model.name} for task {config.task!r}"
                           f"{'; ' + task.not_served if task.serves is None else ''}. Generation needs a language "
                           "model (task='language_model').")
  run = runs.load(workdir, config)
  return run.model, run.params, run.tokenizer


def decoder(model, params, context, use_cache=True):
  """The decoding.Decoder of a flax language model: its KV-cache path (as the export's), or without
  a cache (`use_cache=False`, or a model that has none: lstm_lm) a prefill of the window per token."""
  weights, treedef = jax.tree.flatten({"params": params})
  prefill, decode, cache_avals = decoding.functions(model, treedef, use_cache)
  return decoding.Decoder(prefill, decode, weights, cache_avals, context)


def generate(model, params, prompt_BxP, max_new_tokens, *, seed=0, temperature=1.0, top_k=0, top_p=1.0,
             eos_id=None, use_cache=True):
  """Returns prompt_BxP followed by max_new_tokens sampled ids (a B x (P + new) int32 array).
  `seed` (and each setting) is one value or one per row. A row that draws `eos_id` (the tokenizer's
  end-of-text token; None: never stop) ends with it, and -1 (padding) fills the rest of the row.
  Past the model's context (max_len) the window slides (decoding.py); a model without one (an RNN)
  reads the whole text."""
  tokens = np.asarray(prompt_BxP, np.int32)
  if tokens.ndim != 2 or tokens.shape[1] == 0:
    raise errors.UserError("The prompt must hold at least one token.")
  context = getattr(model, "max_len", None) or tokens.shape[1] + max_new_tokens
  out = decoding.generate(decoder(model, params, context, use_cache), tokens, max_new_tokens, seed=seed,
                          temperature=temperature, top_k=top_k, top_p=top_p,
                          stop_ids=() if eos_id is None else (eos_id,), slide=True)
  out_BxL = np.full((len(tokens), tokens.shape[1] + max_new_tokens), -1, np.int32)
  for row_L, ids in zip(out_BxL, out):
    row_L[:len(ids)] = ids
  return out_BxL


def text_ids(ids_L, prompt_len, eos_id):
  """A generated row's ids whose text is shown: those before the end-of-text token that ended it
  (neither its text nor the padding after it, as OpenAI's API leaves it out)."""
  new = np.asarray(ids_L[prompt_len:])
  ends = np.flatnonzero((new < 0) | (new == (-1 if eos_id is None else eos_id)))
  return ids_L[:prompt_len + (int(ends[0]) if len(ends) else len(new))]


def chat(dec, tok, lines, out, max_new_tokens, seed=0, **sampling):
  """A conversation in the terminal: each line of `lines` is the user's next message, answered (written to
  `out`) by the model `dec` (a decoding.Decoder) through its tokenizer's chat template, the whole conversation
  rendered each turn; a reply ends at the template's end of turn. The lines end it (EOF)."""
  template = chat_lib.template(tok)
  if template is None:
    raise errors.UserError("This model's tokenizer has no chat template (a base model): leave out --chat and "
                           "give a --prompt to continue.")
  messages = []
  for turn, line in enumerate(lines):
    if not line.strip():
      continue
    messages.append({"role": "user", "content": line.rstrip("\n")})
    ids = template.encode(messages)
    if len(ids) >= dec.context:
      raise errors.UserError(f"The conversation is {len(ids)} tokens, the model reads {dec.context}: start afresh.")
    new = list(decoding.generate(dec, [ids], max_new_tokens, seed=seed + turn, stop_ids=template.stop_ids,
                                 **sampling)[0][len(ids):])
    reply = tok.decode(new[:-1] if new and new[-1] in template.stop_ids else new)
    messages.append({"role": "assistant", "content": reply})
    print(reply, file=out, flush=True)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax warns that the workdir opens read-only
  f = flags.FLAGS
  temperature = 0.0 if f.greedy else f.temperature
  if f.model:  # an exported model dir, or a published model (a .gguf file, a checkpoint dir): its export
    from bigmodel import artifact, published
    model = artifact.load(published.model_dir(f.model, f.max_context) if published.is_published(f.model) else f.model)
    dec, tok = model.decoder, model.tokenizer
  else:
    model, params, tok = load(f.workdir)
    dec = f.chat and decoder(model, params, getattr(model, "max_len", None) or 1 << 16, use_cache=not f.no_cache)
  if f.chat:
    chat(dec, tok, sys.stdin, sys.stdout, f.max_new_tokens, temperature=temperature, top_k=f.top_k, top_p=f.top_p,
         seed=f.seed)
    return
  if f.model:
    eos_id = None if f.ignore_eos else tok.eos_id
    prompt = tok.encode(f.prompt)
    for i in range(f.num_samples):
      if f.num_samples > 1:
        print(f"--- sample {i}")
      ids = decoding.generate(dec, [prompt], f.max_new_tokens, temperature=temperature, top_k=f.top_k,
                              top_p=f.top_p, seed=f.seed + i,
                              stop_ids=() if eos_id is None else (eos_id,), slide=True)[0]
      shown = text_ids(np.asarray(ids), len(prompt), eos_id)
      print(tok.decode(shown[1:] if len(shown) and shown[0] == getattr(tok, "bos_id", None) else shown))
    return
  prompt = tok.encode(f.prompt)
  eos_id = None if f.ignore_eos else tok.eos_id
  out = generate(model, params, np.tile(prompt, (f.num_samples, 1)), f.max_new_tokens,
                 seed=f.seed + np.arange(f.num_samples), temperature=temperature, top_k=f.top_k, top_p=f.top_p,
                 eos_id=eos_id, use_cache=not f.no_cache)
  for i, ids in enumerate(out):
    if f.num_samples > 1:
      print(f"--- sample {i}")
    shown = text_ids(ids, len(prompt), eos_id)
    # The BOS a Llama's tokenizer puts before every text is not part of it: "ROMEO: ...", not "<s>ROMEO: ...".
    print(tok.decode(shown[1:] if len(shown) and shown[0] == getattr(tok, "bos_id", None) else shown))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A language-model training workdir.")
  flags.DEFINE_string("model", None, "Or a model: an exported model dir, or a published one, a .gguf file or a Hugging "
                      "Face checkpoint dir (exported once into a cache: bigmodel/published.py).")
  flags.DEFINE_integer("max_context", 2048, "--model of a published model: the most positions it reads.")
  flags.DEFINE_bool("chat", False, "Chat: each line read from stdin is the user's message, answered through the "
                    "model's chat template; EOF ends.")
  flags.DEFINE_string("prompt", "\n", "Text to continue.")
  flags.DEFINE_integer("max_new_tokens", 200, "Tokens to sample after the prompt.")
  flags.DEFINE_float("temperature", 1.0, "Softmax temperature; 0 = greedy.")
  flags.DEFINE_integer("top_k", 0, "Sample among the k most likely tokens; 0 = all.")
  flags.DEFINE_float("top_p", 1.0, "Sample among the most likely tokens whose probabilities sum to top_p.")
  flags.DEFINE_bool("greedy", False, "Always take the most likely token.")
  flags.DEFINE_integer("seed", 0, "Sampling seed: the same seed gives the same text.")
  flags.DEFINE_integer("num_samples", 1, "Independent samples of the same prompt.")
  flags.DEFINE_bool("ignore_eos", False, "Go on past the tokenizer's end-of-text token (GPT-2's <|endoftext|>), "
                    "where a sample otherwise ends, to --max_new_tokens.")
  flags.DEFINE_bool("no_cache", False, "Recompute the whole context for each token (for checking the cache).")
  flags.register_multi_flags_validator(["workdir", "model"], lambda v: bool(v["workdir"]) != bool(v["model"]),
                                       "Give one of --workdir (a training run) or --model.")
  errors.run(main)
