"""model.json: what an exported model is, written by bigmodel/export.py and read by bigmodel/artifact.py
(and shown by the server). Its fields are declared once, here, each with its meaning.
"""
import dataclasses

FORMAT = "bigmodel.export/3"  # 2: language models export prefill and decode with their KV cache; 3: of any length
TASKS = ("classify", "generate")
INPUT_KEYS = {"classify": ("kind", "shape", "dtype"), "generate": ("kind", "context", "vocab_size")}


def _field(meaning, **kw):
  return dataclasses.field(metadata=dict(meaning=meaning), **kw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelJson:
  format: str = _field("this schema's version: FORMAT", default=FORMAT)
  task: str = _field("classify (forward.jax: logits) | generate (prefill.jax and decode.jax: the KV-cache path)")
  input: dict = _field("what the functions take. generate: kind='tokens', context (positions), vocab_size, "
                       "eos_id (the end-of-text token, where generation stops; None: none), end_of_turn_id (a model "
                       "with a chat template: the token that ends a reply, where a chat completion stops). classify: "
                       "kind='text' | 'array', shape (one example's), dtype (raw, as the dataset holds it)")
  labels: list | None = _field("classify: the class names (None: numbered)", default=None)
  output: str | None = _field("classify: softmax (one class) | sigmoid (each class on its own)", default=None)
  weights: list = _field("[{path, shape, dtype}]: the functions' first argument, in order (weights.npz by path)")
  source: dict | None = _field("the run: {workdir, step, data (its name), model (the config's model section)}; a "
                                "published checkpoint exported without one (published.py): {checkpoint, model}",
                                default=None)
  platforms: list | None = _field("where the functions run (jax.export's platforms: cpu, cuda)", default=None)
  jax_version: str | None = _field("the jax that exported them (another may not read them)", default=None)

  def to_json(self):
    """The dict model.json holds (fields that are None left out)."""
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

  @classmethod
  def from_json(cls, spec):
    """The ModelJson of a model.json's dict; a ValueError that says what is wrong with it."""
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
      found = spec.get("format") if isinstance(spec, dict) else None
      raise ValueError(f"has format {found!r}; this loader reads {FORMAT!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in spec]
    if not missing and spec["task"] not in TASKS:
      missing = [f"a known task (not {spec['task']!r})"]
    if not missing:
      missing = [f"input.{k}" for k in INPUT_KEYS[spec["task"]] if k not in (spec["input"] or {})]
    if missing:
      raise ValueError(f"is incomplete: missing {', '.join(missing)}")
    return cls(**{k: v for k, v in spec.items() if k in names})
