"""The HTTP transport of bigmodel/endpoints.py's App: routes, keep-alive connections (a thread
each), request bodies (a Content-Length, the size limit, JSON), JSON replies, and server-sent
events written as chunks as they come. A client that has gone (a failed write, or a closed connection
seen while its request waits: `Handler.client_gone`) frees its sequences' rows and queue places."""
import http.server
import json
import select
import socket
import traceback
import urllib.parse

from bigmodel import errors
from bigmodel.endpoints import ClientGone, HTTPError, internal_error


class Handler(http.server.BaseHTTPRequestHandler):
  """Routes, size limit, JSON and server-sent events in and out; `self.server.app` does the work."""
  protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
  timeout = 60  # seconds an idle connection is kept
  routes = {"/healthz": ("GET", "health"), "/v1/model": ("GET", "info"), "/v1/models": ("GET", "models"),
            "/v1/classify": ("POST", "classify"), "/v1/completions": ("POST", "completions"),
            "/v1/generate": ("POST", "generate")}

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

  def _handle(self, method):
    app_ = self.server.app
    self.body_read = False
    try:
      path = urllib.parse.urlsplit(self.path).path
      if path not in self.routes:
        raise HTTPError(404, f"No endpoint {path}. Endpoints: " +
                        ", ".join(f"{m} {p}" for p, (m, _) in self.routes.items()) + ".")
      allowed, action = self.routes[path]
      if method != allowed:
        raise HTTPError(405, f"{path} takes {allowed}, not {method}.")
      if method == "GET":
        result = getattr(app_, action)()
      else:
        result = getattr(app_, action)(self._read_json(app_.max_body_bytes), self.client_gone)
      if isinstance(result, dict):
        self._reply(200, result)
      else:
        self._stream(result)
    except ClientGone:
      self.close_connection = True
    except HTTPError as e:
      self._reply(e.status, e.body())
    except Exception as e:  # a bug, not the client's fault: say so and stay up
      traceback.print_exc()
      self._reply(500, internal_error(e).body())

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

  def _read_json(self, limit):
    if "chunked" in self.headers.get("Transfer-Encoding", ""):
      raise HTTPError(411, "Chunked bodies are not accepted: send a Content-Length.")
    try:
      length = int(self.headers.get("Content-Length", ""))
    except ValueError:
      raise HTTPError(411, "A POST needs a Content-Length header.") from None
    if length < 0:
      raise HTTPError(400, f"Content-Length {length} is negative.")
    if length > limit:
      if length <= 64 * limit:  # read it anyway: a client still sending would miss the answer
        for start in range(0, length, 1 << 16):
          self.rfile.read(min(1 << 16, length - start))
        self.body_read = True
      raise HTTPError(413, f"The body is {length:,} bytes; the limit is {limit:,} (serve --max_body_bytes).")
    body = self.rfile.read(length)
    self.body_read = True
    try:
      return json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
      raise HTTPError(400, f"The body is not valid JSON: {e}.") from None

  def _reply(self, status, obj):
    if self.command != "GET" and not self.body_read:
      self.close_connection = True  # an unread body would be read as the next request
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
    self.send_response(status)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(data)))
    if status == 405:
      self.send_header("Allow", self.routes[urllib.parse.urlsplit(self.path).path][0])
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
        message = f"data: {data}\n\n".encode("utf-8")
        self.wfile.write(b"%x\r\n%s\r\n" % (len(message), message))
      self.wfile.write(b"0\r\n\r\n")
    except OSError:  # BrokenPipeError, ConnectionResetError
      self.close_connection = True
    finally:
      events.close()

  def log_message(self, format, *args):
    if self.server.log_requests:
      super().log_message(format, *args)


def _reject_constant(name):
  raise errors.UserError(f"{name} is not a JSON number")


class Server(http.server.ThreadingHTTPServer):
  """One thread per connection: a slow client holds up its own thread only."""
  daemon_threads = True
  request_queue_size = 128  # connections waiting to be accepted; beyond it clients are refused


def make_server(app_, host="127.0.0.1", port=8000, log_requests=False):
  """The server of `app_`, bound to host:port (0 = a free port)."""
  httpd = Server((host, port), Handler)
  httpd.app, httpd.log_requests = app_, log_requests
  return httpd
