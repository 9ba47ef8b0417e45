"""Chat templates (bigmodel/chat.py): the ids of a rendered conversation equal transformers'
apply_chat_template(..., add_generation_prompt=True) for SmolLM2's template (from its GGUF file), Llama 3's
and Qwen2's (written into tiny checkpoints as their hubs hold them); each template's end of turn; the
template travels with the tokenizer; the sandbox and bad conversations give a user error."""
import json
import os

import pytest

transformers = pytest.importorskip("transformers")

from bigmodel import chat, errors, tokenizers  # noqa: E402
from hf_checkpoints import smollm2_gguf, text  # noqa: E402

# Meta-Llama-3-8B-Instruct's tokenizer_config.json chat_template, as published.
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
          "{% endif %}")
# Qwen2-Instruct's, as published: a default system message when the conversation has none.
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
         "You are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
         "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
         "{{ '<|im_start|>assistant\n' }}{% endif %}")
CHECKPOINTS = {  # template, special tokens, BOS, EOS, the end of turn
    "llama3": (LLAMA3, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                        "<|eot_id|>"], "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"),  # its first release's EOS
    "qwen2": (QWEN2, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", "<|im_end|>"),
}

CONVERSATIONS = {
    "single turn": [{"role": "user", "content": "What is the capital of France?"}],
    "single turn with a system message": [{"role": "system", "content": "Answer in one word."},
                                          {"role": "user", "content": "Capital of France?  "}],
    "multi-turn": [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello. How can I help?"},
                   {"role": "user", "content": "Café naïve 🎭 — 日本語?\n\nTwo lines."}],
    "multi-turn with a system message": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3 + 3?"}],
}


def chat_checkpoint(directory, name):
  """A byte-level BPE learnt here with `name`'s special tokens and chat template, saved by transformers as a
  hub checkpoint's tokenizer (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
  template, specials, bos, eos, _ = CHECKPOINTS[name]
  bpe = Tokenizer(models.BPE())
  bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  bpe.decoder = decoders.ByteLevel()
  bpe.train_from_iterator([text()[:100_000]], trainers.BpeTrainer(
      vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=specials,
      show_progress=False))
  if bos:  # Llama 3 adds BOS to every text; its template writes BOS itself, and apply_chat_template adds none
    bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bpe.token_to_id(bos))])
  tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos, eos_token=eos)
  tok.chat_template = template
  tok.save_pretrained(str(directory))
  return str(directory)


def expected_ids(reference, messages):
  out = reference.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
  return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.fixture(scope="module", params=sorted(CHECKPOINTS))
def checkpoint(request, tmp_path_factory):
  return request.param, chat_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


def test_rendered_ids_equal_transformers_apply_chat_template(checkpoint):
  name, directory = checkpoint
  template = chat.template(tokenizers.load(directory))
  reference = transformers.AutoTokenizer.from_pretrained(directory)
  for what, messages in CONVERSATIONS.items():
    assert template.encode(messages).tolist() == expected_ids(reference, messages), (name, what)
    assert template.render(messages) == reference.apply_chat_template(messages, add_generation_prompt=True,
                                                                       tokenize=False), (name, what)
  without = template.render(CONVERSATIONS["multi-turn"], add_generation_prompt=False)
  assert template.render(CONVERSATIONS["multi-turn"]).startswith(without) and without != \
      template.render(CONVERSATIONS["multi-turn"])


def test_the_end_of_turn_is_the_token_the_template_closes_a_reply_with(checkpoint):
  name, directory = checkpoint
  tok = tokenizers.load(directory)
  assert chat.template(tok).end_of_turn_id == tok.tokenizer.token_to_id(CHECKPOINTS[name][4])


def test_generation_stops_at_the_end_of_turn_and_at_the_end_of_text_as_transformers_generation_config_lists(
    checkpoint):
  """Llama 3's turn ends with <|eot_id|>, its text with <|end_of_text|>: a reply stops at either (Meta's
  generation_config.json lists both as eos_token_id); Qwen2's are one token, listed once."""
  name, directory = checkpoint
  tok = tokenizers.load(directory)
  ids = [tok.tokenizer.token_to_id(CHECKPOINTS[name][i]) for i in (4, 3)]
  assert chat.template(tok).stop_ids == tuple(dict.fromkeys(ids)) and len(set(ids)) == {"llama3": 2, "qwen2": 1}[name]


@pytest.mark.slow  # the real 98 MB SmolLM2 file (its GGUF reader alone takes ~10 s): the full suite runs it
def test_smollm2s_template_from_its_gguf_file_gives_transformers_ids():
  from bigmodel.huggingface import gguf
  path = smollm2_gguf()
  template = chat.template(gguf.tokenizer(path))
  reference = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
  for what, messages in CONVERSATIONS.items():
    assert template.encode(messages).tolist() == expected_ids(reference, messages), what
  assert "You are a helpful AI assistant named SmolLM" in template.render(CONVERSATIONS["single turn"])
  assert template.end_of_turn_id == reference.convert_tokens_to_ids("<|im_end|>")


def test_the_template_travels_with_the_saved_tokenizer_both_ways(checkpoint, tmp_path):
  name, directory = checkpoint
  assert os.path.exists(os.path.join(directory, chat.JINJA))  # transformers 5 saves it apart
  tok = tokenizers.load(directory)
  tok.save(str(tmp_path))  # what a run's workdir and every export hold
  again = chat.template(tokenizers.load(str(tmp_path)))
  messages = CONVERSATIONS["multi-turn with a system message"]
  assert again.render(messages) == chat.template(tok).render(messages)
  assert expected_ids(transformers.AutoTokenizer.from_pretrained(str(tmp_path)), messages) == \
      again.encode(messages).tolist()


def test_a_tokenizer_without_a_template_has_none(tmp_path):
  assert chat.template(tokenizers.build("byte")) is None
  bare = os.path.join(chat_checkpoint(tmp_path, "qwen2"), chat.JINJA)
  os.remove(bare)
  config = json.load(open(tmp_path / chat.CONFIG))
  config.pop("chat_template", None)
  json.dump(config, open(tmp_path / chat.CONFIG, "w"))
  assert chat.template(tokenizers.load(str(tmp_path))) is None


@pytest.mark.parametrize("messages, message", [
    ([], "non-empty list"),
    ([{"content": "hi"}], "role None"),
    ([{"role": "wizard", "content": "hi"}], "role 'wizard'"),
    ([{"role": "user", "content": ["hi"]}], "content must be a string, not list"),
])
def test_a_bad_conversation_is_a_user_error_naming_the_problem(checkpoint, messages, message):
  template = chat.template(tokenizers.load(checkpoint[1]))
  with pytest.raises(errors.UserError, match=message):
    template.render(messages)


def test_a_template_runs_in_jinjas_sandbox_and_its_refusals_are_user_errors(checkpoint):
  tok = tokenizers.load(checkpoint[1])
  refusing = chat.ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations start "
                               "with the user') }}{% endif %}", tok, {})
  with pytest.raises(errors.UserError, match="refuses this conversation: Conversations start with the user"):
    refusing.render([{"role": "assistant", "content": "hi"}])
  mutating = chat.ChatTemplate("{{ messages.append({'role': 'user', 'content': 'injected'}) }}", tok, {})
  with pytest.raises(errors.UserError, match="refuses this conversation"):
    mutating.render([{"role": "user", "content": "hi"}])
  escaping = chat.ChatTemplate("{{ messages.__class__.__mro__ }}", tok, {})
  with pytest.raises(errors.UserError):
    escaping.render([{"role": "user", "content": "hi"}])
