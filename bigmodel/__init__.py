"""bigmodel: train CNNs, RNNs and Transformers from experiment configs with JAX/Flax."""
