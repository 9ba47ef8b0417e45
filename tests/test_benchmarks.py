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


def test_the_llama_import_benchmark_loads_sharded_files_onto_8_fsdp_devices():
  out = run_cli("benchmarks.hf_import", "--family=llama", "--layers=2", "--dim=512", "--repeats=1").stdout
  row = re.search(r"^\| Llama 2 x 512, float32 \| ([\d,]+) \| .+ \| 8 \| .+ \| ([\d.]+)x \|$", out, re.M)
  # 2 blocks of 8 query and 4 key/value heads of 64 and a 5,632-wide MLP; a 32,000-token embedding and head.
  assert row and int(row[1].replace(",", "")) == 2 * (2 * 512 * 512 + 2 * 256 * 512 + 3 * 512 * 5632 + 2 * 512) + \
      2 * 32_000 * 512 + 512, out
  assert "token embedding shard per device: [32000, 64]" in out  # split over fsdp=8 along its width


def test_the_fits_report_compiles_the_train_step_for_each_device_count():
  out = run_cli("benchmarks.fits", "--model=llama_tiny", "--devices=1,16", "--seq_len=64", "--vocab=999").stdout
  rows = re.findall(r"^\| (\d+) \| ([\d.]+) MB \| ([\d.]+) MB \| ([\d.]+) MB \|", out, re.M)
  assert [r[0] for r in rows] == ["1", "16"], out
  (_, params_1, adam_1, temp_1), (_, params_16, adam_16, temp_16) = [[float(x) for x in r] for r in rows]
  assert params_16 < params_1 / 8 and adam_16 < adam_1 / 8, out  # FSDP: each device holds about a sixteenth
  assert abs(adam_1 - 2 * params_1) < 0.2, out  # AdamW: two moments per float32 weight
  # Each device computes its own sequence's activations, not the global batch's (models/stack.py, batch_split):
  # without the constraint 16 devices each held more temporaries than the one device did.
  assert 0 < temp_16 < temp_1, out
