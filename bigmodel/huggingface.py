"""Hugging Face checkpoints in and out: GPT-2, BERT, ViT and ResNet.

A run starts from one with `init.hf`: a hub id ("gpt2", "bert-base-uncased",
"google/vit-base-patch16-224", "microsoft/resnet-50"; downloaded once into the Hugging Face
cache) or a local directory holding what `save_pretrained` writes (config.json,
model.safetensors, the tokenizer files). Its config.json gives the architecture and sizes
(`model_config`); the run's own config chooses the task, and keys it sets win:

  GPT-2  -> models/gpt.py  GPT   (learned positions, tied embeddings, tanh GELU, LN eps 1e-5)
  BERT   -> models/bert.py BERT  (post-LN, token types, exact GELU, LN eps 1e-12, the pooler)
  ViT    -> models/vit.py  ViT   (class token, exact GELU, LN eps 1e-12)
  ResNet -> models/resnet.py ResNet (symmetric padding, BatchNorm statistics into batch_stats)

Each family's table says, for every array of ours, which checkpoint tensor(s) it is made of
and how: PyTorch's Linear stores (out, in) where flax's Dense stores (in, out), and
convolutions are OIHW where flax's are HWIO. `load` reads the tensors one at a time with
safetensors' numpy API (no torch) and puts each straight onto its array's final sharding, so
a big checkpoint never sits whole in host memory. `save` writes the reverse, for GPT-2 and BERT.
The tables name unscanned blocks (`block0/...`); a model with `scan_layers` loads and saves them
layer by layer into and out of its stacked arrays (models/stack.py).
"""
import contextlib
import dataclasses
import glob
import json
import os
import re

import jax
import numpy as np

from bigmodel import errors, paths
from bigmodel.models import stack

ARCHITECTURES = {  # model_type in config.json -> the classes whose checkpoints load
    "gpt2": ("GPT2LMHeadModel", "GPT2Model"),
    "bert": ("BertModel", "BertForMaskedLM", "BertForSequenceClassification"),
    "vit": ("ViTModel", "ViTForImageClassification"),
    "resnet": ("ResNetModel", "ResNetForImageClassification"),
}
# What a hub download fetches: the config, the weights and the tokenizer, never PyTorch .bin files.
FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json",
         "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt"]


def local_dir(name):
  """The directory of checkpoint `name`: `name` itself, or the hub id's files in the local cache."""
  if os.path.isdir(name):
    return name
  if name.startswith((".", "/")) or name.count("/") > 1:
    raise errors.NotFound(f"init.hf={name!r}: no such directory (nor is it a Hugging Face hub id such as "
                          "'gpt2' or 'google/vit-base-patch16-224').")
  import huggingface_hub  # only hub ids need it
  try:
    return huggingface_hub.snapshot_download(name, allow_patterns=FILES)
  except Exception as e:  # offline, unknown id, gated repo: all mean the files are not here
    raise errors.NotFound(
        f"Could not get Hugging Face checkpoint {name!r} from the hub ({type(e).__name__}: {e}). Without a "
        "network, download it elsewhere (huggingface-cli download <id>) and give its directory instead.") from e


def read_config(name):
  """The checkpoint's config.json, as a dict."""
  path = os.path.join(local_dir(name), "config.json")
  if not os.path.exists(path):
    raise errors.NotFound(f"{path} not found: a Hugging Face checkpoint directory holds config.json "
                          "and model.safetensors (what save_pretrained writes).")
  with open(path) as f:
    return json.load(f)


def _family(hf):
  family = hf.get("model_type")
  if family not in ARCHITECTURES:
    supported = ", ".join(a for archs in ARCHITECTURES.values() for a in archs)
    raise errors.UserError(f"Hugging Face architecture {', '.join(hf.get('architectures') or [str(family)])} "
                           f"(model_type {family!r}) is not supported. Supported: {supported}.")
  return family


def _require(hf, key, allowed, family, why):
  """Refuses a checkpoint whose config sets `key` outside `allowed` (the first is transformers' default):
  its model computes something else than ours, and would load without a word. `why` says what."""
  value = hf.get(key, allowed[0])
  if value not in allowed:
    raise errors.UserError(f"This {family} checkpoint has {key}={value!r}: {why}. bigmodel's model computes "
                           f"{key}={allowed[0]!r} only, so it does not load it.")


def model_config(name):
  """Our `model` config section for checkpoint `name`: the model and its sizes, from config.json."""
  hf = read_config(name)
  family = _family(hf)
  if family == "gpt2":
    _require(hf, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), family, "its MLP uses another activation")
    for key, why in (("scale_attn_weights", "its attention logits are not divided by the square root of the head size"),
                     ("scale_attn_by_inverse_layer_idx", "layer i divides its attention logits by i + 1 as well"),
                     ("reorder_and_upcast_attn", "it computes attention in another order and precision (float32 "
                                                 "logits)"),
                     ("add_cross_attention", "its blocks attend to an encoder's output too")):
      _require(hf, key, (key == "scale_attn_weights",), family, why)
    _require(hf, "tie_word_embeddings", (True,), family, "its lm_head is a separate matrix")
    return dict(name="gpt", num_layers=hf["n_layer"], num_heads=hf["n_head"], dim=hf["n_embd"],
                mlp_dim=hf.get("n_inner") or 4 * hf["n_embd"], max_len=hf["n_positions"],
                vocab_size=hf["vocab_size"], positions="learned", tie_embeddings=True, causal=True,
                ln_epsilon=hf.get("layer_norm_epsilon", 1e-5))
  if family == "bert":
    _require(hf, "hidden_act", ("gelu",), family, "its MLP uses another activation")
    _require(hf, "position_embedding_type", ("absolute",), family, "its positions are relative, not learned absolute "
                                                                    "ones")
    _require(hf, "is_decoder", (False,), family, "it is a causal decoder, not a bidirectional encoder")
    _require(hf, "add_cross_attention", (False,), family, "its layers attend to an encoder's output too")
    return dict(name="bert", num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
                dim=hf["hidden_size"], mlp_dim=hf["intermediate_size"], max_len=hf["max_position_embeddings"],
                vocab_size=hf["vocab_size"], type_vocab_size=hf.get("type_vocab_size", 2),
                ln_epsilon=hf.get("layer_norm_eps", 1e-12))
  if family == "vit":
    _require(hf, "hidden_act", ("gelu",), family, "its MLP uses another activation")
    _require(hf, "qkv_bias", (True,), family, "its query, key and value projections have no bias")
    return dict(name="vit", patch_size=hf["patch_size"], dim=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
                num_heads=hf["num_attention_heads"], mlp_dim=hf["intermediate_size"], pool="cls",
                ln_epsilon=hf.get("layer_norm_eps", 1e-12), gelu_approximate=False)
  # resnet
  _require(hf, "hidden_act", ("relu",), family, "its blocks use another activation")
  _require(hf, "downsample_in_first_stage", (False,), family, "its first stage halves the resolution")
  _require(hf, "downsample_in_bottleneck", (False,), family, "its bottlenecks stride in the first 1x1 convolution")
  block = hf["layer_type"]
  expansion = {"basic": 1, "bottleneck": 4}[block]
  width = hf["hidden_sizes"][0] // expansion
  if hf["embedding_size"] != width or hf["hidden_sizes"] != [width * expansion * 2 ** i
                                                             for i in range(len(hf["hidden_sizes"]))]:
    raise errors.UserError(f"This ResNet's widths (embedding_size={hf['embedding_size']}, hidden_sizes="
                           f"{hf['hidden_sizes']}) do not double stage by stage from its stem, as bigmodel's "
                           "ResNet does.")
  return dict(name="resnet", stage_sizes=tuple(hf["depths"]), block=block, width=width, stem="imagenet",
              padding="symmetric", bn_momentum=0.9)


# ---- Tables: our array path -> how it is made from checkpoint tensors ----

@dataclasses.dataclass
class Tensors:
  names: tuple  # checkpoint tensor names, as the task model (GPT2LMHeadModel, ...) saves them
  load: callable  # (arrays, our shape) -> our array
  save: callable  # our array -> the checkpoint arrays, in `names` order
  head: str = ""  # a head the checkpoint may lack as a whole (a base model, e.g. BertModel, has no MLM head):
                  # then its arrays start fresh; a head present in part is an error, never a silent fresh start


def same(name, head=""):
  return Tensors((name,), lambda a, shape: a[0], lambda x: (x,), head)


def linear(name, head=""):
  """A torch Linear weight (out, in) as a flax kernel (in, out)."""
  return Tensors((name,), lambda a, shape: a[0].T, lambda x: (x.T,), head)


def conv(name):
  """A torch conv weight (O, I, H, W) as a flax kernel (H, W, I, O). A 3-channel (RGB) stem loads into a
  1-channel model summed over its channels: the same output as the grey image copied into R, G and B."""
  def load(a, shape):
    kernel = a[0].transpose(2, 3, 1, 0)
    return kernel.sum(2, keepdims=True) if shape[2] == 1 and kernel.shape[2] != 1 else kernel
  return Tensors((name,), load, lambda x: (x.transpose(3, 2, 0, 1),))


def patches(name):
  """ViT's patch conv (D, C, P, P) as the Dense kernel over einops patches "(p q c)" (P * P * C, D)."""
  def load(a, shape):
    kernel_PxPxCxD = a[0].transpose(2, 3, 1, 0)
    P = kernel_PxPxCxD.shape[0]
    C = shape[0] // (P * P)
    if C == 1 and kernel_PxPxCxD.shape[2] != 1:  # grey images: see `conv`
      kernel_PxPxCxD = kernel_PxPxCxD.sum(2, keepdims=True)
    return kernel_PxPxCxD.reshape(-1, kernel_PxPxCxD.shape[-1])
  return Tensors((name,), load, None)


def fused(names, bias=False):
  """Separate q, k, v Linears as one fused "(three h k)" Dense: kernels side by side."""
  if bias:
    return Tensors(tuple(names), lambda a, shape: np.concatenate(a), None)
  return Tensors(tuple(names), lambda a, shape: np.concatenate([w.T for w in a], axis=1), None)


def positions_2d(name):
  """ViT's position embeddings (1, 1 + N, D); at another image size the N patch positions are
  resized as a 2-D grid (bilinear, big_vision's choice), the class token's row kept."""
  def load(a, shape):
    pos_NxD = a[0][0]
    if pos_NxD.shape == tuple(shape):
      return pos_NxD
    old, new = round((pos_NxD.shape[0] - 1) ** 0.5), round((shape[0] - 1) ** 0.5)
    if old * old != pos_NxD.shape[0] - 1 or new * new != shape[0] - 1:
      raise errors.UserError(f"{name}: only square patch grids are interpolated ({pos_NxD.shape[0] - 1} -> "
                             f"{shape[0] - 1} patches).")
    grid = pos_NxD[1:].reshape(old, old, -1)
    grid = np.asarray(jax.image.resize(grid, (new, new, grid.shape[-1]), "bilinear"))
    return np.concatenate([pos_NxD[:1], grid.reshape(new * new, -1)])
  return Tensors((name,), load, lambda x: (x[None],))


def _norm(ours, theirs):
  return {f"params/{ours}/scale": same(f"{theirs}.weight"), f"params/{ours}/bias": same(f"{theirs}.bias")}


def _dense(ours, theirs, transposed=True, head=""):
  make = linear if transposed else same
  return {f"params/{ours}/kernel": make(f"{theirs}.weight", head), f"params/{ours}/bias": same(f"{theirs}.bias", head)}


def _gpt2(m):
  t = {"params/embed/embedding": same("transformer.wte.weight"), "params/pos_embed": same("transformer.wpe.weight"),
       **_norm("ln_final", "transformer.ln_f")}
  for i in range(m["num_layers"]):
    h = f"transformer.h.{i}"  # GPT-2's Conv1D stores (in, out), as flax does; c_attn's columns are q | k | v
    t |= _norm(f"block{i}/ln_attn", f"{h}.ln_1") | _norm(f"block{i}/ln_mlp", f"{h}.ln_2")
    for ours, theirs in (("attn/qkv", "attn.c_attn"), ("attn/out", "attn.c_proj"), ("mlp_in", "mlp.c_fc"),
                         ("mlp_out", "mlp.c_proj")):
      t |= _dense(f"block{i}/{ours}", f"{h}.{theirs}", transposed=False)
  return t


def _bert(m):
  e = "bert.embeddings"
  t = {"params/embed/embedding": same(f"{e}.word_embeddings.weight"),
       "params/pos_embed": same(f"{e}.position_embeddings.weight"),
       "params/type_embed": same(f"{e}.token_type_embeddings.weight"), **_norm("ln_embed", f"{e}.LayerNorm"),
       **_dense("pooler", "bert.pooler.dense", head="pooler"), **_dense("head", "classifier", head="classifier"),
       **_dense("mlm_dense", "cls.predictions.transform.dense", head="mlm"),
       "params/mlm_bias": same("cls.predictions.bias", head="mlm")}
  t |= {k: dataclasses.replace(v, head="mlm") for k, v in _norm("ln_mlm", "cls.predictions.transform.LayerNorm").items()}
  for i in range(m["num_layers"]):
    h = f"bert.encoder.layer.{i}"
    for x in ("query", "key", "value"):
      t |= _dense(f"layer{i}/attn/{x}", f"{h}.attention.self.{x}")
    t |= (_dense(f"layer{i}/attn/out", f"{h}.attention.output.dense") |
          _norm(f"layer{i}/ln_attn", f"{h}.attention.output.LayerNorm") |
          _dense(f"layer{i}/mlp_in", f"{h}.intermediate.dense") | _dense(f"layer{i}/mlp_out", f"{h}.output.dense") |
          _norm(f"layer{i}/ln_mlp", f"{h}.output.LayerNorm"))
  return t


def _vit(m):
  e = "vit.embeddings"
  t = {"params/patch_embed/kernel": patches(f"{e}.patch_embeddings.projection.weight"),
       "params/patch_embed/bias": same(f"{e}.patch_embeddings.projection.bias"),
       "params/cls": same(f"{e}.cls_token"), "params/pos_embed": positions_2d(f"{e}.position_embeddings"),
       **_norm("ln_final", "vit.layernorm"), **_dense("head", "classifier", head="classifier")}
  for i in range(m["num_layers"]):
    h = f"vit.encoder.layer.{i}"
    qkv = [f"{h}.attention.attention.{x}" for x in ("query", "key", "value")]
    t |= ({f"params/block{i}/attn/qkv/kernel": fused([f"{n}.weight" for n in qkv]),
           f"params/block{i}/attn/qkv/bias": fused([f"{n}.bias" for n in qkv], bias=True)} |
          _dense(f"block{i}/attn/out", f"{h}.attention.output.dense") |
          _norm(f"block{i}/ln_attn", f"{h}.layernorm_before") | _norm(f"block{i}/ln_mlp", f"{h}.layernorm_after") |
          _dense(f"block{i}/mlp_in", f"{h}.intermediate.dense") | _dense(f"block{i}/mlp_out", f"{h}.output.dense"))
  return t


def _resnet(m):
  def conv_bn(ours_conv, ours_bn, theirs):
    return {f"params/{ours_conv}/kernel": conv(f"{theirs}.convolution.weight"),
            f"params/{ours_bn}/scale": same(f"{theirs}.normalization.weight"),
            f"params/{ours_bn}/bias": same(f"{theirs}.normalization.bias"),
            f"batch_stats/{ours_bn}/mean": same(f"{theirs}.normalization.running_mean"),
            f"batch_stats/{ours_bn}/var": same(f"{theirs}.normalization.running_var")}

  t = {**conv_bn("stem_conv", "stem_bn", "resnet.embedder.embedder"), **_dense("head", "classifier.1", head="classifier")}
  convs = 3 if m["block"] == "bottleneck" else 2
  for i, n in enumerate(m["stage_sizes"]):
    for j in range(n):
      ours, theirs = f"stage{i}_block{j}", f"resnet.encoder.stages.{i}.layers.{j}"
      for k in range(convs):
        t |= conv_bn(f"{ours}/conv{k}", f"{ours}/bn{k}", f"{theirs}.layer.{k}")
      t |= conv_bn(f"{ours}/proj", f"{ours}/proj_bn", f"{theirs}.shortcut")
  return t


def _table(model):
  """(family, table) for our `model` config section, or ValueError for a model no checkpoint maps onto."""
  from bigmodel.models import MODELS, bert, gpt, resnet, vit
  cls = MODELS[model["name"]][0] if model["name"] in MODELS else None
  families = {gpt.GPT: ("gpt2", _gpt2), bert.BERT: ("bert", _bert), vit.ViT: ("vit", _vit),
              resnet.ResNet: ("resnet", _resnet)}
  if cls not in families:
    raise errors.UserError(f"model.name={model['name']!r} maps onto no Hugging Face checkpoint: GPT-2, BERT, ViT and "
                           "ResNet ones load into models gpt, bert, vit and resnet.")
  family, make = families[cls]
  return family, make(model)


BASE_PREFIX = ("transformer.", "bert.", "vit.", "resnet.")  # a base model (GPT2Model, BertModel...) saves without it


# ---- Import ----

def _tensor_files(directory):
  """{tensor name: the .safetensors file holding it}."""
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):  # a checkpoint saved in shards
    with open(index) as f:
      return {name: os.path.join(directory, file) for name, file in json.load(f)["weight_map"].items()}
  files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
  if not files:
    found = ", ".join(sorted(os.listdir(directory))) or "nothing"
    raise errors.NotFound(f"No model.safetensors in {directory} (it holds: {found}). bigmodel reads safetensors "
                          "only; save the model with save_pretrained(dir) (safetensors is its default).")
  from safetensors import safe_open
  out = {}
  for file in files:
    with _reading(file):
      with safe_open(file, "numpy") as f:
        out.update({name: file for name in f.keys()})
  return out


@contextlib.contextmanager
def _reading(file):
  """Turns safetensors' errors on a damaged file into one that names the file."""
  try:
    yield
  except Exception as e:
    size = os.path.getsize(file) if os.path.exists(file) else 0
    raise errors.UserError(f"Cannot read {file} ({size:,} bytes): {e}. The file is damaged or incomplete "
                           "(an interrupted download?): download or save it again.") from e


def _read(files, name):
  from safetensors import safe_open
  with _reading(files[name]):
    # Opened per tensor: its pages leave memory with it. bfloat16 reads as ml_dtypes' (imported by jax).
    with safe_open(files[name], "numpy") as f:
      return f.get_tensor(name)


OLD_NAMES = {".weight": ".gamma", ".bias": ".beta"}  # LayerNorms in the original BERT checkpoints (bert-base-uncased)


def _find(files, name):
  """The name tensor `name` (as transformers saves it today) has in `files`, or None: files on the hub may
  lack the task model's prefix (GPT-2's own has no `transformer.`) and name LayerNorms gamma and beta
  (transformers renames both on load)."""
  bare = [name, *(name[len(p):] for p in BASE_PREFIX if name.startswith(p))]
  for n in bare:
    for candidate in (n, *(n[:-len(new)] + old for new, old in OLD_NAMES.items() if n.endswith(new))):
      if candidate in files:
        return candidate
  return None


def load(name, model, params, model_state=None, reinit=()):
  """Returns (params, model_state, message): the arrays of checkpoint `name` in our layout.

  `model` is our model config section; `params` and `model_state` give each array's shape, dtype and
  sharding (arrays, or jax.ShapeDtypeStructs with shardings: nothing is initialised then). An array
  matching a `reinit` regex (our path, e.g. "^head/") keeps its value; so does a head the checkpoint
  lacks. A shape that does not fit names the parameter."""
  directory = local_dir(name)
  family = _family(read_config(directory))
  ours, table = _table(model)
  if ours != family:
    raise errors.UserError(f"init.hf={name!r} is a {family} checkpoint; model.name={model['name']!r} cannot take it. "
                           "Leave model.name out: the checkpoint's config.json chooses the model.")
  files = _tensor_files(directory)
  heads = {spec.head for spec in table.values() if spec.head and any(_find(files, n) for n in spec.names)}
  fresh, problems, used = [], [], set()

  def one(prefix):
    def put(ours, leaf):
      full = f"{prefix}/{ours}" if prefix == "params" else ours
      spec = table.get(full)
      found = None if spec is None else [_find(files, n) for n in spec.names]
      if spec is None or any(re.search(r, ours) for r in reinit) or (spec.head and spec.head not in heads):
        if isinstance(leaf, jax.ShapeDtypeStruct):
          raise errors.UserError(f"{full} is not in checkpoint {name!r} and has no initial value to keep.")
        fresh.append(ours)
        return leaf
      if None in found:
        missing = spec.names[found.index(None)]
        part = f" (its {spec.head} head is there in part)" if spec.head else ""
        raise errors.UserError(f"Checkpoint {name!r} has no tensor {missing!r} (for {full}){part}: is it complete?")
      value = spec.load([_read(files, n) for n in found], tuple(leaf.shape))
      if tuple(value.shape) != tuple(leaf.shape):
        problems.append(f"  {full}: checkpoint {', '.join(found)} gives {tuple(value.shape)}, this model has "
                        f"{tuple(leaf.shape)}")
        return leaf
      used.update(found)
      value = np.asarray(value, dtype=leaf.dtype)
      sharding = getattr(leaf, "sharding", None)
      return jax.device_put(value, sharding) if sharding is not None else value
    return put

  def load_tree(prefix, tree):
    """`tree` with its arrays read from the checkpoint, one layer at a time where its blocks are scanned: the
    table names unscanned blocks (models/stack.py)."""
    names, leaves, treedef = paths.flatten(tree)
    ours = [p.removeprefix("params/") if prefix == "params" else p for p in table]
    layers = stack.relayout(dict(zip(names, leaves)), ours)
    loaded = stack.relayout({path: one(prefix)(path, leaf) for path, leaf in layers.items()}, names)
    placed = lambda name, leaf: (jax.device_put(loaded[name], leaf.sharding)
                                 if stack.is_stacked(name) and getattr(leaf, "sharding", None) else loaded[name])
    return jax.tree.unflatten(treedef, [placed(name, leaf) for name, leaf in zip(names, leaves)])

  params = load_tree("params", params)
  model_state = load_tree("state", model_state or {})
  if problems:
    raise errors.UserError(f"Checkpoint {name!r} does not fit this model:\n" + "\n".join(problems) +
                           "\nLeave the model's sizes to the checkpoint's config.json, or start those arrays "
                           "afresh with init.reinit.")
  unused = sorted(set(files) - used - {n for n in files if n.endswith("num_batches_tracked")})
  message = (f"Initialised from Hugging Face checkpoint {name} ({family}): {len(used)} tensors; fresh: "
             f"{', '.join(fresh) or 'none'}; unused from the checkpoint: {', '.join(unused[:6]) or 'none'}"
             f"{' ...' if len(unused) > 6 else ''}")
  return params, model_state, message


# ---- Export ----

def hf_config(model, num_labels=None):
  """The config.json of a Hugging Face model computing what our `model` (config section) computes, or
  ValueError saying why there is none."""
  family, _ = _table(model)
  if family == "gpt2":
    reasons = [why for bad, why in (
        (not model.get("causal", True), "it is the pre-LayerNorm bidirectional encoder (bert_tiny ...), which no "
                                        "Hugging Face class computes; train model.name=bert for an exportable BERT"),
        (model.get("positions") == "rope", "it uses rotary positions; GPT-2 learns absolute ones"),
        (not model.get("tie_embeddings", True), "its lm_head is separate from the token embedding; GPT-2 ties them"),
        (model.get("pool", "none") != "none", "it is a classifier; GPT-2 exports as a language model only"))
        if bad]
    if reasons:
      raise errors.UserError(f"This GPT has no Hugging Face GPT-2 equivalent: {reasons[0]}.")
    return dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", n_layer=model["num_layers"],
                n_head=model["num_heads"], n_embd=model["dim"], n_inner=model["mlp_dim"] or 4 * model["dim"],
                n_positions=model["max_len"], vocab_size=model["vocab_size"] or model["num_outputs"],
                layer_norm_epsilon=model["ln_epsilon"], activation_function="gelu_new", tie_word_embeddings=True,
                bos_token_id=None, eos_token_id=None)
  if family == "bert":
    if model.get("pool") == "mean":
      raise errors.UserError("This BERT pools the mean of its hidden states (model.pool='mean'); Hugging Face's "
                             "BertForSequenceClassification reads the pooled [CLS] token. Train with model.pool=cls "
                             "for an exportable classifier.")
    classifier = model.get("pool", "none") == "cls"
    return dict(architectures=["BertForSequenceClassification" if classifier else "BertForMaskedLM"],
                model_type="bert", num_hidden_layers=model["num_layers"], num_attention_heads=model["num_heads"],
                hidden_size=model["dim"], intermediate_size=model["mlp_dim"], max_position_embeddings=model["max_len"],
                vocab_size=model["vocab_size"] or model["num_outputs"], type_vocab_size=model["type_vocab_size"],
                layer_norm_eps=model["ln_epsilon"], hidden_act="gelu", tie_word_embeddings=True,
                **({"num_labels": num_labels or model["num_outputs"]} if classifier else {}))
  raise errors.UserError(f"model.name={model['name']!r} has no Hugging Face export: bigmodel exports GPT-2-shaped "
                         "(model.name=gpt) and BERT-shaped (model.name=bert) models.")


def save(directory, model, params, tokenizer=None):
  """Writes `params` of our `model` (config section) as a Hugging Face checkpoint in `directory`:
  config.json, model.safetensors and, for a Hugging Face tokenizer, tokenizer.json."""
  from safetensors.numpy import save_file
  config = hf_config(model)
  _, table = _table(model)
  names, leaves, _ = paths.flatten({"params": params})
  tensors = {}
  for path, leaf in stack.relayout(dict(zip(names, leaves)), table).items():  # scanned blocks one by one
    spec = table.get(path)
    if spec is None or spec.save is None:
      raise errors.UserError(f"{path} has no place in a Hugging Face {config['architectures'][0]}.")
    tensors.update(zip(spec.names, (np.ascontiguousarray(np.asarray(a, np.float32)) for a in spec.save(leaf))))
  os.makedirs(directory, exist_ok=True)
  save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  if tokenizer is not None and getattr(tokenizer, "kind", None) == "hf":
    tokenizer.save(directory)
  return config
