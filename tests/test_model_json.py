"""model.json, an export's description (bigmodel/model_json.py): one declaration that export writes and
artifact reads. The round trip through a real export is in test_serve.py; here, the declaration itself."""
import dataclasses
import json

import pytest

from bigmodel.model_json import FORMAT, ModelJson

LM = dict(task="generate", input=dict(kind="tokens", context=16, vocab_size=50, eos_id=None),
          weights=[dict(path="params/embed/embedding", shape=[50, 8], dtype="float32")],
          source=dict(workdir="/runs/x", step=3, data="shakespeare", model=dict(name="gpt")),
          platforms=["cpu"], jax_version="0.10.2")


def test_every_field_says_what_it_means_and_a_model_json_reads_back_as_written():
  assert all(f.metadata.get("meaning") for f in dataclasses.fields(ModelJson))
  written = json.loads(json.dumps(ModelJson(**LM).to_json()))
  assert written["format"] == FORMAT and "labels" not in written  # a language model has no labels
  assert ModelJson.from_json(written) == ModelJson(**LM)


@pytest.mark.parametrize("change, message", [
    (dict(format="bigmodel.export/2"), "has format 'bigmodel.export/2'; this loader reads"),
    (dict(task="translate"), "missing a known task (not 'translate')"),
    (dict(input=dict(kind="tokens", vocab_size=50)), "missing input.context"),
    (dict(weights=None), "missing weights"),
])
def test_a_model_json_without_what_its_task_needs_is_refused_by_name(change, message):
  spec = {**ModelJson(**LM).to_json(), **change}
  spec = {k: v for k, v in spec.items() if v is not None}
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    ModelJson.from_json(spec)
