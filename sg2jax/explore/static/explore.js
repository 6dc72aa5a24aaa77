// The explorer page: controls -> a query string -> /image.png. One request in flight at a time;
// while it renders, moves only update `pending`, so the next request carries the newest state and
// stale positions are never rendered (the server also drops superseded live requests).
'use strict';

const SLIDERS = 8;          // direction components with a slider (0..7)
const DRAG_PER_PIXEL = 0.01; // seeds per pixel of drag
const $ = (id) => document.getElementById(id);
const clientId = Math.random().toString(36).slice(2, 12);

let info = null;
const state = { x: 0, y: 0, strengths: new Array(SLIDERS).fill(0) };
let inFlight = false, pending = false, dragging = false, shownPreview = false;
let objectUrl = null, lastFrame = null, animating = false;

function round4(v) { return Math.round(v * 1e4) / 1e4; }

// The controls as query parameters (the same names the server's Controls reads).
function query(preview) {
  const p = new URLSearchParams();
  const projected = $('projected').value;
  if (projected) p.set('projected', projected);
  else { p.set('x', String(round4(state.x))); p.set('y', String(round4(state.y))); }
  p.set('psi', $('psi').value);
  if (Number($('cutoff').value) < info.num_ws) p.set('cutoff', $('cutoff').value);
  p.set('noise', $('noise').value);
  if ($('noise').value === 'random') p.set('noise_seed', $('noise-seed').value || '0');
  if (info.c_dim) p.set('class', $('class').value);
  const mixed = [...document.querySelectorAll('#mix-layers input:checked')].map((e) => e.value);
  if (mixed.length) { p.set('mix_seed', $('mix-seed').value || '0'); p.set('mix', mixed.join(',')); }
  const method = $('dir-method').value;
  const used = state.strengths.map((s, k) => [k, s]).filter(([, s]) => s !== 0);
  if (used.length) {
    p.set('direction', used.map(([k]) => `${method}:${k}`).join(','));
    p.set('strength', used.map(([, s]) => String(s)).join(','));
    p.set('direction_layers', `${$('dir-from').value}-${$('dir-to').value}`);
  }
  const layer = $('layer').value;
  if (layer) {
    p.set('layer', layer);
    p.set('mode', $('mode').value);
    if ($('mode').value === 'channel') p.set('channel', $('channel').value || '0');
    p.set('normalize', $('normalize').checked ? '1' : '0');
  } else if (preview) p.set('preview', $('preview-res').value);
  return p;
}

function showLatent() {
  const seed = Math.round(state.x) + Math.round(state.y) * info.seed_row;
  if (document.activeElement !== $('seed')) $('seed').value = seed;
  const fx = state.x - Math.round(state.x), fy = state.y - Math.round(state.y);
  const sign = (v) => (v >= 0 ? '+' : '') + v.toFixed(2);
  $('frac').textContent = `${sign(fx)}, ${sign(fy)}`;
}

function requestRender() {
  pending = true;
  if (!inFlight) send();
}

async function send() {
  pending = false;
  inFlight = true;
  const live = dragging || $('anim').checked;
  const preview = live && $('preview').checked && info.default_preview > 0 && !$('layer').value;
  const params = query(preview);
  const shown = params.toString();
  params.set('live', '1');
  params.set('client', clientId);
  const start = performance.now();
  try {
    const response = await fetch('/image.png?' + params.toString());
    if (response.status === 200) {
      const blob = await response.blob();
      if (objectUrl) URL.revokeObjectURL(objectUrl);
      objectUrl = URL.createObjectURL(blob);
      const img = $('image');
      await new Promise((resolve) => { img.onload = resolve; img.onerror = resolve; img.src = objectUrl; });
      img.dataset.query = shown;
      img.dataset.count = String(Number(img.dataset.count) + 1);
      shownPreview = preview;
      $('render-ms').textContent = response.headers.get('X-Render-Ms');
      $('round-ms').textContent = `(round trip ${(performance.now() - start).toFixed(0)} ms` +
        (response.headers.get('X-Compiled') === '1' ? ', compiled this view)' : ')');
      const stats = JSON.parse(response.headers.get('X-Stats') || '{}');
      $('stats').textContent = stats.mean === undefined ? '' :
        `all channels: mean ${stats.mean.toFixed(3)}  std ${stats.std.toFixed(3)}  max ${stats.max.toFixed(3)}` +
        (($('mode').value === 'channel') ? ` · channel: mean ${stats.shown_mean.toFixed(3)}  std ${stats.shown_std.toFixed(3)}  max ${stats.shown_max.toFixed(3)}` : '');
      $('error').textContent = '';
    } else if (response.status !== 204) {
      $('error').textContent = (await response.text()).trim();
    }
  } catch (e) {
    $('error').textContent = `error: ${e}`;
  } finally {
    inFlight = false;
    if (pending) send();
    else if (shownPreview && !dragging && !$('anim').checked) requestRender();
  }
}

function moveLatent(dx, dy) {
  state.x = round4(state.x + dx);
  state.y = round4(state.y + dy);
  showLatent();
  requestRender();
}

// One animation loop at a time; it ends itself (drawing the full image) once 'animate' is off.
function animate(now) {
  if (!$('anim').checked) {
    animating = false;
    lastFrame = null;
    requestRender();
    return;
  }
  if (lastFrame !== null) moveLatent((now - lastFrame) / 1000 * Number($('speed').value), 0);
  lastFrame = now;
  requestAnimationFrame(animate);
}

function buildControls() {
  $('network').textContent = `${info.generator} of ${info.network} (${info.resolution}x${info.resolution})`;
  $('cutoff').max = info.num_ws;
  $('cutoff').value = info.num_ws;
  $('dir-from').max = $('dir-to').max = info.num_ws - 1;
  $('dir-to').value = info.num_ws - 1;
  $('samples').textContent = info.ganspace_samples.toLocaleString('en');
  const mix = $('mix-layers');
  for (let l = 0; l < info.num_ws; l++) {
    const res = 2 ** (Math.floor((l + 1) / 2) + 2);
    const label = document.createElement('label');
    label.innerHTML = `<input type="checkbox" id="mix-${l}" value="${l}">${l} (${Math.min(res, info.resolution)})`;
    mix.appendChild(label);
  }
  const sliders = $('sliders');
  for (let k = 0; k < SLIDERS; k++) {
    const label = document.createElement('label');
    label.innerHTML = `component ${k} <input type="range" id="dir-${k}" min="-10" max="10" step="0.1" value="0"> <output id="dir-${k}-value">0</output>`;
    sliders.appendChild(label);
  }
  for (const [name, shape] of info.layers) {
    const option = document.createElement('option');
    option.value = name;
    option.textContent = `${name} (${shape.join('x')})`;
    $('layer').appendChild(option);
  }
  if (info.projected.length) {
    $('projected-row').hidden = false;
    for (const name of info.projected) {
      const option = document.createElement('option');
      option.value = option.textContent = name;
      $('projected').appendChild(option);
    }
  }
  for (const res of info.preview_resolutions) $('preview-res').add(new Option(`${res}x${res}`, String(res)));
  $('preview-res').value = String(info.default_preview);
  if (!info.default_preview) $('preview-row').hidden = true;
  if (info.c_dim) {
    $('class-row').hidden = false;
    for (let c = 0; c < info.c_dim; c++) $('class').add(new Option(String(c), String(c)));
  }
}

function wire() {
  const rerender = () => requestRender();
  $('seed').addEventListener('change', () => {
    state.x = Math.max(0, Math.floor(Number($('seed').value) || 0)); state.y = 0;
    showLatent(); requestRender();
  });
  const pad = $('pad');
  pad.addEventListener('pointerdown', (e) => { dragging = true; pad.setPointerCapture(e.pointerId); });
  pad.addEventListener('pointermove', (e) => {
    if (dragging) moveLatent(e.movementX * DRAG_PER_PIXEL, e.movementY * DRAG_PER_PIXEL);
  });
  const stop = () => { if (dragging) { dragging = false; requestRender(); } };
  pad.addEventListener('pointerup', stop);
  pad.addEventListener('pointercancel', stop);
  pad.addEventListener('keydown', (e) => {
    const step = e.shiftKey ? 1 : 0.1;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) { e.preventDefault(); moveLatent(...moves[e.key]); }
  });
  $('anim').addEventListener('change', () => {
    if ($('anim').checked && !animating) { animating = true; requestAnimationFrame(animate); }
  });
  $('snap').addEventListener('click', () => {
    state.x = Math.round(state.x); state.y = Math.round(state.y); showLatent(); requestRender();
  });
  $('reset').addEventListener('click', () => {
    state.x = 0; state.y = 0; $('anim').checked = false; showLatent(); requestRender();
  });
  $('psi').addEventListener('input', () => { $('psi-value').textContent = $('psi').value; requestRender(); });
  $('cutoff').addEventListener('input', () => {
    $('cutoff-value').textContent = Number($('cutoff').value) >= info.num_ws ? 'all' : $('cutoff').value;
    requestRender();
  });
  $('dir-method').addEventListener('change', () => {
    $('samples-row').hidden = $('dir-method').value !== 'ganspace';
    zeroDirections();
  });
  for (let k = 0; k < SLIDERS; k++) {
    $(`dir-${k}`).addEventListener('input', () => {
      state.strengths[k] = Number($(`dir-${k}`).value);
      $(`dir-${k}-value`).textContent = $(`dir-${k}`).value;
      requestRender();
    });
  }
  $('dir-reset').addEventListener('click', zeroDirections);
  for (const id of ['projected', 'class', 'noise', 'noise-seed', 'mix-seed', 'dir-from', 'dir-to',
                    'layer', 'mode', 'channel', 'normalize']) {
    $(id).addEventListener('change', rerender);
  }
  $('mix-layers').addEventListener('change', rerender);
  $('capture').addEventListener('click', capture);
}

function zeroDirections() {
  for (let k = 0; k < SLIDERS; k++) {
    state.strengths[k] = 0; $(`dir-${k}`).value = 0; $(`dir-${k}-value`).textContent = '0';
  }
  requestRender();
}

// The full-resolution image (not a preview or layer view) and the generate command for it.
async function capture() {
  const p = query(false);
  for (const key of ['layer', 'mode', 'channel', 'normalize']) p.delete(key);
  const [image, command] = await Promise.all([
    fetch('/image.png?' + p.toString()), fetch('/api/command?' + p.toString())]);
  if (!image.ok || !command.ok) {
    $('error').textContent = (await (image.ok ? command : image).text()).trim();
    return;
  }
  const { command: text, writes } = await command.json();
  const link = $('download');
  link.href = URL.createObjectURL(await image.blob());
  link.download = writes;
  link.hidden = false;
  link.textContent = `download ${writes}`;
  link.click();
  $('command').textContent = `${text}\n# writes out/${writes}`;
}

async function start() {
  const response = await fetch('/api/info');
  info = await response.json();
  buildControls();
  wire();
  showLatent();
  requestRender();
}

start();
