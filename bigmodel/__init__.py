"""bigmodel: train CNNs, RNNs and Transformers from experiment configs with JAX/Flax."""
import os
import time

STARTED = time.perf_counter()  # for "time to first step": set before jax and the rest import

# XLA's CPU "YNN" fusions made convolutions 1.8-3x slower here (jax 0.10.2, 2-core CPU:
# ResNet-18 train step 3.6 s -> 1.2 s); turned off unless XLA_FLAGS already sets them.
# Must happen before jax starts a backend; GPU and TPU ignore it.
if "xla_cpu_experimental_ynn_fusion_type" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_experimental_ynn_fusion_type=").strip()
