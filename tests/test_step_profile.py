"""benchmarks/step_profile.py's reading of a compiled step: op kinds, dot shapes, and torch's equivalent dots."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from benchmarks import step_profile


def compiled_ops(fn, *args):
  computations = step_profile.hlo_ops(jax.jit(fn).lower(*args).compile().as_text())
  return computations["ENTRY"], computations


def test_a_compiled_steps_ops_sort_into_dots_reductions_and_elementwise():
  x, w = jnp.ones((64, 32)), jnp.ones((32, 16))
  entry, computations = compiled_ops(lambda x, w: (jnp.tanh(x @ w).sum(0), jnp.exp(x) * 2), x, w)
  kinds = [step_profile.kind(computations, opcode, attributes) for _, opcode, _, attributes in entry.values()]
  assert "dots" in kinds and "reductions" in kinds and "elementwise" in kinds, kinds
  assert kinds.count("dots") == 1
  ((lhs, rhs, numbers), names), = step_profile.dot_shapes(entry).items()
  assert (lhs, rhs, numbers) == ((64, 32), (32, 16), (((1,), (0,)), ((), ()))) and len(names) == 1


@pytest.mark.parametrize("lhs,rhs,numbers", [
    ((6, 4), (4, 5), (((1,), (0,)), ((), ()))),  # x @ w
    ((6, 4), (5, 6), (((0,), (1,)), ((), ()))),  # both transposed, as XLA's kernel gradients
    ((6, 4), (5, 4), (((1,), (1,)), ((), ()))),
    ((2, 3, 6, 4), (2, 3, 4, 5), (((3,), (2,)), ((0, 1), (0, 1)))),  # attention's batched dots
    ((2, 3, 4), (3, 4, 5), (((1, 2), (0, 1)), ((), ()))),  # two contracting axes
])
def test_the_torch_dot_equals_lax_dot_general(lhs, rhs, numbers):
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal(lhs, np.float32), rng.standard_normal(rhs, np.float32)
  want = np.asarray(jax.lax.dot_general(a, b, numbers))
  got = step_profile.torch_dot(torch, numbers)(torch.from_numpy(a), torch.from_numpy(b)).numpy()
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
