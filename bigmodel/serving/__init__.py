"""The HTTP server over one exported model (`python -m bigmodel.serve`, bigmodel/serve.py).

  options.py   the server's options: each flag's default, meaning and range, one Options object
  http.py      the transport: route table, bodies, JSON, server-sent events, the error shape
  requests.py  one request type per endpoint: its fields' defaults, ranges and parsing
  stops.py     stop strings: where a text ends, and what a stream holds back
  batching.py  how requests share model calls: classifier batches, continuous batching (decoding.Slots)
  openai.py    OpenAI's reply shapes: a completion whole and as stream chunks
  chat.py      POST /v1/chat/completions: its request, the endpoint, its reply's shapes
  app.py       the endpoints: request in, worker, reply out; the route table

Endpoints (bigmodel/export.py makes the model dir; GET /v1/model lists each request's fields):

  GET  /healthz         {"status": "ok", ...the worker's counters; a language model's buckets_compiled
                        of its buckets (the rest compile in the background)}
  GET  /v1/model        what the model expects: task, input, labels, buckets, limits, requests' fields
  POST /v1/classify     {"input": [[...], ...]} (an array of the input's shape) or {"text": "..."}
                        -> {"label": "7", "probabilities": {"0": 0.01, ...}}
  GET  /v1/models       OpenAI's list of models: this one, named --model_name
  POST /v1/completions  OpenAI's completions API: model, prompt (a string, a list of them, or token
                        ids), max_tokens, temperature, top_p, n, stop, seed, stream (server-sent
                        events, a chunk per token, then `data: [DONE]`), logprobs (0 to 5), echo,
                        ignore_eos (vLLM's: go on past the end-of-text token)
  POST /v1/chat/completions  OpenAI's chat completions API (chat.py): model, messages, max_tokens /
                        max_completion_tokens, temperature, top_p, n, stop, seed, stream (a role chunk,
                        content deltas, a finish chunk, `data: [DONE]`), stream_options; rendered with the
                        model's chat template, it stops at the template's end-of-turn token
  POST /v1/generate     {"prompt": "ROMEO:", "max_new_tokens": 64, "temperature": 1.0, "top_k": 0,
                         "top_p": 1.0, "seed": 0, "ignore_eos": false}
                        -> {"text": prompt + completion, "completion": ..., "finish_reason": ...}

A completion ends at the model's end-of-text token (model.json's input.eos_id: GPT-2's
<|endoftext|>; a char tokenizer has none) with finish_reason "stop", its text left out as OpenAI
leaves it; at a stop string, also "stop"; at max_tokens (or the end of the context) with "length".

Errors come in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with a 4xx for the
client's mistakes (503: the queue is full), the transport's own refusals included; the server stays up,
and no client's request holds up another's beyond its share of the model (stop strings are capped and
checked in linear time, bodies nested too deeply or not valid Unicode are refused).

A new endpoint is a request type in requests.py, a route and its function in app.py, and its reply's
shape (openai.py for OpenAI's).
"""
