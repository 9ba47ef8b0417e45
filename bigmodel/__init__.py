"""bigmodel: train CNNs, RNNs and Transformers from experiment configs with JAX/Flax."""
import time

STARTED = time.perf_counter()  # for "time to first step": set before jax and the rest import

from bigmodel import platform  # noqa: E402

platform.set_xla_flags()  # before jax starts a backend
