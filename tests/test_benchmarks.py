"""benchmarks/accelerator.py cannot rot: its --tiny run goes through every code path an accelerator run does."""
import re

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow  # the whole module: the fast tier (-m 'not slow') leaves it out


@pytest.mark.needs("fashion_mnist")
def test_the_accelerator_benchmark_runs_tiny_and_prints_every_row(tmp_path):
  out = run_cli("benchmarks.accelerator", "--tiny", f"--workdir={tmp_path}").stdout
  rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", out, re.M))
  number = r"[\d,]+(\.\d+)?"
  assert re.match(r"1 x cpu \(cpu\)", rows["devices"]), out
  assert re.match(rf"{number} TFLOP/s", rows["bf16 matmul peak"]), out
  gpt = next(k for k in rows if k.startswith("GPT ("))
  assert "scanned layers, xla attention" in gpt and re.match(r"\d+ \(the largest power of two that fits in 0.02 GiB\)",
                                                            rows[gpt]), out
  for key in ("  compile", "  tokens/s", "  model FLOP/s", "  MFU"):
    assert re.match(number, rows[key]) and float(re.match(number, rows[key])[0].replace(",", "")) > 0, (key, out)
  resnet = next(k for k in rows if k.startswith("ResNet-10 (--tiny), Fashion-MNIST, 3 steps of 16"))
  assert float(rows[resnet].replace(",", "")) > 0 and re.match(rf"{number}%", rows["  test accuracy"]), out
  served = rows["Exported, served, one POST /v1/classify"]
  assert re.match(r"200, label '[^']+' \(true: '[^']+'\), \d+ ms round trip", served), out
