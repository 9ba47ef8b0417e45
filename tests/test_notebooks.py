"""The Colab notebooks run top to bottom on a CPU (tiny sizes) and are committed without outputs."""
import asyncio
import math
import os
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import missing_dataset

pytestmark = pytest.mark.slow  # the whole module: the fast tier (-m 'not slow') leaves it out

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
# Each notebook: the plots it must draw and the metrics its `FINAL name=value` line must state.
EXPECTED = {
    "01_quickstart.ipynb": (2, {"test_accuracy"}),  # training curve, confusion matrix
    "02_language_model.ipynb": (1, {"val_loss"}),  # loss
    "03_pretrain_finetune.ipynb": (2, {"finetuned_accuracy", "scratch_accuracy",  # LM loss, comparison
                                       "gpt2_accuracy"}),
}
FINAL = re.compile(r"^FINAL ((?:\w+=\S+ ?)+)$", re.M)


def read(name):
  return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def test_every_notebook_is_listed_here():
  assert sorted(f for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_committed_notebook_has_no_outputs_the_shared_setup_cell_and_a_readme_badge(name):
  nb = read(name)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.outputs == [] and c.execution_count is None for c in code), \
      f"{name} holds outputs: clear them (Jupyter: Edit > Clear outputs of all cells) before committing."
  first = [c for c in read("01_quickstart.ipynb").cells if c.cell_type == "code"][0]
  assert code[0].source == first.source, f"{name}: its setup cell differs from 01_quickstart.ipynb's"
  readme = open(os.path.join(ROOT, "README.md")).read()
  assert f"https://colab.research.google.com/github/bigmodel-dev/bigmodel/blob/main/notebooks/{name}" in readme


NEEDS = {"03_pretrain_finetune.ipynb": ("fine_foods",)}  # optional datasets (conftest.py)


def runnable(name):
  return pytest.param(name, marks=pytest.mark.needs(*NEEDS.get(name, ())))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """{name: (executed notebook, its error or None, its runs dir)}: all notebooks at once, tiny sizes.

  Each kernel is its own process, so one notebook's compiles overlap another's: on 2 cores the
  three take little longer than the slowest alone. A cell error is kept for that notebook's test."""
  runs = tmp_path_factory.mktemp("runs")
  notebooks = {name: read(name) for name in EXPECTED if not any(map(missing_dataset, NEEDS.get(name, ())))}
  runs_of = {name: runs / name.removesuffix(".ipynb") for name in EXPECTED}
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as on a CPU runtime
  env.update(BIGMODEL_NOTEBOOK_TINY="1",
             IPYTHONDIR=str(runs / ".ipython"),  # no user profile or startup files
             TFDS_DATA_DIR=str(runs / "tfds"))  # MNIST-1D is generated here, not in the home directory
  with pytest.MonkeyPatch.context() as here:
    # This environment's kernelspec first: its "python" means sys.executable, this interpreter.
    here.setenv("JUPYTER_PATH", os.path.join(sys.prefix, "share", "jupyter"))
    # Run in notebooks/, as Jupyter started there; a cell error raises CellExecutionError.
    clients = {name: NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}})
               for name, nb in notebooks.items()}

    async def run_all():
      return await asyncio.gather(*(
          client.async_execute(env={**env, "BIGMODEL_NOTEBOOK_RUNS": str(runs_of[name])})
          for name, client in clients.items()), return_exceptions=True)

    outcomes = asyncio.run(run_all())
  return {name: (nb, out if isinstance(out, BaseException) else None, runs_of[name])
          for (name, nb), out in zip(notebooks.items(), outcomes)}


@pytest.mark.parametrize("name", [runnable(name) for name in sorted(EXPECTED)])
def test_notebook_runs_top_to_bottom_and_shows_its_plots_and_final_metric(name, executed):
  nb, error, runs = executed[name]
  if error is not None:
    raise error
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  plots, want = EXPECTED[name]
  assert sum("image/png" in o.get("data", {}) for o in outputs) >= plots
  stdout = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
  assert "sizes: tiny" in stdout and "device(s)" in stdout  # the setup cell found the devices
  finals = FINAL.findall(stdout)
  assert len(finals) == 1, stdout[-2000:]
  metrics = dict(pair.split("=") for pair in finals[0].split())
  assert set(metrics) == want and all(math.isfinite(float(v)) for v in metrics.values()), metrics
  assert os.listdir(runs) == ["tiny"]  # the workdirs went where the test said
