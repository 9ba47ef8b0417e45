"""Chat templates: how a conversation becomes the text an instruction-tuned model was trained on.

A checkpoint carries its template as Jinja source: `chat_template` in tokenizer_config.json (or the
chat_template.jinja beside it, as transformers 5 saves it), or `tokenizer.chat_template` in a GGUF
file's metadata, which huggingface/gguf.py puts into the tokenizer_config.json of the tokenizer it
builds. Either way it reaches here through the tokenizer (tokenizers.HfTokenizer), so a run, its
exports and a server find it where they find the tokenizer:

    template = chat.template(tokenizer)            # None: this model has no chat template
    text = template.render([{"role": "user", "content": "Hi"}])   # ends with the assistant's header
    ids = template.encode(messages)                # == transformers' apply_chat_template(..., tokenize=True)
    template.end_of_turn_id                        # the token that closes a reply: <|im_end|>, <|eot_id|>, ...
    template.stop_ids                              # where generation stops: the end of turn and the end of text

Rendering is transformers' (apply_chat_template): Jinja's immutable sandbox, trim_blocks and lstrip_blocks,
the loopcontrols extension, `raise_exception`, `strftime_now` and a `tojson` that keeps non-ASCII text,
the tokenizer's special tokens as variables (bos_token, eos_token, ...); the text is then tokenized
without adding special tokens (the template writes them).
"""
import dataclasses
import datetime
import functools
import json

from bigmodel import errors

CONFIG = "tokenizer_config.json"
JINJA = "chat_template.jinja"  # transformers 5 saves the template in a file of its own
ROLES = ("system", "user", "assistant", "tool")


@functools.lru_cache(maxsize=16)
def _compile(source):
  import jinja2
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  def raise_exception(message):  # templates refuse a conversation they cannot render with it
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):  # Jinja's escapes HTML
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda format: datetime.datetime.now().strftime(format)
  try:
    return env.from_string(source)
  except jinja2.exceptions.TemplateSyntaxError as e:
    raise errors.UserError(f"The chat template does not parse (line {e.lineno}: {e.message}).") from e


@dataclasses.dataclass
class ChatTemplate:
  source: str  # the Jinja text
  tokenizer: object  # the tokenizers.HfTokenizer whose special tokens the template names and whose ids it gives
  special_tokens: dict  # bos_token, eos_token, ... -> their text: the template's variables

  def render(self, messages, add_generation_prompt=True) -> str:
    """The conversation as the model's text; with `add_generation_prompt`, ending where the assistant's reply
    starts. `messages`: [{"role": "system" | "user" | "assistant" | "tool", "content": str}, ...]."""
    check(messages)
    import jinja2
    try:
      return _compile(self.source).render(messages=messages, tools=None, documents=None,
                                          add_generation_prompt=add_generation_prompt, **self.special_tokens)
    except jinja2.exceptions.TemplateError as e:  # raise_exception() in the template: it says why
      raise errors.UserError(f"The chat template refuses this conversation: {e}") from e

  def encode(self, messages, add_generation_prompt=True):
    """The token ids of `render`: the template writes the special tokens, so none are added."""
    import numpy as np
    text = self.render(messages, add_generation_prompt)
    return np.asarray(self.tokenizer.tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  @functools.cached_property
  def end_of_turn_id(self):
    """The token that ends a reply: the first special token the template writes after an assistant's
    message (<|im_end|> for ChatML, <|eot_id|> for Llama 3, </s> for Llama 2); the tokenizer's end of text
    where the template writes none."""
    mark = "\ue000bigmodel\ue000"  # a private-use string no template writes
    rendered = self.render([{"role": "user", "content": "?"}, {"role": "assistant", "content": mark}],
                           add_generation_prompt=False)
    after = rendered.split(mark, 1)[1] if mark in rendered else ""
    special = {t.content for t in self.tokenizer.tokenizer.get_added_tokens_decoder().values() if t.special}
    for token in self.tokenizer.tokenizer.encode(after, add_special_tokens=False).tokens:
      if token in special:
        return self.tokenizer.tokenizer.token_to_id(token)
    return self.tokenizer.eos_id

  @property
  def stop_ids(self):
    """Where a reply ends: the end of turn, and the end of text where it differs (Llama 3 ends a turn with
    <|eot_id|> but may also draw <|end_of_text|>, as transformers' generation config lists both)."""
    return tuple(dict.fromkeys(t for t in (self.end_of_turn_id, self.tokenizer.eos_id) if t is not None))


def check(messages):
  """Refuses what no template renders well: not a non-empty list of {"role", "content": str} with a known role."""
  if not isinstance(messages, (list, tuple)) or not messages:
    raise errors.UserError("messages must be a non-empty list of {\"role\": ..., \"content\": ...}.")
  for i, m in enumerate(messages):
    if not isinstance(m, dict) or m.get("role") not in ROLES:
      role = m.get("role") if isinstance(m, dict) else None
      raise errors.UserError(f"messages[{i}] has role {role!r}; a message's role is one of {', '.join(ROLES)}.")
    if not isinstance(m.get("content"), str):
      raise errors.UserError(f"messages[{i}].content must be a string, not {type(m.get('content')).__name__}.")


def template(tokenizer):
  """The ChatTemplate of `tokenizer` (a tokenizers.HfTokenizer: its tokenizer_config.json's chat_template,
  or chat_template.jinja), or None if it has none (a base model, or a tokenizer of ours)."""
  companions = getattr(tokenizer, "companions", None) or {}
  config = json.loads(companions.get(CONFIG) or "{}")
  source = companions.get(JINJA) or config.get("chat_template")
  if isinstance(source, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
    source = next((t["template"] for t in source if t.get("name") == "default"), None)
  if not source:
    return None
  special = {}
  for role in ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"):
    token = config.get(role)
    token = token.get("content") if isinstance(token, dict) else token
    if token is not None:
      special[role] = token
  return ChatTemplate(source, tokenizer, special)
