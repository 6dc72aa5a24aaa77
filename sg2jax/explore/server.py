"""The explorer's HTTP server: the standard library's `ThreadingHTTPServer` and a fixed set of GET
routes (no web framework: five routes, query strings in and PNG or JSON out, need none).

Routes:
  /                  the page (`static/index.html`); /static/NAME its script and style sheet
  /api/info          the network: resolution, ws layers, intermediate layers, projected w files
  /image.png?...     one rendered PNG for the controls in the query (`explorer.Controls`);
                     headers X-Render-Ms (time in the compiled program), X-Stats (a layer view's
                     mean/std/max as JSON)
  /api/command?...   the `python -m sg2jax.generate` command that writes the same image

Safety: the files served are read from the package once, at start, and looked up by exact name;
the only other file a request can name is a projected w, by its name in the list made at start
from `--projected-dir`. Requests are bounded (URL length, parameter count, each value's length
and range); a malformed one gets status 400 and one line of text, and any other failure status 500
and one line (the traceback goes to the server's stderr), so no request stops the server. On a
loopback address only requests naming a loopback host are served (a web page elsewhere cannot
reach the server through a DNS name that resolves to 127.0.0.1).

Dragging: requests marked `live=1` with a `client` id are superseded by the same client's newer
ones; a request that waited for the renderer while a newer one arrived is answered 204 without
rendering, so the server always works on the newest position.
"""

import http
import http.server
import importlib.resources
import io
import ipaddress
import json
import re
import sys
import threading
import traceback
import urllib.parse
from pathlib import Path
from typing import Optional

from PIL import Image

from sg2jax.tools.directions import DEFAULT_GANSPACE_SAMPLES
from sg2jax.tools.explorer import Explorer, controls_from_query

MAX_URL_LENGTH = 4096
MAX_FIELDS = 32
MAX_CLIENTS = 64
STATIC_TYPES = {'.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8',
                '.css': 'text/css; charset=utf-8'}
_CLIENT_ID = re.compile(r'[A-Za-z0-9_-]{1,32}')


class BadRequest(ValueError):
  """A request this server refuses with 400 and the message."""


def read_static() -> dict[str, tuple[bytes, str]]:
  """The page's files, read from the package: `{url path: (bytes, content type)}`."""
  folder = importlib.resources.files('sg2jax.explore') / 'static'
  files = {}
  for entry in folder.iterdir():
    suffix = Path(entry.name).suffix
    if suffix in STATIC_TYPES:
      files[f'/static/{entry.name}'] = (entry.read_bytes(), STATIC_TYPES[suffix])
  files['/'] = files['/static/index.html']
  return files


def parse_query(query: str) -> dict[str, str]:
  """The query string as `{name: value}`; each name at most once.

  Raises:
    BadRequest: too many fields, a repeated name, or malformed escapes.
  """
  try:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                                   max_num_fields=MAX_FIELDS, errors='strict')
  except (ValueError, UnicodeDecodeError) as e:
    raise BadRequest(f'malformed query string ({e})') from None
  out = {}
  for name, value in pairs:
    if name in out:
      raise BadRequest(f'parameter {name} is given twice')
    out[name] = value
  return out


def is_loopback(host: str) -> bool:
  """Whether `host` (a name or address) is this machine only."""
  if host == 'localhost':
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


def request_host(header: str) -> str:
  """The host of a Host header: `'127.0.0.1:8000'` -> `'127.0.0.1'`, `'[::1]:80'` -> `'[::1]'`."""
  header = header.strip().lower()
  if header.startswith('['):
    return header.split(']')[0] + ']'
  return header.rsplit(':', 1)[0]


def encode_png(image) -> bytes:
  if image.shape[-1] == 1:
    image = image[..., 0]
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG', compress_level=1)  # speed over size
  return buffer.getvalue()


class ExploreServer(http.server.ThreadingHTTPServer):
  """Holds the explorer, the page's files and the newest live request of each client."""
  daemon_threads = True

  def __init__(self, address, explorer: Explorer, network: str, generator_name: str = 'G'):
    self.explorer, self.network, self.generator_name = explorer, network, generator_name
    self.static = read_static()
    self.loopback = is_loopback(address[0])
    self._tickets: dict[str, int] = {}
    self._tickets_lock = threading.Lock()
    self.render_lock = threading.Lock()
    super().__init__(address, Handler)

  def take_ticket(self, client: str) -> int:
    with self._tickets_lock:
      if client not in self._tickets and len(self._tickets) >= MAX_CLIENTS:
        self._tickets.pop(next(iter(self._tickets)))
      ticket = self._tickets.get(client, 0) + 1
      self._tickets[client] = ticket
      return ticket

  def is_newest(self, client: str, ticket: int) -> bool:
    with self._tickets_lock:
      return self._tickets.get(client) == ticket


class Handler(http.server.BaseHTTPRequestHandler):
  server: ExploreServer
  server_version = 'sg2jax-explore'
  protocol_version = 'HTTP/1.1'

  def log_message(self, format, *args):  # noqa: A002  (the base class's name)
    """Quiet: a render per mouse move would flood the terminal; errors are logged by `_fail`."""

  def _send(self, status: int, body: bytes, content_type: str, headers: Optional[dict] = None):
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Content-Type-Options', 'nosniff')
    for name, value in (headers or {}).items():
      self.send_header(name, value)
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _text(self, status: int, message: str):
    line = ' '.join(str(message).split())  # one line
    self._send(status, (line + '\n').encode(), 'text/plain; charset=utf-8')

  def _json(self, value):
    self._send(200, json.dumps(value).encode(), 'application/json')

  def _refuse_method(self):
    self.close_connection = True  # its body, if any, is not read
    self._text(405, f'error: method {self.command} is not served; use GET')

  do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _refuse_method

  def send_error(self, code, message=None, explain=None):
    """The base class's errors (a malformed request line, headers too long, an unknown method)
    as one line of text, like every other error, instead of an HTML page."""
    self.close_connection = True
    try:
      self._text(code, f'error: {message or http.HTTPStatus(code).phrase}')
    except (BrokenPipeError, ConnectionResetError):
      pass

  def do_GET(self):  # noqa: N802  (the base class's naming)
    try:
      self._route()
    except BadRequest as e:
      self._text(400, f'error: {e}')
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
      self._text(400, f'error: {e}')
    except (BrokenPipeError, ConnectionResetError):
      pass  # the page went away (a newer request replaced this one)
    except Exception as e:  # noqa: BLE001  (the server must outlive any one request)
      print(f'sg2jax.explore: {self.path[:200]}: internal error', file=sys.stderr)
      traceback.print_exc()
      self._text(500, f'error: internal error ({type(e).__name__}); the server log has details')

  def _route(self):
    if len(self.path) > MAX_URL_LENGTH:
      raise BadRequest(f'URL longer than {MAX_URL_LENGTH} characters')
    if self.server.loopback:
      host = request_host(self.headers.get('Host', ''))
      if not is_loopback(host.strip('[]')):
        raise BadRequest(f'host {host!r} is not served; open http://127.0.0.1:PORT/')
    url = urllib.parse.urlsplit(self.path)
    query = parse_query(url.query)
    if url.path in self.server.static:
      if query:
        raise BadRequest(f'{url.path} takes no parameters')
      body, content_type = self.server.static[url.path]
      return self._send(200, body, content_type)
    if url.path == '/api/info':
      return self._json(dict(self.server.explorer.info(), generator=self.server.generator_name))
    if url.path == '/api/command':
      command, written = self.server.explorer.command(
          self._controls(query), self.server.network)
      return self._json(dict(command=command, writes=written))
    if url.path == '/image.png':
      return self._image(query)
    self._text(404, f'error: no such page {url.path[:100]!r}')

  def _controls(self, query: dict):
    return controls_from_query(
        {k: v for k, v in query.items() if k not in ('live', 'client')}, self.server.explorer)

  def _image(self, query: dict):
    live = query.get('live') == '1'
    client = query.get('client', 'page')
    if not _CLIENT_ID.fullmatch(client):
      raise BadRequest('client must be 1-32 letters, digits, - or _')
    controls = self._controls(query)
    ticket = self.server.take_ticket(client) if live else None
    with self.server.render_lock:
      if live and not self.server.is_newest(client, ticket):
        return self._send(204, b'', 'text/plain', {'X-Superseded': '1'})
      rendered = self.server.explorer.render(controls)
    headers = {'X-Render-Ms': f'{rendered.render_ms:.1f}',
               'X-Compiled': '1' if rendered.compiled else '0',
               'X-Stats': json.dumps(rendered.stats) if rendered.stats else '{}'}
    self._send(200, encode_png(rendered.image), 'image/png', headers)


def make_server(network: str, host: str = '127.0.0.1', port: int = 8000,
                projected_dir: Optional[str] = None, modconv: str = 'auto',
                ganspace_samples: int = DEFAULT_GANSPACE_SAMPLES) -> ExploreServer:
  """Loads `network` (as `sg2jax.generate` does) and returns a server bound to `host:port`
  (port 0: a free one), not yet serving."""
  from sg2jax.checkpoint import load_networks, select_generator
  from sg2jax.networks.weights import build_network
  from sg2jax.tools.sampling import with_modconv
  name, net = select_generator(load_networks(network), network)
  generator = with_modconv(build_network(net.config), modconv)
  explorer = Explorer(generator, net.variables, network, projected_dir, ganspace_samples)
  try:
    return ExploreServer((host, port), explorer, str(network), name)
  except OSError as e:  # the port is taken, the address is not this machine's, ...
    raise ValueError(f'cannot listen on {host}:{port} ({e.strerror or e}); choose another '
                     f'--port or --host') from None
