"""What bigmodel does differently per platform, in one place: the CPU entries are measured
workarounds (2-core CPU, jax 0.10.2) that leave GPU and TPU alone; `nvidia_gpu` tells the
attention layers where cuDNN's fused kernel exists (models/attention.py).

The train step and the trainer read as the algorithm; they ask here how to compile and dispatch.
"""
import contextlib
import contextvars
import functools
import os


OURS = " --xla_cpu_experimental_ynn_fusion_type="  # what set_xla_flags adds
# XLA_FLAGS as the user set them: without what set_xla_flags added, here or in a parent process (which marks it).
_GIVEN_XLA_FLAGS = os.environ.get("XLA_FLAGS", "").removesuffix(OURS if os.environ.get("BIGMODEL_XLA_FLAGS") else "")


def set_xla_flags():
  """XLA's CPU "YNN" fusions made convolutions 1.8-3x slower here (ResNet-18 train step 3.6 s ->
  1.2 s): turned off unless XLA_FLAGS already sets them. Runs before jax starts a backend (from
  bigmodel/__init__.py); GPU and TPU ignore the flag."""
  if "xla_cpu_experimental_ynn_fusion_type" not in _GIVEN_XLA_FLAGS:
    os.environ["XLA_FLAGS"], os.environ["BIGMODEL_XLA_FLAGS"] = _GIVEN_XLA_FLAGS + OURS, "added"


def decode_compiler_options():
  """Prefill and decode steps (decoding.py) run their matrix products in XLA:CPU's YNN fusions, which
  multiply the few rows of a decode step faster than Eigen does (SmolLM2-135M, 2-core Xeon: a step of 8
  rows 109-112 -> 91-92 ms, a prefill of 64 tokens 196-216 -> 138-154 ms, one row unchanged; the server at 8
  clients 38 -> 50-52 tokens/s). Per compilation, so training in the same process keeps Eigen (see
  set_xla_flags), and only where XLA_FLAGS does not choose YNN fusions itself."""
  import jax
  if jax.default_backend() != "cpu" or "xla_cpu_experimental_ynn_fusion_type" in _GIVEN_XLA_FLAGS:
    return None
  return {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def init_compiler_options():
  """Initialisation runs once: on CPU, compiling it without LLVM optimisation takes 0.6 s instead
  of 2.6 s (threefry code for the random draws). Train and eval steps keep full optimisation."""
  import jax
  return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


def must_block_each_step(mesh) -> bool:
  """XLA's CPU collectives deadlock when many multi-device steps are in flight."""
  import jax
  return mesh.devices.size > 1 and jax.default_backend() == "cpu"


def repeat_steps(one_step, state, columns, num_steps):
  """`num_steps` calls of `one_step(state, column) -> (state, metrics)` in one dispatch, step i
  reading column i (axis 1) of `columns`; metrics come back as K-long arrays (K = the columns).

  With K > 1 the steps run in a `lax.fori_loop` with a traced trip count (num_steps <= K), so
  calls of any length share one compilation. K = 1 runs without a loop: XLA:CPU compiles
  convolutions inside loops without Eigen, 3-4x slower (jax#12868)."""
  import jax
  import jax.numpy as jnp
  K = jax.tree.leaves(columns)[0].shape[1]
  column = lambda i: jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, 1, keepdims=False), columns)
  if K == 1:
    state, step_metrics = one_step(state, column(0))
    return state, jax.tree.map(lambda v: v[None], step_metrics)

  def body(i, carry):
    state, metrics_K = carry
    state, step_metrics = one_step(state, column(i))
    return state, jax.tree.map(lambda buf, v: buf.at[i].set(v), metrics_K, step_metrics)

  shapes = jax.eval_shape(one_step, state, column(0))[1]
  metrics_K = jax.tree.map(lambda s: jnp.zeros((K, *s.shape), s.dtype), shapes)
  return jax.lax.fori_loop(0, num_steps, body, (state, metrics_K))


def dense_dot_general():
  """The `dot_general` of the Transformers' dense layers (models/layers.py); None is lax.dot_general.

  On CPU, one whose backward computes the kernel's gradient as (cotangentᵀ · inputs)ᵀ, the cotangent
  as the dot's left operand, where jax's own transpose makes it the right one. Same products, same
  sums; what changes is which operand XLA:CPU copies into the transposed layout its dot reads: the
  inputs (already in memory) instead of the cotangent, into whose transposing copy it otherwise fuses
  the elementwise ops that make the cotangent (GELU's derivative: 6-8 ms for each of gpt_char's MLPs
  without biases where 1 ms does; with biases the bias gradient happened to make XLA keep it in memory).
  GPU and TPU keep lax.dot_general, and so do rematerialised blocks (`plain_dense`): XLA:CPU saved no
  memory with remat around this custom_vjp. Its output is named DENSE_MATMUL, so that remat policies that
  keep matmul outputs (models/stack.py) keep it too: a custom_vjp hides the dot_general inside it from them."""
  import jax
  return _kernel_grad_as_lhs() if jax.default_backend() == "cpu" and not _PLAIN_DENSE.get() else None


DENSE_MATMUL = "dense_matmul"
_PLAIN_DENSE = contextvars.ContextVar("plain_dense", default=False)


@contextlib.contextmanager
def plain_dense(plain=True):
  """Within it (while a model is traced), dense layers built use lax.dot_general (see dense_dot_general)."""
  token = _PLAIN_DENSE.set(plain)
  try:
    yield
  finally:
    _PLAIN_DENSE.reset(token)


@functools.cache
def _kernel_grad_as_lhs():
  import jax
  import jax.ad_checkpoint
  from jax import lax

  @functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
  def matmul(x, kernel, precision):
    return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)

  def backward(precision, residuals, g):
    x, kernel = residuals
    dx = lax.dot_general(g, kernel, (((g.ndim - 1,), (1,)), ((), ())), precision=precision)
    g_NxF, x_NxD = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1])
    return dx, lax.dot_general(g_NxF, x_NxD, (((0,), (0,)), ((), ())), precision=precision).T

  matmul.defvjp(lambda x, kernel, precision: (matmul(x, kernel, precision), (x, kernel)), backward)

  def dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    if dimension_numbers != (((x.ndim - 1,), (0,)), ((), ())) or preferred_element_type is not None:
      return lax.dot_general(x, kernel, dimension_numbers, precision, preferred_element_type)
    return jax.ad_checkpoint.checkpoint_name(matmul(x, kernel, precision), DENSE_MATMUL)

  return dot_general


def nvidia_gpu() -> bool:
  """Whether the default devices are NVIDIA GPUs (CUDA, so cuDNN), not ROCm ones, a TPU or the CPU."""
  import jax
  return jax.default_backend() == "gpu" and "cuda" in jax.devices()[0].client.platform_version.lower()


def use_compilation_cache(setting, path):
  """Turns on JAX's persistent compilation cache, so a rerun (of the same config, or a server of the
  same export) loads what it compiled instead of compiling again. `setting`: "auto" = a .jax_cache
  next to `path` (a workdir or a model dir: runs/x -> runs/.jax_cache), "" = off, or a directory.
  JAX_COMPILATION_CACHE_DIR, if set, wins."""
  import jax
  if not setting or jax.config.jax_compilation_cache_dir:
    return
  cache = os.path.join(os.path.dirname(os.path.abspath(path)), ".jax_cache") if setting == "auto" else setting
  jax.config.update("jax_compilation_cache_dir", cache)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)  # small models recompile fast, but often
