"""The HTTP transport: a route table, keep-alive connections (a thread each), request bodies (a
Content-Length, the size limit, JSON), JSON replies and server-sent events written as chunks as they
come. It knows nothing of models: `make_server` takes the table {path: (method, function)}; a GET's
function takes no argument, a POST's takes the parsed body and `client_gone`.

It owns the server's error shape, OpenAI's {"error": {"message", "type", "param", "code"}}: a function
raises HTTPError for the client's mistakes, and everything the transport refuses itself (no route, a bad
request line, headers too large, a bad Content-Length, a body that is not JSON, nests too deeply or
holds a string that is not valid Unicode) comes back in it too, with its status.
A client that has gone (a failed read or write, or a closed connection seen while its request waits:
`Handler.client_gone`, which raises ClientGone through the function) is logged in one line and not
written to; its sequences' rows and queue places are freed."""
import http.server
import itertools
import json
import re
import select
import socket
import sys
import traceback
import urllib.parse

MAX_DEPTH = 64  # JSON nesting a body may have: deeper bodies get 400 (Python's parser recurses)


class HTTPError(Exception):
  """A reply other than 200, in OpenAI's error shape; `param` names the request's field at fault."""

  def __init__(self, status, message, param=None, code=None):
    super().__init__(message)
    self.status, self.param, self.code = status, param, code

  def body(self):
    kind = "invalid_request_error" if self.status < 500 else "server_error"
    return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


class ClientGone(Exception):
  """The client closed its connection while its request waited: there is no one to answer."""


def internal_error(e):
  """The 500 of a bug (ours, not the client's), naming it."""
  return HTTPError(500, f"Internal error: {type(e).__name__}: {e}")


def to_json(obj):
  """`obj` as UTF-8 JSON bytes. A string that is not valid Unicode (a lone surrogate) is written as its
  JSON escape rather than failing the reply."""
  try:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")
  except UnicodeEncodeError:
    return json.dumps(obj).encode("ascii")


def parse_json(data):
  """A request body's JSON; HTTPError 400 if it is not UTF-8 JSON, nests deeper than MAX_DEPTH, or holds a
  string (a field's name or a value) that is not valid Unicode (a lone surrogate escape, "\\ud800"). The
  checks run at C speed unless the body could fail them (they hold the lock every thread shares)."""
  too_deep = f"The body nests too deeply: at most {MAX_DEPTH} levels of arrays and objects."
  try:
    text = data.decode("utf-8")
    body = json.loads(text, parse_constant=_reject_constant)
  except RecursionError:
    raise HTTPError(400, too_deep) from None
  except (UnicodeDecodeError, ValueError) as e:
    raise HTTPError(400, f"The body is not valid JSON: {e}.") from None
  fields = body.items() if isinstance(body, dict) else [(None, body)]
  if text.count("[") + text.count("{") > MAX_DEPTH:  # else it cannot nest that deep
    for name, value in fields:
      if _depth(value) + (name is not None) > MAX_DEPTH:
        raise HTTPError(400, too_deep, name)
  if re.search(r"\\u[dD][89a-fA-F]", text):  # a surrogate escape: only a pair of them makes a character
    for name, value in fields:
      try:
        json.dumps([name, value], ensure_ascii=False).encode("utf-8")
      except UnicodeEncodeError:
        raise HTTPError(400, "A string in the body" + (f", in its field {name[:40]!a}," if _valid(name) else "") +
                        " is not valid Unicode (a lone surrogate such as \\ud800); send text as UTF-8.",
                        name if _valid(name) else None) from None
  return body


def _depth(value):
  """How deep lists and objects nest in `value` (0: not one), a level at a time: a loop, not recursion, whose
  work per element is a C loop's."""
  level, depth = [value], 0
  while level := [v for v in level if type(v) is list or type(v) is dict]:
    depth += 1
    if depth > MAX_DEPTH:
      break
    level = itertools.chain(itertools.chain.from_iterable(v for v in level if type(v) is list),
                            itertools.chain.from_iterable(v.values() for v in level if type(v) is dict))
  return depth


def _valid(name):
  """Whether `name` is a string that UTF-8 can carry."""
  try:
    return isinstance(name, str) and bool(name.encode("utf-8"))
  except UnicodeEncodeError:
    return False


def _reject_constant(name):
  raise ValueError(f"{name} is not a JSON number")


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes, size limit, JSON and server-sent events in and out; the server's table does the work."""
  protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
  timeout = 60  # seconds an idle connection is kept

  def setup(self):
    super().setup()
    # Send each reply at once: with Nagle's algorithm the body, written after the headers,
    # waits for the client's delayed ACK (40 ms).
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

  def do_GET(self):
    self._handle("GET")

  def do_POST(self):
    self._handle("POST")

  def do_PUT(self):
    self._handle("PUT")

  def do_DELETE(self):
    self._handle("DELETE")

  def parse_request(self):
    if not super().parse_request():
      return False
    if self.request_version == "HTTP/0.9":  # "GET /path" alone: its reply would have no status line
      self.send_error(400, "A request line needs its HTTP version, as in 'GET /healthz HTTP/1.1'.")
      return False
    return True

  def send_error(self, code, message=None, explain=None):
    """The standard library's own refusals (a bad request line, headers too large, an unknown method) in
    the server's error shape, with a status line, and the connection closed."""
    del explain
    self.log_error("code %d, message %s", code, message)
    if self.request_version in ("", "HTTP/0.9"):
      self.request_version = "HTTP/1.0"  # so that the status line is written
    self.close_connection = True
    try:
      self._reply(code, HTTPError(code, message or self.responses.get(code, ("Error",))[0]).body())
    except ConnectionError as e:
      self._gone(e)

  def _handle(self, method):
    self.body_read = "Content-Length" not in self.headers and "Transfer-Encoding" not in self.headers  # no body
    try:
      try:
        path = urllib.parse.urlsplit(self.path).path
        routes = self.server.routes
        if path not in routes:
          raise HTTPError(404, f"No endpoint {path}. Endpoints: " +
                          ", ".join(f"{m} {p}" for p, (m, _) in routes.items()) + ".")
        allowed, function = routes[path]
        if method != allowed:
          raise HTTPError(405, f"{path} takes {allowed}, not {method}.")
        body = self._read_body()
        if method == "GET":
          result = function()
        else:
          result = function(parse_json(body), self.client_gone)
        if isinstance(result, dict):
          self._reply(200, result)
        else:
          self._stream(result)
      except HTTPError as e:
        self._reply(e.status, e.body())
      except (ClientGone, ConnectionError):
        raise
      except Exception as e:  # a bug, not the client's fault: say so and stay up
        traceback.print_exc()
        self._reply(500, internal_error(e).body())
    except (ClientGone, ConnectionError) as e:  # ConnectionError: a read or a write failed
      self._gone(e)

  def _gone(self, e):
    """One line for a client that left before its reply; nothing more is written to it."""
    self.close_connection = True
    reason = "it closed its connection" if isinstance(e, ClientGone) else type(e).__name__
    sys.stderr.write(f"{self.address_string()} - {self.command} {self.path[:100]}: the client left before its "
                     f"reply ({reason}).\n")

  def client_gone(self):
    """Whether the client has closed its connection, seen without reading from it: the socket is readable
    and its next read is the end of the stream (or an error). A client's next request, sent before this
    reply (pipelined), is data, not an end. A client that only shut down its sending side counts as gone,
    as it does for nginx (its 499)."""
    poller = select.poll()  # not select.select: it fails on descriptors past 1023
    poller.register(self.connection, select.POLLIN)
    if not poller.poll(0):
      return False
    try:
      return not self.connection.recv(1, socket.MSG_PEEK)
    except OSError:  # reset by the peer
      return True

  def _read_body(self):
    """The request's body (b"" if it has none): a GET's is read too, so that it is not taken for the next request."""
    if "chunked" in self.headers.get("Transfer-Encoding", ""):
      raise HTTPError(411, "Chunked bodies are not accepted: send a Content-Length.")
    lengths = self.headers.get_all("Content-Length") or []
    if len(set(lengths)) > 1:
      raise HTTPError(400, f"The request has {len(lengths)} different Content-Length headers; send one.")
    if not lengths:
      if self.command == "GET":
        return b""
      raise HTTPError(411, "A POST needs a Content-Length header.")
    if not re.fullmatch(r"[0-9]{1,18}", lengths[0].strip()):
      raise HTTPError(400, f"Content-Length {lengths[0][:40]!r} is not a number of bytes.")
    length, limit = int(lengths[0]), self.server.max_body_bytes
    if length > limit:
      if length <= 64 * limit:  # read it anyway: a client still sending would miss the answer
        for start in range(0, length, 1 << 16):
          self.rfile.read(min(1 << 16, length - start))
        self.body_read = True
      raise HTTPError(413, f"The body is {length:,} bytes; the limit is {limit:,} (serve --max_body_bytes).")
    body = self.rfile.read(length)
    if len(body) < length:  # the client closed its connection part way
      raise ConnectionResetError("the body ended early")
    self.body_read = True
    return body

  def _reply(self, status, obj):
    if not getattr(self, "body_read", False):
      self.close_connection = True  # an unread body would be read as the next request
    data = to_json(obj)
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    if status == 405:
      self.send_header("Allow", self.server.routes[urllib.parse.urlsplit(self.path).path][0])
    if self.close_connection:
      self.send_header("Connection", "close")
    self.end_headers()
    self.wfile.write(data)

  def _stream(self, events):
    """Server-sent events, each written as it comes (chunked, so the connection stays open). A
    client that has gone shows as a failed write, or as ClientGone from `events` (seen by client_gone
    while the request waits); closing `events` then frees its sequences' rows."""
    self.send_response(200)
    self.send_header("Content-Type", "text/event-stream")
    self.send_header("Cache-Control", "no-cache")
    self.send_header("Transfer-Encoding", "chunked")
    self.end_headers()
    try:
      for data in events:
        message = b"data: %s\n\n" % data.encode("utf-8", "backslashreplace")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(message), message))
      self.wfile.write(b"0\r\n\r\n")
    finally:
      events.close()

  def log_message(self, format, *args):
    if self.server.log_requests:
      super().log_message(format, *args)


class Server(http.server.ThreadingHTTPServer):
  """One thread per connection: a slow client holds up its own thread only."""
  daemon_threads = True
  request_queue_size = 128  # connections waiting to be accepted; beyond it clients are refused

  def handle_error(self, request, client_address):
    """A client that reset its connection before its request was read: one line, not a traceback."""
    error = sys.exc_info()[1]
    if isinstance(error, ConnectionError):
      sys.stderr.write(f"{client_address[0]} - the client left before its request was read "
                       f"({type(error).__name__}).\n")
    else:
      super().handle_error(request, client_address)


def make_server(routes, host="127.0.0.1", port=8000, max_body_bytes=1_000_000, log_requests=False):
  """A server of `routes` ({path: (method, function)}), bound to host:port (0 = a free port)."""
  httpd = Server((host, port), Handler)
  httpd.routes, httpd.max_body_bytes, httpd.log_requests = routes, max_body_bytes, log_requests
  return httpd
