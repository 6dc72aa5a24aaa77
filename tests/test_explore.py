"""`python -m sg2jax.explore`: its images equal `sg2jax.generate`'s, capture commands reproduce
them, layer views, bounded requests, and stale live requests dropped (the page itself:
tests/test_explore_browser.py)."""

import dataclasses
import http.client
import io
import json
import shlex
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from goldens import golden_network
from pixels import assert_same_image
from sg2jax import generate
from sg2jax.explore import __main__ as explore_cli
from sg2jax.images import to_uint8
from sg2jax.networks.stylegan1 import StyleGenerator
from sg2jax.tools import directions as dirs
from sg2jax.tools.explorer import (Controls, Explorer, controls_from_query, format_range,
                                   neighbour_seeds, position_seed)
from sg2jax.tools.sampling import generate_images, map_seeds, with_modconv


def get(base, path, headers=None):
  """(status, headers, body) of a GET (or another method, `path` as `'POST /'`)."""
  method, _, path = path.rpartition(' ') if ' ' in path else ('GET', '', path)
  url = urllib.parse.urlsplit(base)
  connection = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
  try:
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()
  finally:
    connection.close()


def png(body):
  return np.asarray(Image.open(io.BytesIO(body)))


def run_generate(command: str, outdir) -> None:
  """Runs a capture command (`python -m sg2jax.generate ...`) in this process, into `outdir`."""
  words = shlex.split(command)
  assert words[:3] == ['python', '-m', 'sg2jax.generate'], command
  assert generate.main(words[3:] + ['--outdir', str(outdir)]) == 0


def test_image_endpoint_equals_generate(explore_server, tmp_path):
  server, base = explore_server
  status, headers, body = get(base, '/image.png?seed=5&psi=0.7&noise=const')
  assert status == 200 and headers['Content-Type'] == 'image/png'
  assert float(headers['X-Render-Ms']) > 0
  assert generate.main(['--network', server.network, '--seeds', '5', '--trunc', '0.7',
                        '--noise-mode', 'const', '--outdir', str(tmp_path)]) == 0
  expected = np.asarray(Image.open(tmp_path / 'seed0005.png'))
  assert_same_image(png(body), expected, 'explore /image.png vs generate --seeds 5')


def test_capture_commands_reproduce_edited_images(explore_server, tmp_path):
  """Between seeds, truncated with a cutoff, random noise, style mixing, a SeFa and a GANSpace
  direction on a layer range; and a projected w with a direction: generate renders the same PNG
  from the command the page shows."""
  server, base = explore_server
  queries = {
      'edited': ('x=3.25&y=0.5&psi=0.8&cutoff=5&noise=random&noise_seed=7&mix_seed=9&mix=0-2'
                 '&direction=sefa:0,ganspace:1&strength=2.5,-1&direction_layers=1-5'),
      'projected': 'projected=shape0/projected_w.npz&noise=none&direction=sefa:2&strength=3',
  }
  for name, query in queries.items():
    status, _, body = get(base, f'/image.png?{query}')
    assert status == 200, body
    status, _, answer = get(base, f'/api/command?{query}')
    assert status == 200, answer
    answer = json.loads(answer)
    command = answer['command']
    assert command.startswith(f'python -m sg2jax.generate --network {server.network} ')
    run_generate(command, tmp_path / name)
    assert_same_image(png(body), np.asarray(Image.open(tmp_path / name / answer['writes'])),
                      f'explore vs its capture command ({name})')
  assert '--position 3.25,0.5 --trunc 0.8 --trunc-cutoff 5 --noise-mode random --noise-seed 7' \
      in json.loads(get(base, f'/api/command?{queries["edited"]}')[2])['command']
  # GANSpace's components were cached beside the (copied) network, and generate reused them.
  assert len(list(Path(server.network).parent.glob('net.pkl.ganspace-*'))) == 1


def test_layer_view_statistics_and_preview(explore_server):
  server, base = explore_server
  explorer = server.explorer
  status, headers, body = get(base, '/image.png?seed=2&layer=b16.conv0&mode=grid')
  assert status == 200
  image = png(body)
  assert image.shape == (6 * 16, 6 * 16)  # 32 channels: a 6 x 6 grid of 16x16 tiles
  stats = json.loads(headers['X-Stats'])
  g, variables = explorer.generator, explorer.variables
  _, state = g.apply(variables, map_seeds(g, variables, [2]), 'const', method='synthesize',
                     capture_intermediates=True, mutable=['intermediates'])
  act = np.asarray(state['intermediates']['synthesis']['b16']['conv0']['__call__'][0])
  assert stats['mean'] == pytest.approx(act.mean(), abs=1e-5)
  assert stats['std'] == pytest.approx(act.std(), abs=1e-5)
  assert stats['max'] == pytest.approx(np.abs(act).max(), abs=1e-5)
  status, _, body = get(base, '/image.png?seed=2&preview=1')
  assert status == 200 and png(body).shape == (16, 16, 3)  # the 16x16 skip image
  status, _, body = get(base, '/api/info')
  info = json.loads(body)
  assert info['num_ws'] == 8 and info['projected'] == ['shape0/projected_w.npz']
  assert info['preview_resolutions'] == [16, 8] and info['default_preview'] == 16
  assert ['b16.conv0', [16, 16, 32]] in info['layers'] and info['layers'][-1][0] == 'output'


@pytest.mark.parametrize('path, status, message', [
    ('/image.png?seed=3&psi=7', 400, 'psi=7 is outside [-1, 2]'),
    ('/image.png?seed=-1', 400, 'seed=-1 is outside'),
    ('/image.png?seed=1&x=2', 400, 'either seed or a position'),
    ('/image.png?psi=nan', 400, 'psi=nan is outside'),
    ('/image.png?noise=loud', 400, "noise='loud' is not one of"),
    ('/image.png?mix=0-3', 400, 'no mix_seed'),
    ('/image.png?mix_seed=1&mix=0-30', 400, 'layers [8, 9,'),
    ('/image.png?direction=sefa:0&strength=1,2', 400, '1 directions but 2 strengths'),
    ('/image.png?direction=sefa:99&strength=1', 400, 'sefa has components 0-31'),
    ('/image.png?direction=pca:0&strength=1', 400, "direction 'pca:0' is not METHOD:K"),
    ('/image.png?layer=b99.conv0', 400, "layer='b99.conv0' is not a layer"),
    ('/image.png?layer=b8.conv0&mode=rgb', 400, 'mode=rgb needs a layer with 3 channels'),
    ('/image.png?projected=../../net.pkl', 400, 'is not one of the projected w files'),
    ('/image.png?class=1', 400, 'class is only for conditional networks'),
    ('/image.png?preview=12', 400, 'preview=12 is not a preview resolution'),
    ('/image.png?seed=1&seed=2', 400, 'parameter seed is given twice'),
    ('/image.png?bogus=1', 400, "unknown parameter 'bogus'"),
    ('/image.png?x=' + '1' * 600, 400, 'longer than 512 characters'),
    ('/image.png?' + 'a' * 5000, 400, 'URL longer than 4096'),
    ('/static/../server.py', 404, 'no such page'),
    ('/static/explore.js?x=1', 400, 'takes no parameters'),
    ('POST /image.png', 405, 'method POST is not served'),
])
def test_bad_requests_get_one_line_and_the_server_keeps_serving(explore_server, path, status,
                                                                message):
  _, base = explore_server
  got, _, body = get(base, path)
  text = body.decode()
  assert got == status, text
  assert text.startswith('error: ') and message in text and text.count('\n') == 1
  assert get(base, '/static/explore.css')[0] == 200


def test_malformed_http_is_one_line_too(explore_server):
  _, base = explore_server
  port = urllib.parse.urlsplit(base).port
  for request in (b'GARBAGE\r\n\r\n', b'GET /' + b'a' * 70000 + b' HTTP/1.1\r\n\r\n',
                  b'BREW / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'):
    with socket.create_connection(('127.0.0.1', port), timeout=60) as connection:
      connection.sendall(request)
      answer = b''
      while chunk := connection.recv(65536):
        answer += chunk
    if answer.startswith(b'HTTP/'):
      head, _, body = answer.partition(b'\r\n\r\n')
      assert head.split()[1] in (b'400', b'414', b'501'), head
    else:  # a request line without a version is HTTP/0.9: the answer has no status line
      body = answer
    assert body.startswith(b'error: ') and body.count(b'\n') == 1, body
  assert get(base, '/static/explore.css')[0] == 200


def test_a_taken_port_is_one_line(explore_server):
  from sg2jax.explore.server import make_server
  server, _ = explore_server
  with pytest.raises(ValueError, match=r'cannot listen on 127.0.0.1:\d+ .*choose another --port'):
    make_server(server.network, '127.0.0.1', server.server_address[1])


def test_only_loopback_hosts_are_served(explore_server):
  _, base = explore_server
  status, _, body = get(base, '/', headers={'Host': 'attacker.example:8000'})
  assert status == 400 and b"host 'attacker.example' is not served" in body
  assert get(base, '/', headers={'Host': 'localhost:8000'})[0] == 200


def wait_for(condition, seconds=60):
  deadline = time.monotonic() + seconds
  while not condition():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.001)


def test_a_live_request_superseded_while_waiting_is_not_rendered(explore_server):
  server, base = explore_server
  results = {}

  def request(name, seed):
    results[name] = get(base, f'/image.png?seed={seed}&live=1&client=t1')[0]

  with server.render_lock:  # the renderer is busy: both requests wait
    older = threading.Thread(target=request, args=('older', 1))
    older.start()
    wait_for(lambda: server._tickets.get('t1') == 1)
    newer = threading.Thread(target=request, args=('newer', 2))
    newer.start()
    wait_for(lambda: server._tickets.get('t1') == 2)
  older.join(60)
  newer.join(60)
  assert results == {'older': 204, 'newer': 200}


def test_controls_and_positions():
  # The official visualizer's plane: seed x + 100 y; bilinear weights summing to 1.
  assert neighbour_seeds(3.25, 0.5) == [(3, 0.375), (4, 0.125), (103, 0.375), (104, 0.125)]
  assert neighbour_seeds(7, 0)[0] == (7, 1.0) and position_seed(7.0, 2.0) == 207
  assert position_seed(7.5, 0) is None and neighbour_seeds(-1, 0)[0][0] == 2 ** 32 - 1
  assert format_range([0, 1, 2, 5, 7, 8]) == '0-2,5,7-8'
  assert Controls().psi == 1


def test_the_command_warns_when_it_listens_beyond_this_machine(monkeypatch, capsys):
  from sg2jax.explore import server as server_module
  assert server_module.is_loopback('127.0.0.1') and server_module.is_loopback('::1')
  assert server_module.is_loopback('127.0.0.2') and server_module.is_loopback('localhost')
  assert not server_module.is_loopback('0.0.0.0') and not server_module.is_loopback('example.org')

  class Stub:
    server_address, generator_name = ('0.0.0.0', 1234), 'G_ema'

    def serve_forever(self):
      raise KeyboardInterrupt

    def server_close(self):
      pass

  monkeypatch.setattr(server_module, 'make_server', lambda *args: Stub())
  assert explore_cli.main(['--network', 'x.pkl', '--host', '0.0.0.0', '--port', '0']) == 0
  out = capsys.readouterr()
  assert 'warning: listening on 0.0.0.0: anyone who can reach' in out.err
  assert 'http://0.0.0.0:1234/' in out.out


def test_controls_from_query_bounds(explore_server):
  explorer = explore_server[0].explorer
  controls = controls_from_query({'x': '2.5', 'y': '1', 'cutoff': '3', 'mix_seed': '4',
                                  'mix': '0,2-3'}, explorer)
  assert (controls.x, controls.y, controls.cutoff, controls.mix_layers) == (2.5, 1.0, 3, (0, 2, 3))
  with pytest.raises(ValueError, match=r'cutoff=9 is outside \[0, 8\]'):
    controls_from_query({'cutoff': '9'}, explorer)
  with pytest.raises(ValueError, match='direction_layers is empty'):
    controls_from_query({'direction_layers': ''}, explorer)


def test_moving_controls_never_compiles_again(explore_server):
  """One program per view: positions, psi, cutoff, noise, mixing, directions and channels are
  traced arguments."""
  explorer = explore_server[0].explorer
  image_view = explorer.view(Controls())
  for controls in (Controls(x=1.5, y=2.25, psi=0.5), Controls(x=7, cutoff=3, noise_mode='random',
                                                              noise_seed=4),
                   Controls(mix_seed=3, mix_layers=(0, 5), noise_mode='none'),
                   Controls(directions=(dirs.parse_direction('sefa:1'),), strengths=(1.5,),
                            direction_layers=(2, 3))):
    explorer.render(controls)
  assert explorer._programs[image_view]._cache_size() == 1
  layer = Controls(layer='b8.conv1', layer_mode='channel')
  for channel in (0, 5, 31):
    explorer.render(dataclasses.replace(layer, channel=channel, normalize=channel != 5))
  assert explorer._programs[explorer.view(layer)]._cache_size() == 1


def test_a_conditional_network_renders_the_chosen_class(tmp_path):
  g, variables = golden_network('cond_G_skip', 'cond_G_skip_params.npz')
  g = with_modconv(g)
  explorer = Explorer(g, variables, tmp_path / 'cond')
  assert explorer.info()['c_dim'] == 4
  assert controls_from_query({}, explorer).class_idx == 0
  controls = controls_from_query({'seed': '1', 'class': '2', 'psi': '0.8'}, explorer)
  expected = to_uint8(generate_images(g, variables, [1], 0.8, class_idx=2, batch_size=1))[0]
  assert_same_image(explorer.render(controls).image, expected, 'explore class 2')
  assert '--seeds 1 --trunc 0.8 --noise-mode const --class 2' in explorer.command(controls)[0]
  with pytest.raises(ValueError, match=r'class=4 is outside \[0, 3\]'):
    controls_from_query({'class': '4'}, explorer)


def test_the_explorer_takes_stylegan2_generators_only(tmp_path):
  with pytest.raises(ValueError, match='takes StyleGAN2 generators .* a StyleGenerator'):
    Explorer(StyleGenerator(img_resolution=8, z_dim=8, w_dim=8), {}, tmp_path / 'a')
