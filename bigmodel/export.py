"""Exports a trained model: `python -m bigmodel.export --workdir=runs/x --out=model_dir`.

Writes a self-contained artifact of the workdir's newest checkpoint (see bigmodel/artifact.py
for the files), serialised with jax.export for CPU and CUDA over a symbolic batch size: a
classifier's forward function (its logits), or a language model's KV-cache path, prefill and a
one-token decode step with the cache as an explicit input and output (bigmodel/decoding.py; token
id -1 is padding); the weights as arrays; the input spec; the label names; the tokenizer for text.
Preprocessing is inside the function: uint8 images are scaled to [0, 1] and data.normalize's
mean and std applied, so it takes raw inputs as the dataset holds them.

Load it with `bigmodel.artifact.load(model_dir)` (jax and numpy only), serve it with
`python -m bigmodel.serve --model=model_dir`.

`--format=hf` writes a Hugging Face checkpoint instead (config.json, model.safetensors and a
Hugging Face tokenizer if the run used one), which `transformers` loads with `from_pretrained`:
GPT-2-shaped language models (model.name=gpt), BERTs (model.name=bert) and Llama-shaped ones, whether
imported with init.hf and fine-tuned or trained from scratch here (bigmodel/huggingface/).

`--format=gguf --out=model.gguf [--dtype=f32|f16|bf16|q8_0]` writes a Llama as one GGUF file for
llama.cpp and Ollama (bigmodel/huggingface/gguf.py), with its tokenizer and chat template; a LoRA run's
factors are merged in, as for --format=hf.
"""
import json
import os
import shutil

import jax
import numpy as np
from absl import flags, logging

from bigmodel import (artifact, chat, decoding, errors, huggingface, kv_cache, paths as paths_lib, runs, tasks,
                      workdir as workdir_lib)
from bigmodel.data import pipeline
from bigmodel.huggingface import gguf
from bigmodel.model_json import ModelJson


def export(workdir, out, platforms=("cpu", "cuda")):
  """Writes the artifact of `workdir`'s newest checkpoint into `out`; returns its model.json."""
  run = runs.load(workdir)
  config, model, task = run.config, run.model, tasks.get(run.config.task)
  if getattr(model, "attention", None) in ("auto", "cudnn"):  # one function for CPU and CUDA: cuDNN's kernel
    model = model.clone(attention="xla")                      # exists on the second only (models/attention.py)
  if task.serves is None:
    raise errors.UserError(f"{workdir} trained a {config.model.name} for task {config.task!r} (loss={config.loss!r}); "
                           f"{task.not_served}.")
  paths, weights, treedef = paths_lib.flatten({"params": run.params, **run.model_state})
  weights = [np.asarray(x) for x in weights]
  tok = run.tokenizer

  weight_avals = [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights]
  if task.serves == "generate":
    context = getattr(model, "max_len", 0) or config.data.seq_len
    spec = dict(task="generate", input=lm_input(tok, context))
    functions = _lm_functions(model, treedef, weight_avals, context, platforms)
  else:  # the run's data spec (workdir.DATA_SPEC): what raw inputs look like, how training preprocessed them
    data = workdir_lib.read_data_spec(workdir)
    tok = tok or data.tokenizer
    x_shape = jax.export.symbolic_shape(", ".join(["b", *map(str, data.shape)]))
    x_dtype = np.dtype(data.dtype)
    kind = "text" if tok is not None else "array"
    spec = dict(task="classify", input=dict(kind=kind, shape=list(data.shape), dtype=str(x_dtype)),
                labels=data.labels, output="sigmoid" if config.loss == "sigmoid_bce" else "softmax")
    norm = data.norm

    def forward(weights, x_BxS):  # the training pipeline's own preprocessing, then the model
      x_BxS = pipeline.normalize(pipeline.preprocess({"x": x_BxS}), norm)["x"]
      return model.apply(jax.tree.unflatten(treedef, weights), x_BxS, train=False)

    functions = {artifact.FUNCTION: jax.export.export(jax.jit(forward), platforms=platforms)(
        weight_avals, jax.ShapeDtypeStruct(x_shape, x_dtype))}
  source = dict(workdir=os.path.abspath(workdir), step=run.step, data=config.data.name, model=config.model.to_dict())
  return _write(out, spec, source, functions, paths, weights, tok)


def lm_input(tok, context):
  """A language model's model.json input: its context, vocabulary, the end-of-text token (so that serving
  stops there without asking the tokenizer; None: none) and, for a tokenizer with a chat template
  (bigmodel/chat.py, saved with the tokenizer), the token that ends a reply."""
  template = chat.template(tok)
  return dict(kind="tokens", context=context, vocab_size=tok.vocab_size, eos_id=tok.eos_id,
              **({"end_of_turn_id": template.end_of_turn_id} if template else {}))


def export_lm(model, params, tok, context, out, source, platforms=("cpu", "cuda")):
  """Writes the artifact of a language model (flax `model`, its `params`, tokenizer `tok`) that has no
  training run, such as a published checkpoint (bigmodel/published.py), into `out`; returns its model.json.
  `source` says where it came from."""
  if getattr(model, "attention", None) in ("auto", "cudnn"):
    model = model.clone(attention="xla")
  paths, weights, treedef = paths_lib.flatten({"params": params})
  weights = [np.asarray(x) for x in weights]
  functions = _lm_functions(model, treedef, [jax.ShapeDtypeStruct(w.shape, w.dtype) for w in weights], context,
                            platforms)
  return _write(out, dict(task="generate", input=lm_input(tok, context)), source, functions, paths, weights, tok)


def _write(out, spec, source, functions, paths, weights, tok):
  """model.json, the functions, the weights and the tokenizer, written whole into `out`; returns model.json."""
  spec = ModelJson(**spec, source=source,
                   weights=[dict(path=p, shape=list(w.shape), dtype=str(w.dtype)) for p, w in zip(paths, weights)],
                   platforms=list(next(iter(functions.values())).platforms), jax_version=jax.__version__).to_json()
  tmp = _fresh_tmp(out)
  for name, exported in functions.items():
    with open(os.path.join(tmp, name), "wb") as f:
      f.write(exported.serialize())
  np.savez(os.path.join(tmp, artifact.WEIGHTS), **dict(zip(paths, weights)))
  if tok is not None:
    tok.save(tmp)
  with open(os.path.join(tmp, artifact.SPEC), "w", encoding="utf-8") as f:
    json.dump(spec, f, indent=2, ensure_ascii=False)
  _move_into_place(tmp, out, artifact.SPEC)
  return spec


def _lm_functions(model, treedef, weight_avals, context, platforms):
  """The language model's KV-cache path (decoding.functions: prefill and a one-token decode step,
  the cache their explicit input and output), exported. The positions S of decode's cache are
  symbolic (up to the context): decode attends over the S positions it is given, so a caller
  holding short rows passes the first S positions of its cache and pays for those alone."""
  if not kv_cache.decodes(model):
    raise errors.UserError(f"A {type(model).__name__} has no KV cache to decode with; the server serves models "
                           "that have one (model.name=gpt or llama: models that set `decodes`, kv_cache.py).")
  prefill, decode, cache_avals = decoding.functions(model, treedef)
  b, l = jax.export.symbolic_shape("b, l", constraints=[f"l <= {context}"])
  rows, s = jax.export.symbolic_shape("b, s", constraints=[f"s <= {context}"])  # a scope of its own
  tokens = lambda *shape: jax.ShapeDtypeStruct(shape, np.int32)
  return {artifact.PREFILL: jax.export.export(jax.jit(prefill), platforms=platforms)(weight_avals, tokens(b, l)),
          artifact.DECODE: jax.export.export(jax.jit(decode), platforms=platforms)(
              weight_avals, [jax.ShapeDtypeStruct((rows, *kv_cache.with_positions(a.shape, s)), a.dtype)
                             for a in cache_avals], tokens(rows), tokens(rows))}


def export_hf(workdir, out):
  """Writes `workdir`'s newest weights into `out` as a Hugging Face checkpoint; returns its config.json."""
  run = runs.load(workdir)
  huggingface.hf_config(run.config.model)  # refuses a model with no Hugging Face equivalent before any work
  tmp = _fresh_tmp(out)
  config = huggingface.save(tmp, run.config.model, jax.device_get(run.params), run.tokenizer)
  _move_into_place(tmp, out, "config.json")
  return config


def export_gguf(workdir, out, dtype="f32"):
  """Writes `workdir`'s newest weights (a LoRA run's merged in) into the file `out` as GGUF (llama.cpp,
  Ollama), its 2-D weights in `dtype` (huggingface/gguf.py); returns the Hugging Face config it stands for."""
  if not out.endswith(gguf.SUFFIX) or os.path.isdir(out):
    raise errors.UserError(f"--out={out}: a GGUF export is one file; name it <something>.gguf.")
  run = runs.load(workdir)
  config = huggingface.hf_config(run.config.model)  # refuses a model with no Llama equivalent before any work
  if config["architectures"][0] != "LlamaForCausalLM":
    raise errors.UserError(f"model.name={run.config.model.name!r} exports to GGUF only as a Llama (model.name=llama, "
                           "without biases); use --format=hf.")
  tmp = out + ".tmp"
  try:  # written whole beside `out`, then moved into place: an earlier export stays until the new one is complete
    gguf.write(tmp, run.config.model, huggingface.tensors_of(run.config.model, jax.device_get(run.params)),
               run.tokenizer, dtype)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return config


def _fresh_tmp(out):
  """An empty directory beside `out`: the export is written there whole, then moved into place."""
  tmp = out.rstrip("/") + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  return tmp


def _move_into_place(tmp, out, marker):
  """Replaces `out` by `tmp`, but only if `out` is absent or an earlier export (it holds `marker`)."""
  if os.path.exists(out):
    if not os.path.exists(os.path.join(out, marker)):
      shutil.rmtree(tmp)
      raise errors.UserError(f"--out={out} exists and is not an exported model: choose a new directory.")
    shutil.rmtree(out)
  os.rename(tmp, out)


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)  # orbax warns that the workdir opens read-only
  f = flags.FLAGS
  if f.format == "gguf":
    export_gguf(f.workdir, f.out, f.dtype)
    print(f"Exported a Llama ({f.dtype}) to {f.out} (GGUF: llama.cpp, Ollama; transformers: "
          f"from_pretrained(dir, gguf_file=...))")
    return
  if f.format == "hf":
    config = export_hf(f.workdir, f.out)
    print(f"Exported {config['architectures'][0]} to {f.out} (Hugging Face: from_pretrained({f.out!r}))")
    return
  spec = export(f.workdir, f.out, tuple(f.platforms))
  print(f"Exported {spec['source']['model']['name']} (step {spec['source']['step']}, task {spec['task']}, "
        f"{sum(np.prod(w['shape'], dtype=int) for w in spec['weights']):,} weights) to {f.out}")


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "A training workdir (holds config.json and checkpoints/).")
  flags.DEFINE_string("out", None, "Directory to write the exported model into.")
  flags.DEFINE_list("platforms", ["cpu", "cuda"], "Platforms the exported function runs on.")
  flags.DEFINE_enum("format", "jax", ["jax", "hf", "gguf"], "jax: a jax.export artifact for bigmodel.serve; "
                    "hf: a Hugging Face checkpoint (GPT-2, BERT and Llama-shaped models); gguf: one GGUF file "
                    "(--out=model.gguf) of a Llama, for llama.cpp and Ollama.")
  flags.DEFINE_enum("dtype", "f32", list(gguf.WRITES), "--format=gguf: the type of its 2-D weights.")
  flags.mark_flags_as_required(["workdir", "out"])
  errors.run(main)
