// cnnlab explore: the page over one trained run. One ES2020 module, no libraries, no build step.
//
// Every view asks the JSON API (src/cnnlab/explore/app.py) for its data and draws it here: images arrive as
// base64 PNGs (grayscale for maps, colourised in the page through a lookup table), errors as {"error": "..."}.
// The content security policy allows no inline script or style markup, so styles set here go through
// element.style, and every picture is a canvas or a data: URL.
//
// Layout of this file: helpers (DOM, numbers, the API, the status line) -> colour maps and pictures -> the
// input and its prediction -> the views (network, test images, convolution, where it looks, what it learned,
// anatomy), each a render function the tab switcher calls when its data is stale -> boot.

// ============================================================================================ helpers
const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** A new element: el('div', {class: 'x', text: 'hi', dataset: {a: 1}, onclick: f}, child, ...). */
function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'class') e.className = value;
    else if (key === 'text') e.textContent = value;
    else if (key === 'dataset') Object.assign(e.dataset, value);
    else if (key.startsWith('on')) e.addEventListener(key.slice(2), value);
    else e.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) if (child != null) e.append(child);
  return e;
}

/** A number for people: integers as they are, others with 3 significant digits, tiny/huge ones as 1.2e-5. */
function fmt(v, digits = 3) {
  if (v == null || Number.isNaN(v)) return 'NaN';
  if (!Number.isFinite(v)) return v > 0 ? '∞' : '−∞';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a < 1e-3 || a >= 1e6) return v.toExponential(digits - 1);
  return String(Number(v.toPrecision(digits)));
}
const fmtInt = (v) => (v == null ? '–' : Number(v).toLocaleString('en-US'));
const pct = (p) => `${(100 * p).toFixed(1)}%`;
const shape = (s) => (s && s.length ? s.join('×') : '–');
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const NEEDS_GRADIENTS = 'needs gradients: this int8 run has none';

/** The status line: what is happening, or what went wrong (never an alert, never the console). */
function status(text, kind = 'info') {
  const s = $('#status');
  s.textContent = text;
  s.dataset.kind = kind;
}
const fail = (where, e) => status(`${where}: ${e.message}`, 'error');

/** Runs an async function from an event, reporting its error in the status line instead of throwing. */
function guard(where, fn) {
  return (...args) => Promise.resolve().then(() => fn(...args)).catch((e) => fail(where, e));
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

let inFlight = 0; // requests under way: body[data-busy] (the tests wait on it) and the status line's spinner
function setBusy(delta) {
  inFlight += delta;
  document.body.dataset.busy = String(inFlight);
  $('#status').classList.toggle('busy', inFlight > 0);
}

/** One API call: the JSON answer, or an ApiError carrying the server's {"error"} message. */
async function api(path, { method = 'GET', body, headers } = {}) {
  setBusy(+1);
  try {
    let r;
    try {
      r = await fetch(path, { method, body, headers, cache: 'no-store' });
    } catch (e) {
      throw new ApiError('the explorer does not answer (is cnnlab explore still running?)', 0);
    }
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null; // not JSON: said below by the status code
    }
    if (!r.ok) throw new ApiError((data && data.error) || `HTTP ${r.status}`, r.status);
    return data;
  } finally {
    setBusy(-1);
  }
}

/** A query string from an object, leaving out null and empty values. */
function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, String(v));
  return q.toString();
}

// ============================================================================================ colour and pictures
// Colour maps as nine stops (sampled from matplotlib's), interpolated into 256-entry lookup tables.
const STOPS = {
  viridis: [[68, 1, 84], [71, 45, 123], [59, 82, 139], [44, 114, 142], [33, 145, 140], [40, 174, 128],
    [94, 201, 98], [173, 220, 48], [253, 231, 37]],
  inferno: [[0, 0, 4], [33, 12, 74], [87, 16, 110], [138, 34, 106], [188, 55, 84], [228, 90, 49], [249, 142, 9],
    [249, 203, 53], [252, 255, 164]],
  jet: [[0, 0, 128], [0, 0, 255], [0, 128, 255], [22, 255, 225], [125, 255, 122], [228, 255, 19], [255, 148, 0],
    [255, 30, 0], [128, 0, 0]],
  diverging: [[5, 48, 97], [42, 113, 178], [107, 172, 209], [194, 221, 236], [247, 246, 246], [251, 204, 180],
    [228, 128, 102], [186, 40, 50], [103, 0, 31]],
};
const LUTS = {};

/** The 256x3 lookup table of a colour map. */
function lut(name) {
  if (!LUTS[name]) {
    const stops = STOPS[name];
    const table = new Uint8ClampedArray(256 * 3);
    for (let i = 0; i < 256; i++) {
      const t = (i / 255) * (stops.length - 1);
      const j = Math.min(stops.length - 2, Math.floor(t));
      const f = t - j;
      for (let c = 0; c < 3; c++) table[i * 3 + c] = stops[j][c] + f * (stops[j + 1][c] - stops[j][c]);
    }
    LUTS[name] = table;
  }
  return LUTS[name];
}
/** A CSS colour for t in [0, 1] on a colour map. */
function cssColour(name, t) {
  const L = lut(name);
  const i = Math.max(0, Math.min(255, Math.round(t * 255))) * 3;
  return `rgb(${L[i]}, ${L[i + 1]}, ${L[i + 2]})`;
}

const dataUrl = (b64) => `data:image/png;base64,${b64}`;

/** A base64 PNG, decoded. */
async function decodePng(b64) {
  const img = new Image();
  img.src = dataUrl(b64);
  await img.decode();
  return img;
}

/** An image's RGBA pixels. */
function pixelsOf(img) {
  const c = el('canvas');
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext('2d');
  g.drawImage(img, 0, 0);
  return g.getImageData(0, 0, c.width, c.height);
}

/** Resizes a canvas only when its size changes (resizing clears it and costs a reallocation). */
function sizeCanvas(canvas, w, h) {
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
}

/** Paints the w x h region at (x0, y0) of a grayscale picture's pixels into a canvas through colour map `cmap`. */
function paintGray(canvas, src, x0, y0, w, h, cmap) {
  sizeCanvas(canvas, w, h);
  const g = canvas.getContext('2d');
  const out = g.createImageData(w, h);
  const L = lut(cmap);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = src.data[((y0 + y) * src.width + x0 + x) * 4];
      const o = (y * w + x) * 4;
      out.data[o] = L[v * 3];
      out.data[o + 1] = L[v * 3 + 1];
      out.data[o + 2] = L[v * 3 + 2];
      out.data[o + 3] = 255;
    }
  }
  g.putImageData(out, 0, 0);
}

/** Draws an image into a canvas at its own size (the CSS enlarges it, pixelated). */
function paintImage(canvas, img) {
  sizeCanvas(canvas, img.naturalWidth, img.naturalHeight);
  const g = canvas.getContext('2d');
  g.clearRect(0, 0, canvas.width, canvas.height);
  g.drawImage(img, 0, 0);
}

/** Sets a canvas's displayed size so its larger side is `px` CSS pixels. */
function displaySize(canvas, w, h, px) {
  const s = px / Math.max(w, h);
  canvas.style.width = `${Math.round(w * s)}px`;
  canvas.style.height = `${Math.round(h * s)}px`;
  return s;
}

/** A heat map over the input: input luminance dimmed, the map's colour blended in by its own strength. */
function blendHeat(canvas, input, heat, cmap, strength = 1) {
  const w = heat.width;
  const h = heat.height;
  sizeCanvas(canvas, w, h);
  const g = canvas.getContext('2d');
  const out = g.createImageData(w, h);
  const L = lut(cmap);
  const sameSize = input && input.width === w && input.height === h;
  for (let i = 0; i < w * h; i++) {
    const v = heat.data[i * 4];
    const a = strength * Math.sqrt(v / 255); // sqrt: the faint tail of a receptive field stays visible
    const base = sameSize ? (input.data[i * 4] + input.data[i * 4 + 1] + input.data[i * 4 + 2]) / 3 * 0.55 : 0;
    for (let c = 0; c < 3; c++) out.data[i * 4 + c] = base * (1 - a) + L[v * 3 + c] * a;
    out.data[i * 4 + 3] = 255;
  }
  g.putImageData(out, 0, 0);
}

// ============================================================================================ state and views
const state = {
  run: null, // describe()
  input: null, // the current input: {image, png, source, index?, label?, prediction}
  inputImg: null, // its picture, decoded
  inputPixels: null, // and its pixels
  view: null, // the view shown
  stale: {}, // view name -> true when its data is out of date
  layers: null, // the last activations' layers
  sprites: new Map(), // layer name -> its sprite's pixels
  unit: null, // the selected unit {layer, channel, row, col}
  detail: null, // the layer whose detail is open
};

// Each view: render() draws it for the current input; `image` views go stale when the input changes.
const views = {
  overview: { render: () => renderOverview(), image: true },
  pick: { render: () => renderPick(), image: false },
  conv: { render: () => runConv(), image: () => $('#conv-input-src').value === 'image' },
  attribution: { render: () => runAttribution(), image: true },
  learned: { render: () => renderLearned(), image: false },
  anatomy: { render: () => renderAnatomy(), image: false },
};

function showView(name) {
  if (!views[name]) name = 'overview';
  state.view = name;
  for (const v of Object.keys(views)) $(`#view-${v}`).hidden = v !== name;
  for (const tab of $$('#tabs [data-view]')) tab.setAttribute('aria-selected', String(tab.dataset.view === name));
  if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
  if (state.stale[name] !== false) refresh(name);
}

function refresh(name) {
  state.stale[name] = false;
  guard(name, views[name].render)();
}

/** Marks the views that depend on the input stale, and redraws the one shown. */
function inputChanged() {
  const depends = (v) => (typeof v.image === 'function' ? v.image() : v.image);
  for (const [name, v] of Object.entries(views)) if (depends(v)) state.stale[name] = true;
  if (views[state.view] && depends(views[state.view])) refresh(state.view);
}

// ============================================================================================ the input
let inputSeq = 0; // only the latest input request's answer is used (strokes can outrun the server)

/** Sends an input (a drawing, a file, a test image) and makes its answer the current input; false on an error
 * (said in the status line unless `quiet`). */
async function useInput(where, request, quiet = false) {
  const seq = ++inputSeq;
  try {
    const d = await request();
    const img = await decodePng(d.png);
    if (seq === inputSeq) setInput(d, img); // else a newer input overtook this one
    return true;
  } catch (e) {
    if (seq === inputSeq && !quiet) fail(where, e);
    return false;
  }
}

function setInput(d, img) {
  state.input = d;
  state.inputImg = img;
  state.inputPixels = pixelsOf(img);
  const c = $('#model-input');
  paintImage(c, img);
  displaySize(c, img.naturalWidth, img.naturalHeight, 112);
  $('#input-source').textContent = describeInput(d);
  renderPrediction(d);
  $('#draw-canvas').classList.toggle('inactive', d.source !== 'drawing'); // the drawing is not the input now
  const top = d.prediction.reduce((a, b) => (b.p > a.p ? b : a));
  status(`${describeInput(d)}: predicted ${top.class} (${pct(top.p)})`);
  for (const t of $$('.thumb')) t.classList.toggle('chosen', d.source === 'test' && Number(t.dataset.index) === d.index);
  inputChanged();
}

function describeInput(d) {
  if (d.source === 'test') return `test image #${d.index} (label: ${state.run.classes[d.label]})`;
  if (d.source === 'drawing') return 'your drawing';
  return 'your file';
}

const loadTest = (index) => useInput('test image', () => api(`/api/images/test/${index}`, { method: 'POST' }));

/** The class probability bars (built once, then only their widths change). */
function renderPrediction(d) {
  const box = $('#pred-bars');
  const classes = state.run.classes;
  if (box.children.length !== classes.length) {
    box.replaceChildren(...classes.map((name, i) => el('div', { class: 'bar-row', dataset: { testid: 'pred-row', class: i } },
      el('span', { class: 'bar-label', text: name, title: name }),
      el('span', { class: 'bar-track' }, el('span', { class: 'bar-fill' })),
      el('span', { class: 'bar-value mono' }))));
  }
  const best = Math.max(...d.prediction.map((p) => p.p));
  for (const p of d.prediction) {
    const row = box.children[p.index];
    row.dataset.p = String(p.p);
    $('.bar-fill', row).style.width = `${(100 * p.p).toFixed(2)}%`;
    $('.bar-value', row).textContent = pct(p.p);
    row.classList.toggle('top', p.p === best);
    row.classList.toggle('truth', d.label === p.index);
    row.title = `${p.class}: p = ${p.p}${d.label === p.index ? ' (the true label)' : ''}`;
  }
  box.dataset.image = d.image;
}

// ---------------------------------------------------------------------------------- the drawing canvas
const draw = { canvas: null, g: null, erasing: false, down: false, last: null };

function initDrawing() {
  draw.canvas = $('#draw-canvas');
  draw.g = draw.canvas.getContext('2d');
  clearCanvas();
  const c = draw.canvas;
  const at = (e) => {
    const r = c.getBoundingClientRect();
    return [(e.clientX - r.left) * (c.width / r.width), (e.clientY - r.top) * (c.height / r.height)];
  };
  c.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    c.setPointerCapture(e.pointerId);
    draw.down = true;
    $('#draw-hint').hidden = true;
    draw.last = at(e);
    strokeTo(draw.last);
  });
  c.addEventListener('pointermove', (e) => {
    if (!draw.down) return;
    const p = at(e);
    strokeTo(p);
    draw.last = p;
  });
  const end = () => {
    if (!draw.down) return;
    draw.down = false;
    sendDrawing();
  };
  c.addEventListener('pointerup', end);
  c.addEventListener('pointercancel', end);
  $('#eraser').addEventListener('click', () => {
    draw.erasing = !draw.erasing;
    $('#eraser').setAttribute('aria-pressed', String(draw.erasing));
  });
  $('#clear').addEventListener('click', clearCanvas);
}

function clearCanvas() {
  draw.g.fillStyle = '#000';
  draw.g.fillRect(0, 0, draw.canvas.width, draw.canvas.height);
}

/** A round-capped segment from the last point to p (a dot when the stroke has just begun). */
function strokeTo(p) {
  const g = draw.g;
  g.strokeStyle = draw.erasing ? '#000' : '#fff';
  g.lineWidth = Number($('#brush-size').value);
  g.lineCap = 'round';
  g.lineJoin = 'round';
  g.beginPath();
  g.moveTo(draw.last[0], draw.last[1]);
  g.lineTo(p[0] + 0.01, p[1]); // a zero-length line draws nothing: nudge it
  g.stroke();
}

function sendDrawing() {
  draw.canvas.toBlob((blob) => {
    if (!blob) return;
    useInput('drawing', () => api('/api/images?kind=drawing', {
      method: 'POST', body: blob, headers: { 'Content-Type': 'image/png' },
    }));
  }, 'image/png');
}

function initUpload() {
  $('#upload').addEventListener('change', (e) => {
    const file = e.target.files[0];
    e.target.value = ''; // the same file again is a new choice
    if (!file) return;
    if (file.size > state.run.max_upload_bytes) {
      status(`upload: ${file.name} is ${fmtInt(file.size)} bytes, over the limit of ${fmtInt(state.run.max_upload_bytes)}`, 'error');
      return;
    }
    useInput('upload', () => api('/api/images?kind=file', {
      method: 'POST', body: file, headers: { 'Content-Type': file.type || 'application/octet-stream' },
    }));
  });
}

// ============================================================================================ network overview
const OVERVIEW_CHANNELS = 32; // channels shown per layer in the overview (the layer's detail shows all)
const MAP_PX = 30; // a channel map's larger side in the overview
const DETAIL_PX = 84; // and in a layer's detail
let overviewSeq = 0;

async function renderOverview() {
  const box = $('#layers');
  if (!state.input) {
    box.replaceChildren(el('p', { class: 'muted', text: 'Draw something or pick a test image.' }));
    return;
  }
  const seq = ++overviewSeq;
  const id = state.input.image;
  const d = await api(`/api/activations?${query({ image: id })}`);
  const pixels = await Promise.all(d.layers.map((l) => decodePng(l.png).then(pixelsOf)));
  if (seq !== overviewSeq) return; // a newer input overtook this one
  state.layers = d.layers;
  state.sprites = new Map(d.layers.map((l, i) => [l.name, pixels[i]]));
  const signature = d.layers.map((l) => `${l.name}:${l.shape}`).join('|');
  if (box.dataset.signature !== signature) buildLayerRows(d.layers, signature);
  paintInputRow();
  for (const l of d.layers) paintLayerMaps(l, $(`.layer-row[data-layer="${CSS.escape(l.name)}"] .maps`, box), false);
  if (state.detail) openLayer(state.detail, false);
  markSelectedUnit();
  box.dataset.image = id;
  if (state.unit) await loadUnit();
}

/** One row per layer (the input first): its label, then its channel maps (or a strip for a vector). */
function buildLayerRows(layers, signature) {
  const box = $('#layers');
  const names = new Set(['input', ...layers.map((l) => l.name)]);
  const rows = [el('div', { class: 'layer-row', dataset: { layer: 'input', testid: 'layer-row' } },
    el('div', { class: 'layer-head static' },
      el('span', { class: 'ltype', text: 'Input' }),
      el('span', { class: 'lshape mono', text: shape(state.run.input_size) }),
      el('span', { class: 'lmeta', text: 'the preprocessed image' })),
    el('div', { class: 'maps' }, el('canvas', { class: 'map input-map', id: 'overview-input' }))),
  ];
  layers.forEach((l, i) => {
    const previous = i === 0 ? 'input' : layers[i - 1].name;
    const parts = l.sources || [];
    rows.push(el('div', { class: `layer-row${isMerge(parts) ? ' merge' : ''}`, dataset: { layer: l.name, testid: 'layer-row' } },
      el('button', { type: 'button', class: 'layer-head', dataset: { testid: 'layer-head', layer: l.name },
        title: `${l.name}: click to see every channel large`, onclick: () => openLayer(l.name, true) },
        el('span', { class: 'ltype', text: l.type }),
        el('span', { class: 'lname mono', text: l.name }),
        el('span', { class: 'lshape mono', text: shape(l.shape) }),
        el('span', { class: 'lmeta', text: `${fmtInt(l.params)} params · ${fmtInt(l.macs)} MACs` }),
        sources(parts, previous, names)),
      el('div', { class: 'maps' })));
  });
  box.replaceChildren(...rows);
  box.dataset.signature = signature;
}

/** The traced graph (the anatomy's table), fetched once per run. */
let anatomyPromise = null;
const loadAnatomy = () => (anatomyPromise = anatomyPromise || api('/api/anatomy'));
/** A merge: several sources, or one that is a function node (add, cat) of several. */
const isMerge = (parts) => parts.length > 1 || parts.some((p) => p.inputs && p.inputs.length > 1);
/** Names shortened for a label: without the dotted prefix they share (one alone: its last two parts). */
function shortNames(names) {
  const split = names.map((n) => n.split('.'));
  if (names.length < 2) return split.map((p) => p.slice(-2).join('.'));
  let common = 0;
  while (split.every((p) => common < p.length - 1 && p[common] === split[0][common])) common++;
  return split.map((p) => p.slice(common).join('.'));
}

/** Where a layer's input comes from, when that is not simply the layer above: a merge names every source. */
function sources(parts, previous, names) {
  if (parts.length === 0 || (parts.length === 1 && !parts[0].inputs && parts[0].name === previous)) return null;
  const link = (name, text) => el('span', {
    class: names.has(name) ? 'link mono' : 'mono', text, title: name, dataset: { source: name },
    onclick: names.has(name) ? (e) => { e.stopPropagation(); flashRow(name); } : null,
  });
  const links = (list) => shortNames(list).map((text, i) => [i ? ' + ' : '', link(list[i], text)]);
  const part = (p) => (p.inputs ? [`${p.op}(`, links(p.inputs), ')'] : links([p.name]));
  return el('span', { class: 'lfrom', dataset: { testid: 'layer-inputs' } }, isMerge(parts) ? '⇐ ' : 'from ',
    ...parts.map((p, i) => [i ? ' + ' : '', ...part(p)]));
}

function flashRow(name) {
  const row = $(`.layer-row[data-layer="${CSS.escape(name)}"]`);
  if (!row) return;
  row.scrollIntoView({ block: 'center', behavior: 'smooth' });
  row.classList.remove('flash');
  void row.offsetWidth; // restart the animation
  row.classList.add('flash');
}

function paintInputRow() {
  const c = $('#overview-input');
  if (!c || !state.inputImg) return;
  paintImage(c, state.inputImg);
  displaySize(c, state.inputImg.naturalWidth, state.inputImg.naturalHeight, 2 * MAP_PX);
}

/** Paints a layer's maps (cut from its sprite) into `box`: the first OVERVIEW_CHANNELS, or all (`all`). */
function paintLayerMaps(layer, box, all) {
  const src = state.sprites.get(layer.name);
  if (!layer.spatial) {
    let c = box.querySelector('canvas');
    if (!c) box.replaceChildren(c = el('canvas', { class: 'strip', title: `${layer.name}: ${layer.width} values` }));
    paintGray(c, src, 0, 0, layer.width, 1, 'viridis');
    c.dataset.layer = layer.name;
    return;
  }
  const count = all ? layer.channels : Math.min(layer.channels, OVERVIEW_CHANNELS);
  const size = all ? DETAIL_PX : MAP_PX;
  let maps = $$('canvas.map', box);
  if (maps.length !== count) {
    maps = Array.from({ length: count }, (_, ch) => el('canvas', {
      class: 'map', dataset: { testid: 'map', layer: layer.name, channel: ch },
      title: `${layer.name} channel ${ch}: click a pixel to inspect that unit`,
    }));
    const items = all ? maps.map((m, ch) => el('figure', { class: 'big-map' }, m, el('figcaption', { text: `${ch}` }))) : maps;
    box.replaceChildren(...items);
    if (!all && layer.channels > count) {
      box.append(el('button', { type: 'button', class: 'more-maps', text: `+${layer.channels - count}`,
        title: 'show every channel', onclick: () => openLayer(layer.name, true) }));
    }
  }
  maps.forEach((m, ch) => {
    const col = ch % layer.cols;
    const row = Math.floor(ch / layer.cols);
    paintGray(m, src, col * layer.width, row * layer.height, layer.width, layer.height, 'viridis');
    displaySize(m, layer.width, layer.height, size);
    m.dataset.peak = String(layer.channel_max[ch]);
  });
}

/** The layer's detail above the rows: every channel large (`scroll`: bring it into view). */
function openLayer(name, scroll) {
  const layer = (state.layers || []).find((l) => l.name === name);
  const box = $('#layer-detail');
  if (!layer) return;
  state.detail = name;
  box.hidden = false;
  if (box.dataset.layer !== name) {
    box.replaceChildren(
      el('div', { class: 'detail-head' },
        el('h3', {}, `${layer.type} `, el('span', { class: 'mono', text: layer.name })),
        el('button', { type: 'button', class: 'close', text: 'close', dataset: { testid: 'detail-close' },
          onclick: () => { box.hidden = true; state.detail = null; box.dataset.layer = ''; } })),
      el('div', { class: 'small muted detail-meta' }),
      el('div', { class: layer.spatial ? 'detail-maps' : 'detail-strip' }),
      el('div', { class: 'small mono readout', text: layer.spatial ? 'point at a map to read its values' : '' }));
    box.dataset.layer = name;
  }
  $('.detail-meta', box).textContent = `output ${shape(layer.shape)} · ${fmtInt(layer.params)} params · ` +
    `${fmtInt(layer.macs)} MACs · values ${fmt(layer.min)} to ${fmt(layer.max)} (one colour scale for the layer)`;
  paintLayerMaps(layer, $('.detail-maps, .detail-strip', box), true);
  markSelectedUnit();
  if (scroll) box.scrollIntoView({ block: 'start', behavior: 'smooth' });
}

/** Which unit of a map a pointer event is over: [row, col] in the map's own pixels. */
function unitAt(canvas, e) {
  const r = canvas.getBoundingClientRect();
  const col = Math.floor(((e.clientX - r.left) / r.width) * canvas.width);
  const row = Math.floor(((e.clientY - r.top) / r.height) * canvas.height);
  return [Math.max(0, Math.min(canvas.height - 1, row)), Math.max(0, Math.min(canvas.width - 1, col))];
}

function initOverview() {
  const onMapClick = (e) => {
    const m = e.target.closest('canvas.map[data-layer]');
    if (!m) return;
    const [row, col] = unitAt(m, e);
    guard('unit', selectUnit)(m.dataset.layer, Number(m.dataset.channel), row, col);
  };
  $('#layers').addEventListener('click', onMapClick);
  $('#layer-detail').addEventListener('click', onMapClick);
  $('#layer-detail').addEventListener('mousemove', (e) => {
    const m = e.target.closest('canvas.map[data-layer]');
    const layer = m && (state.layers || []).find((l) => l.name === m.dataset.layer);
    if (!layer) return;
    const [row, col] = unitAt(m, e);
    const ch = Number(m.dataset.channel);
    const src = state.sprites.get(layer.name);
    const x = (ch % layer.cols) * layer.width + col;
    const y = Math.floor(ch / layer.cols) * layer.height + row;
    const v = layer.min + (src.data[(y * src.width + x) * 4] / 255) * (layer.max - layer.min);
    $('.readout', $('#layer-detail')).textContent =
      `channel ${ch} at (${row}, ${col}): ≈ ${fmt(v)}  (its peak ${fmt(layer.channel_max[ch])})`;
  });
}

// ---------------------------------------------------------------------------------- one unit
const UNIT_PX = 208; // the unit panel's pictures of the input
let unitSeq = 0;

async function selectUnit(layer, channel, row, col) {
  state.unit = { layer, channel, row, col };
  markSelectedUnit();
  if (!state.run.has_gradients) {
    $('#unit-body').hidden = true;
    $('#unit-empty').textContent = `Inspecting a unit ${NEEDS_GRADIENTS}.`;
    $('#unit-empty').dataset.testid = 'unit-no-gradients';
    return;
  }
  await loadUnit();
}

function markSelectedUnit() {
  for (const m of $$('canvas.map.selected')) m.classList.remove('selected');
  if (!state.unit) return;
  const sel = `canvas.map[data-layer="${CSS.escape(state.unit.layer)}"][data-channel="${state.unit.channel}"]`;
  for (const m of $$(sel)) m.classList.add('selected');
}

async function loadUnit() {
  const u = state.unit;
  if (!u || !state.input || !state.run.has_gradients) return;
  const seq = ++unitSeq;
  const position = `${u.row},${u.col}`;
  const d = await api(`/api/unit?${query({ image: state.input.image, layer: u.layer, channel: u.channel, position })}`);
  const erf = await decodePng(d.erf.png);
  if (seq !== unitSeq) return;
  renderUnit(d, pixelsOf(erf));
}

function renderUnit(d, erf) {
  $('#unit-empty').hidden = true;
  const body = $('#unit-body');
  body.hidden = false;
  body.dataset.layer = d.layer;
  body.dataset.channel = String(d.channel);
  body.dataset.position = d.position.join(',');
  $('#unit-title').replaceChildren(el('span', { class: 'mono', text: d.layer }),
    ` · channel ${d.channel} · unit (${d.position.join(', ')})`);
  const img = state.inputImg;
  const [H, W] = [img.naturalHeight, img.naturalWidth];
  // the input with the theoretical receptive field: `bounds` in pixel units (0 = the top/left edge)
  const c = $('#unit-input');
  paintImage(c, img);
  const s = displaySize(c, W, H, UNIT_PX);
  for (const stage of $$('#unit-body .stage')) {
    stage.style.width = c.style.width;
    stage.style.height = c.style.height;
  }
  const [rows, cols] = d.regions;
  const place = (box, rb, cb) => {
    box.style.top = `${rb[0] * s}px`;
    box.style.left = `${cb[0] * s}px`;
    box.style.height = `${(rb[1] - rb[0]) * s}px`;
    box.style.width = `${(cb[1] - cb[0]) * s}px`;
  };
  const rect = $('#rf-rect');
  place(rect, rows.bounds, cols.bounds);
  rect.dataset.rows = rows.pixels.join(',');
  rect.dataset.cols = cols.pixels.join(',');
  rect.dataset.bounds = [...rows.bounds, ...cols.bounds].join(',');
  const clipped = rows.unclipped[0] !== rows.bounds[0] || rows.unclipped[1] !== rows.bounds[1] ||
    cols.unclipped[0] !== cols.bounds[0] || cols.unclipped[1] !== cols.bounds[1];
  const unclipped = $('#rf-unclipped');
  unclipped.hidden = !clipped;
  if (clipped) place(unclipped, rows.unclipped, cols.unclipped);
  const span = (r) => r.pixels[1] - r.pixels[0] + 1;
  $('#rf-text').textContent = `rows ${rows.pixels[0]}–${rows.pixels[1]}, columns ${cols.pixels[0]}–${cols.pixels[1]}: ` +
    `${span(rows)} × ${span(cols)} pixels, centred at (${fmt(rows.centre)}, ${fmt(cols.centre)})` +
    (clipped ? `; dashed: the whole field (${fmt(rows.unclipped[1] - rows.unclipped[0])} × ` +
      `${fmt(cols.unclipped[1] - cols.unclipped[0])}), partly over the padding` : '');
  // the effective receptive field as a heat map over the input
  const e = $('#unit-erf');
  blendHeat(e, state.inputPixels, erf, 'inferno');
  displaySize(e, erf.width, erf.height, UNIT_PX);
  place($('#erf-rect'), rows.bounds, cols.bounds);
  $('#erf-text').textContent = `|gradient| from 0 to ${fmt(d.erf.max)}; the outline is the theoretical field`;
  renderKernel(d.kernel, d.layer);
}

/** The kernel feeding the unit: one small heat grid per input channel, the chosen one as a table. */
function renderKernel(kernel, layer) {
  const box = $('#unit-kernel');
  if (!kernel) {
    const type = ((state.layers || []).find((l) => l.name === layer) || {}).type || 'this';
    box.replaceChildren(el('p', { class: 'small muted',
      text: `No kernel: a ${type} layer has no weights of its own; its field comes from the layers before it.` }));
    return;
  }
  const [cin, kh, kw] = kernel.shape;
  const w = kernel.weights;
  const m = Math.max(1e-12, ...w.flat(2).map(Math.abs)); // one symmetric scale: white is 0
  const colour = (v) => cssColour('diverging', (v / m + 1) / 2);
  const strength = w.map((ch) => ch.flat().reduce((a, v) => a + Math.abs(v), 0));
  let chosen = strength.indexOf(Math.max(...strength));
  const table = el('table', { class: 'kernel-table mono', dataset: { testid: 'kernel-table' } });
  const showTable = () => {
    const caption = `input channel ${chosen}` + (cin > 1 ? ' (click another above)' : '');
    table.replaceChildren(el('caption', { class: 'small', text: caption }),
      ...w[chosen].map((r) => el('tr', {}, ...r.map((v) => {
        const td = el('td', { text: fmt(v, 2), title: String(v) });
        td.style.backgroundColor = colour(v);
        return td;
      }))));
    for (const g of $$('.kernel-mini', box)) g.classList.toggle('chosen', Number(g.dataset.channel) === chosen);
  };
  const minis = cin > 1 ? el('div', { class: 'kernel-minis' }, ...w.map((ch, i) => {
    const cv = el('canvas', { class: 'kernel-mini pixelated', dataset: { channel: i }, title: `input channel ${i}` });
    sizeCanvas(cv, kw, kh);
    const g = cv.getContext('2d');
    ch.forEach((r, y) => r.forEach((v, x) => { g.fillStyle = colour(v); g.fillRect(x, y, 1, 1); }));
    cv.style.width = `${kw * 7}px`;
    cv.style.height = `${kh * 7}px`;
    cv.addEventListener('click', () => { chosen = i; showTable(); });
    return cv;
  })) : null;
  box.replaceChildren(
    el('div', { class: 'caption', text: `its kernel: ${kernel.shape.join('×')} weights` +
      (kernel.bias == null ? '' : `, bias ${fmt(kernel.bias)}`) }),
    minis, table);
  showTable();
}

// ============================================================================================ test images
const pick = { offset: 0, total: 0, seq: 0 };

async function renderPick(append = false) {
  const seq = ++pick.seq;
  if (!append) pick.offset = 0;
  const label = $('#pick-class').value;
  const mistakes = $('#pick-mistakes').checked;
  const grid = $('#pick-grid');
  let d;
  try {
    d = await api(`/api/test-images?${query({ label, mistakes: mistakes || null, offset: pick.offset, limit: 48 })}`);
  } catch (e) {
    grid.replaceChildren(el('p', { class: 'message', text: e.message }));
    throw e;
  }
  if (seq !== pick.seq) return;
  pick.total = d.total;
  pick.offset += d.images.length;
  const thumbs = d.images.map(thumb);
  if (append) grid.append(...thumbs);
  else grid.replaceChildren(...thumbs);
  if (!d.total) grid.replaceChildren(el('p', { class: 'muted', text: 'no test image matches' }));
  $('#pick-count').textContent = `${fmtInt(d.total)} image${d.total === 1 ? '' : 's'}` +
    (mistakes ? ', the most confident mistakes first' : '');
  $('#pick-more').hidden = pick.offset >= pick.total;
}

/** A test image's thumbnail button: its label, and the prediction when wrong; a click makes it the input. */
function thumb(t) {
  const classes = state.run.classes;
  const wrong = t.predicted !== t.label;
  const b = el('button', { type: 'button', class: `thumb${wrong ? ' wrong' : ''}`,
    dataset: { testid: 'test-thumb', index: t.index, label: t.label, predicted: t.predicted },
    title: `test image #${t.index}: ${classes[t.label]}, predicted ${classes[t.predicted]} (${pct(t.p)})`,
    onclick: () => loadTest(t.index) },
  el('img', { src: dataUrl(t.png), alt: `test image ${t.index}` }),
  el('span', { class: 'thumb-label', text: classes[t.label] }),
  wrong ? el('span', { class: 'thumb-pred', text: `→ ${classes[t.predicted]}` }) : null);
  if (state.input && state.input.source === 'test' && state.input.index === t.index) b.classList.add('chosen');
  return b;
}

function initPick() {
  $('#pick-class').append(...state.run.classes.map((c, i) => el('option', { value: i, text: `${i}: ${c}` })));
  $('#pick-class').addEventListener('change', guard('test images', () => renderPick()));
  $('#pick-mistakes').addEventListener('change', guard('test images', () => renderPick()));
  $('#pick-more').addEventListener('click', guard('test images', () => renderPick(true)));
  $('#go-pick').addEventListener('click', () => showView('pick'));
}

// ============================================================================================ the convolution
const conv = { data: null, step: 0, filled: -1, timer: null, cells: null, out: null, seq: 0, sharpen: null, debounce: null };
const POOLS = new Set(['max', 'avg']);

function initConv() {
  const src = $('#conv-input-src');
  for (const [name, description] of Object.entries(state.run.examples)) {
    src.append(el('option', { value: `ex:${name}`, text: `example ${name}`, title: description }));
  }
  src.value = state.run.examples['lecture-3x3'] ? 'ex:lecture-3x3' : 'typed';
  const form = $('#conv-form');
  form.addEventListener('submit', (e) => e.preventDefault());
  form.addEventListener('input', (e) => {
    if (e.target.tagName === 'SELECT' || e.target.type === 'checkbox') return; // 'change' below
    scheduleConv(500);
  });
  form.addEventListener('change', (e) => {
    if (e.target === src && src.value.startsWith('ex:')) {
      // an example gives its own op and options: start from them
      $('#conv-op').value = exampleOp(src.value.slice(3));
      for (const id of ['#conv-ksize', '#conv-stride', '#conv-padding', '#conv-dilation']) $(id).value = '';
      $('#conv-mode').value = '';
    }
    if (e.target.tagName === 'SELECT' || e.target.type === 'checkbox') scheduleConv(0);
  });
  $('#conv-play').addEventListener('click', togglePlay);
  $('#conv-next').addEventListener('click', () => { stopPlay(); showStep(conv.step + 1); });
  $('#conv-prev').addEventListener('click', () => { stopPlay(); showStep(conv.step - 1); });
  $('#conv-first').addEventListener('click', () => { stopPlay(); showStep(0); });
  $('#conv-last').addEventListener('click', () => { stopPlay(); showStep(Infinity); });
  $('#conv-slider').addEventListener('input', (e) => { stopPlay(); showStep(Number(e.target.value)); });
  $('#conv-speed').addEventListener('change', () => { if (conv.timer) { stopPlay(); togglePlay(); } });
  $('#conv-output').addEventListener('click', (e) => {
    const cell = e.target.closest('[data-step]');
    if (cell) { stopPlay(); showStep(Number(cell.dataset.step)); }
  });
  updateConvControls();
}

/** The op of a lecture example (describe() names them only): pooling examples are named after their pool. */
const exampleOp = (name) => (name.startsWith('maxpool') ? 'max' : name.startsWith('avgpool') ? 'avg' : 'correlate');

/** Shows the controls that apply to the chosen op and sources, disables the others. */
function updateConvControls() {
  const op = $('#conv-op').value;
  const pool = POOLS.has(op);
  const inputSrc = $('#conv-input-src').value;
  const example = inputSrc.startsWith('ex:');
  const kernelSrc = $('#conv-kernel-src');
  $('#conv-input-box').hidden = inputSrc !== 'typed';
  $('#conv-kernel-src-box').hidden = pool || example;
  $('#conv-kernel-note').hidden = pool || !example;
  $('#conv-kernel-box').hidden = pool || example || kernelSrc.value === 'filter';
  $('#conv-kernel').readOnly = kernelSrc.value === 'sharpen';
  $('#conv-filter-box').hidden = pool || example || kernelSrc.value !== 'filter';
  $('#conv-ksize-box').classList.toggle('off', !pool);
  $('#conv-ksize').disabled = !pool;
  $('#conv-ksize').placeholder = example ? "example's" : '2';
  $('#conv-mode').disabled = pool;
  $('#conv-mode-box').classList.toggle('off', pool);
  $('#conv-value-box').hidden = pool || $('#conv-mode').value !== 'constant';
  $('#conv-stride').placeholder = example ? "example's" : pool ? 'kernel size' : '1';
  $('#conv-padding').placeholder = example ? "example's" : '0';
  $('#conv-dilation').placeholder = example ? "example's" : '1';
}

function scheduleConv(ms) {
  clearTimeout(conv.debounce);
  conv.debounce = setTimeout(guard('convolution', runConv), ms);
}

/** The query for /api/conv from the controls. */
async function convQuery() {
  const op = $('#conv-op').value;
  const pool = POOLS.has(op);
  const inputSrc = $('#conv-input-src').value;
  const example = inputSrc.startsWith('ex:') ? inputSrc.slice(3) : null;
  const q = { op };
  if (example) q.example = example;
  else if (inputSrc === 'image') {
    if (!state.input) throw new ApiError('draw or pick an input first', 0);
    q.image = state.input.image;
  } else q.input = $('#conv-input').value;
  if (!pool && !example) {
    const kernelSrc = $('#conv-kernel-src').value;
    if (kernelSrc === 'filter') q.filter = $('#conv-filter').value || '0';
    else if (kernelSrc === 'sharpen') q.kernel = $('#conv-kernel').value = await sharpenKernel();
    else q.kernel = $('#conv-kernel').value;
  }
  if (pool) q.kernel_size = $('#conv-ksize').value.trim() || (example ? null : '2');
  q.stride = $('#conv-stride').value.trim();
  // A padding of 0 is sent as "0,0": the API reads a plain 0 as "not given" (see the report)
  const padding = $('#conv-padding').value.trim();
  q.padding = /^0+$/.test(padding) ? '0,0' : padding;
  q.dilation = $('#conv-dilation').value.trim();
  if (!pool) {
    q.padding_mode = $('#conv-mode').value;
    if (q.padding_mode === 'constant') q.value = $('#conv-value').value.trim();
  }
  return q;
}

/** The lecture's sharpen kernel as a typed matrix (asked of the API once). */
async function sharpenKernel() {
  if (!conv.sharpen) {
    const d = await api('/api/conv?example=sharpen');
    conv.sharpen = d.kernel.map((r) => r.map((v) => fmt(v)).join(' ')).join('; ');
  }
  return conv.sharpen;
}

async function runConv() {
  updateConvControls();
  const seq = ++conv.seq;
  const message = $('#conv-message');
  let d;
  try {
    d = await api(`/api/conv?${query(await convQuery())}`);
  } catch (e) {
    if (seq !== conv.seq) return;
    message.textContent = e.message;
    $('#conv-stage').classList.add('stale');
    return;
  }
  if (seq !== conv.seq) return;
  message.textContent = '';
  $('#conv-stage').classList.remove('stale');
  renderConv(d);
}

/** Cell size and whether numbers fit, for a grid of `n` columns holding `matrix`'s values. */
function cellSize(n, matrix, room = 300) {
  const widest = Math.max(1, ...matrix.flat().map((v) => fmt(v).length));
  const needed = Math.max(24, Math.ceil(widest * 6.8 + 8)); // 11px monospace digits
  const fit = Math.floor(room / n);
  if (fit >= needed) return { size: Math.min(fit, Math.max(needed, 40)), numbers: true };
  return { size: Math.max(9, Math.min(40, fit)), numbers: false };
}

/** A matrix as a grid of cells; `colour(v)` gives each cell's background. Returns the cells, row by row. */
function buildGrid(box, matrix, { size, numbers, colour, classOf }) {
  const cols = matrix[0] ? matrix[0].length : 0;
  box.style.gridTemplateColumns = `repeat(${cols}, ${size}px)`;
  box.style.gridAutoRows = `${size}px`;
  box.classList.toggle('numbers', numbers);
  box.classList.toggle('pixels', !numbers);
  const cells = matrix.map((row, r) => row.map((v, c) => {
    const cell = el('div', { class: `cell ${classOf ? classOf(r, c) : ''}`, title: `(${r}, ${c}) ${fmt(v, 5)}` });
    if (numbers) cell.textContent = fmt(v);
    if (colour) cell.style.backgroundColor = colour(v, r, c);
    return cell;
  }));
  box.replaceChildren(...cells.flat());
  return cells;
}

function range(matrix) {
  const finite = matrix.flat().filter((v) => v != null && Number.isFinite(v));
  return finite.length ? [Math.min(...finite), Math.max(...finite)] : [0, 1];
}

function renderConv(d) {
  stopPlay();
  conv.data = d;
  const pool = d.kernel == null;
  const [H, W] = [d.input.length, d.input[0].length];
  const [[top, bottom], [left, right]] = d.pads;
  const isPad = (r, c) => r < top || r >= top + H || c < left || c >= left + W;
  const pcols = d.padded[0].length;
  const { size, numbers } = cellSize(pcols, d.padded);
  const [lo, hi] = range(d.padded);
  const tint = (v, t, hue) => (numbers ? `hsla(${hue}, 80%, 55%, ${0.08 + 0.5 * t})` : cssColour('viridis', t));
  const norm = (v, a, b) => (v == null ? 0 : b > a ? (v - a) / (b - a) : 0.5);
  // the padded input: the padding hatched; a missing value (null) is -inf padding of max pooling, else NaN
  conv.cells = buildGrid($('#conv-padded'), d.padded, { size, numbers,
    colour: (v, r, c) => (isPad(r, c) && numbers ? null : tint(v, norm(v, lo, hi), 215)),
    classOf: (r, c) => (isPad(r, c) ? 'pad' : '') });
  if (numbers) {
    d.padded.forEach((row, r) => row.forEach((v, c) => {
      if (v == null) conv.cells[r][c].textContent = d.padding_mode === '-inf' && isPad(r, c) ? '−∞' : 'NaN';
    }));
  }
  const padded = top + bottom + left + right > 0;
  $('#conv-input-caption').textContent = `input ${H}×${W}` +
    (padded ? ` · padded ${d.padded.length}×${pcols} (${d.padding_mode})` : '');
  $('#conv-input-caption').title = padded ? `rows +${top} above, +${bottom} below; columns +${left} left, +${right} right` : '';
  // the kernel (or the pooling window)
  const [kh, kw] = d.kernel_size;
  const kernel = pool ? Array.from({ length: kh }, () => Array(kw).fill(null)) : d.kernel;
  const km = Math.max(1e-12, ...(pool ? [1] : kernel.flat().map((v) => Math.abs(v || 0))));
  const ks = pool ? { size: Math.max(14, Math.min(40, Math.floor(160 / kw))) } : cellSize(kw, kernel, 220);
  buildGrid($('#conv-kernel-grid'), kernel, { size: ks.size, numbers: !pool && ks.numbers,
    colour: (v) => (pool ? null : cssColour('diverging', 0.5 + 0.35 * (v / km))),
    classOf: () => (pool ? 'window' : '') });
  $('#conv-kernel-caption').textContent = pool ? `${d.op} pool ${kh}×${kw}` : `kernel ${kh}×${kw}` +
    (d.op === 'convolve' ? ' (flipped when applied)' : '');
  // the output, filled in as the steps go
  const [oh, ow] = d.output_shape;
  const out = cellSize(ow, d.output, 260);
  const [olo, ohi] = range(d.output);
  conv.out = buildGrid($('#conv-output'), d.output, { size: out.size, numbers: out.numbers, colour: null });
  conv.outColour = (v) => (out.numbers ? `hsla(25, 90%, 55%, ${0.1 + 0.55 * norm(v, olo, ohi)})`
    : cssColour('viridis', norm(v, olo, ohi)));
  conv.outNumbers = out.numbers;
  d.steps.forEach((s, i) => {
    const cell = conv.out[s.index[0]][s.index[1]];
    cell.dataset.step = String(i);
    cell.classList.add('empty');
    if (out.numbers) cell.textContent = '';
  });
  $('#conv-output-caption').textContent = `output ${oh}×${ow}`;
  // the output size formula, notes, the example
  $('#conv-size').replaceChildren(...d.formula.map((line) => el('div', { text: line })));
  $('#conv-notes').replaceChildren(...d.notes.map((n) => el('li', { text: n })));
  const ex = d.example;
  $('#conv-example').textContent = ex ? `${ex.name}: ${ex.description} — ${ex.matches_lecture
    ? "the output matches the lecture's figure" : "the options differ from the lecture's figure, so does the output"}` : '';
  $('#conv-slider').max = String(d.steps.length - 1);
  conv.filled = -1;
  conv.step = -1;
  showStep(0);
  $('#conv-stage').dataset.steps = String(d.steps.length);
}

/** Moves the window to step i: highlights its cells, fills the output up to it, shows its arithmetic. */
function showStep(i) {
  const d = conv.data;
  if (!d || !d.steps.length) return;
  i = Math.max(0, Math.min(d.steps.length - 1, i));
  if (conv.step >= 0) {
    const prev = d.steps[conv.step];
    for (const r of prev.rows) for (const c of prev.cols) conv.cells[r][c].classList.remove('win');
    conv.out[prev.index[0]][prev.index[1]].classList.remove('current');
  }
  const s = d.steps[i];
  for (const r of s.rows) for (const c of s.cols) conv.cells[r][c].classList.add('win');
  // fill (or empty) the output cells between the last step shown and this one
  for (let j = conv.filled + 1; j <= i; j++) setOutput(j, true);
  for (let j = conv.filled; j > i; j--) setOutput(j, false);
  conv.filled = i;
  conv.step = i;
  conv.out[s.index[0]][s.index[1]].classList.add('current');
  $('#conv-slider').value = String(i);
  $('#conv-step-label').textContent = `step ${i + 1} / ${d.steps.length} · output (${s.index.join(', ')}) = ${fmt(s.result)}`;
  $('#conv-step-formula').textContent = s.formula;
  $('#conv-stage').dataset.step = String(i);
  renderStepTables(s);
}

function setOutput(j, on) {
  const s = conv.data.steps[j];
  const cell = conv.out[s.index[0]][s.index[1]];
  cell.classList.toggle('empty', !on);
  cell.style.backgroundColor = on ? conv.outColour(s.result) : '';
  if (conv.outNumbers) cell.textContent = on ? fmt(s.result) : '';
}

/** The step's window values, weights and products as small tables: values × weights = products → sum. */
function renderStepTables(s) {
  const box = $('#conv-step-tables');
  const small = s.values.length * (s.values[0] || []).length <= 49;
  if (!small) {
    box.replaceChildren();
    return;
  }
  const table = (title, m) => el('div', { class: 'step-table' }, el('div', { class: 'caption', text: title }),
    el('table', { class: 'mono' }, ...m.map((r) => el('tr', {}, ...r.map((v) => el('td', { text: v == null ? '−∞' : fmt(v) }))))));
  const parts = [table('window', s.values)];
  if (s.weights) parts.push(el('span', { class: 'op', text: '×' }), table('weights', s.weights),
    el('span', { class: 'op', text: '=' }), table('products', s.products));
  parts.push(el('span', { class: 'op', text: s.weights ? 'Σ →' : (conv.data.op === 'max' ? 'max →' : 'mean →') }),
    el('span', { class: 'result mono', text: fmt(s.result) }));
  box.replaceChildren(...parts);
}

function togglePlay() {
  if (conv.timer) return stopPlay();
  const d = conv.data;
  if (!d) return;
  if (conv.step >= d.steps.length - 1) showStep(0);
  $('#conv-play').textContent = 'pause';
  conv.timer = setInterval(() => {
    if (conv.step >= conv.data.steps.length - 1) return stopPlay();
    showStep(conv.step + 1);
  }, Number($('#conv-speed').value));
}

function stopPlay() {
  clearInterval(conv.timer);
  conv.timer = null;
  $('#conv-play').textContent = 'play';
}

/** "Use in the convolution": first-layer filter N over the current image. */
function convWithFilter(n) {
  $('#conv-op').value = 'correlate';
  $('#conv-input-src').value = state.input ? 'image' : 'typed';
  $('#conv-kernel-src').value = 'filter';
  $('#conv-filter').value = String(n);
  $('#conv-padding').value = 'same';
  state.stale.conv = true;
  showView('conv');
}

// ============================================================================================ where it looks
const METHOD_NAMES = { gradcam: 'Grad-CAM', hirescam: 'HiResCAM', 'gradcam++': 'Grad-CAM++', xgradcam: 'XGrad-CAM',
  layercam: 'LayerCAM', scorecam: 'Score-CAM', eigencam: 'Eigen-CAM (class-agnostic)', ablationcam: 'Ablation-CAM',
  saliency: 'saliency (|∂score / ∂input|)', 'integrated-gradients': 'integrated gradients', occlusion: 'occlusion' };
const CAM_METHODS = new Set(['gradcam', 'hirescam', 'gradcam++', 'xgradcam', 'layercam', 'scorecam', 'eigencam',
  'ablationcam']);
const attr = { seq: 0, map: null, result: null };

function initAttribution() {
  const r = state.run;
  $('#attr-method').append(...r.attributions.map((m) => el('option', { value: m, text: METHOD_NAMES[m] || m })));
  if (r.default_attribution) $('#attr-method').value = r.default_attribution; // chosen by viz --evaluate
  $('#attr-target').append(...r.classes.map((c, i) => el('option', { value: i, text: `${i}: ${c}` })));
  $('#attr-layer').append(...r.conv_layers.map((l) => el('option', { value: l, text: l })));
  if (r.default_layer) $('#attr-layer').value = r.default_layer;
  if (!r.has_gradients) {
    $('#attr-note').textContent = `the CAM methods, saliency and integrated gradients ${NEEDS_GRADIENTS}; occlusion works.`;
  }
  const again = () => { updateAttrControls(); guard('where it looks', runAttribution)(); };
  for (const id of ['#attr-method', '#attr-target', '#attr-layer', '#attr-patch', '#attr-stride', '#attr-faith']) {
    $(id).addEventListener('change', again);
  }
  $('#attr-opacity').addEventListener('input', paintAttribution);
  $('#attr-cmap').addEventListener('change', paintAttribution);
  updateAttrControls();
}

function updateAttrControls() {
  const m = $('#attr-method').value;
  $('#attr-layer-box').hidden = !CAM_METHODS.has(m);
  $('#attr-patch-box').hidden = m !== 'occlusion';
  $('#attr-stride-box').hidden = m !== 'occlusion';
}

async function runAttribution() {
  if (!state.input) return;
  const seq = ++attr.seq;
  const m = $('#attr-method').value;
  const q = { image: state.input.image, method: m, target: $('#attr-target').value,
    faithfulness: $('#attr-faith').checked ? 'true' : null };
  if (CAM_METHODS.has(m)) q.layer = $('#attr-layer').value;
  if (m === 'occlusion') Object.assign(q, { patch: $('#attr-patch').value, stride: $('#attr-stride').value });
  $('#attr-info').textContent = 'computing…';
  let d;
  try {
    d = await api(`/api/attribution?${query(q)}`);
  } catch (e) {
    if (seq === attr.seq) $('#attr-info').textContent = e.message;
    throw e;
  }
  const map = pixelsOf(await decodePng(d.png));
  if (seq !== attr.seq) return;
  attr.map = map;
  attr.result = d;
  paintAttribution();
  const cls = state.run.classes[d.target];
  const p = state.input.prediction[d.target].p;
  $('#attr-info').textContent = `${METHOD_NAMES[d.method] || d.method} for class ${d.target} (${cls}, p = ${pct(p)})` +
    (d.layer ? ` at ${d.layer}` : '') + (d.blank ? ` — the map is ${d.blank}` : '');
  $('#attr-min').textContent = fmt(d.min);
  $('#attr-max').textContent = fmt(d.max);
  renderFaithfulness(d.faithfulness);
  $('#view-attribution').dataset.image = d.image;
  $('#view-attribution').dataset.method = d.method;
}

/** The map over the input at the chosen opacity, the map alone, and the colour bar. */
function paintAttribution() {
  if (!attr.map || !state.inputImg) return;
  const cmap = $('#attr-cmap').value;
  const map = el('canvas');
  paintGray(map, attr.map, 0, 0, attr.map.width, attr.map.height, cmap);
  const alone = $('#attr-map');
  paintGray(alone, attr.map, 0, 0, attr.map.width, attr.map.height, cmap);
  displaySize(alone, attr.map.width, attr.map.height, 140);
  const c = $('#attr-overlay');
  const g = c.getContext('2d');
  g.imageSmoothingEnabled = false; // the input's pixels as the model sees them
  g.clearRect(0, 0, c.width, c.height);
  g.drawImage(state.inputImg, 0, 0, c.width, c.height);
  g.imageSmoothingEnabled = true; // the map smooth: it is coarser than the pixels for Grad-CAM
  g.globalAlpha = Number($('#attr-opacity').value) / 100;
  g.drawImage(map, 0, 0, c.width, c.height);
  g.globalAlpha = 1;
  const bar = $('#attr-colorbar');
  const bg = bar.getContext('2d');
  for (let x = 0; x < 256; x++) {
    bg.fillStyle = cssColour(cmap, x / 255);
    bg.fillRect(x, 0, 1, 1);
  }
}

function renderFaithfulness(f) {
  const box = $('#attr-faithfulness');
  if (!f) {
    box.replaceChildren();
    delete box.dataset.deletion;
    delete box.dataset.insertion;
    delete box.dataset.randomisation;
    return;
  }
  box.dataset.deletion = String(f.deletion_auc);
  box.dataset.insertion = String(f.insertion_auc);
  const fill = (v) => {
    const s = el('span', { class: 'bar-fill' });
    s.style.width = `${Math.max(0, Math.min(1, v)) * 100}%`;
    return s;
  };
  const bar = (label, v, hint) => el('div', { class: 'faith-row' },
    el('span', { class: 'faith-label', text: label }),
    el('span', { class: 'bar-track' }, fill(v)),
    el('span', { class: 'mono', text: fmt(v) }),
    el('span', { class: 'small muted faith-hint', text: hint }));
  const rows = [el('div', { class: 'caption', text: 'faithfulness (area under the class probability curve)' }),
    bar('deletion', f.deletion_auc, 'removing the top pixels first (black): lower is better'),
    bar('insertion', f.insertion_auc, 'adding the top pixels first (black): higher is better')];
  if (f.blur) {
    rows.push(bar('deletion, blur', f.blur.deletion_auc, 'removed pixels take a blurred copy: lower is better'),
      bar('insertion, blur', f.blur.insertion_auc, 'from the blurred copy: higher is better'));
  }
  if (f.road) {
    const signed = (v) => `${v >= 0 ? '+' : ''}${fmt(v)}`;
    rows.push(el('div', { class: 'small', text: `ROAD (the top or bottom half imputed from its neighbours): class ` +
      `probability ${signed(f.road.morf)} removing the most relevant, ${signed(f.road.lerf)} the least; ` +
      'a faithful map makes the first fall further' }));
  }
  const r = f.randomisation;
  if (r) {
    // Adebayo et al.'s check for this image: the same method on the model with every layer re-initialised
    box.dataset.randomisation = r.passes === null ? 'n/a' : (r.passes ? 'pass' : 'fail');
    const text = r.rho === null ? `randomisation check: not measured (${r.why})` :
      `randomisation check: rank correlation ${fmt(r.rho)} with the map of the model with all ${r.layers} ` +
      `layers re-initialised: ` + (r.passes ? `passes (below ${r.threshold}): the map depends on what the ` +
        'model learned' : `FAILS (${r.threshold} or more): the map survives losing everything the model ` +
        'learned, so it shows the image more than the model');
    rows.push(el('div', { class: r.passes === false ? 'small faith-check faith-fail' : 'small faith-check',
      'data-testid': 'attr-randomisation', text }));
  } else {
    delete box.dataset.randomisation;
  }
  box.replaceChildren(...rows);
}

// ============================================================================================ what it learned
async function renderLearned() {
  const parts = [
    ['filters', loadFilters], ['curves', loadHistory], ['confusion', loadConfusion],
  ];
  await Promise.all(parts.map(([where, f]) => f().catch((e) => fail(where, e))));
}

function initMaximize() {
  const r = state.run;
  $('#max-layer').append(...r.conv_layers.map((l) => el('option', { value: l, text: l })));
  if (r.default_layer) $('#max-layer').value = r.default_layer;
  if (!r.has_gradients) {
    $('#max-status').textContent = `The maximal filter response ${NEEDS_GRADIENTS}.`;
    $('#max-status').dataset.testid = 'max-no-gradients';
    $('#max-go').disabled = true;
    $('#max-controls').hidden = true;
    return;
  }
  $('#max-go').addEventListener('click', guard('maximize', maximize));
}

let maxSeq = 0;
/** Starts (or finds cached) the input that maximises layer/channel, polling until it is done. */
async function maximize() {
  const seq = ++maxSeq;
  const layer = $('#max-layer').value;
  const channel = $('#max-channel').value || '0';
  const bar = $('#max-progress');
  const line = $('#max-status');
  const url = `/api/maximize?${query({ layer, channel })}`;
  line.textContent = 'computing…';
  bar.hidden = false;
  bar.value = 0;
  try {
    let d = await api(url, { method: 'POST' });
    while (d.status === 'running') {
      if (seq !== maxSeq) return;
      bar.value = d.progress;
      line.textContent = `computing… ${Math.round(100 * d.progress)}%`;
      await sleep(400);
      d = await api(url, { method: 'POST' });
    }
    if (seq !== maxSeq) return;
    if (d.status !== 'done') throw new ApiError(d.error || 'the computation failed', 0);
    const img = await decodePng(d.png);
    const c = $('#max-image');
    paintImage(c, img);
    displaySize(c, img.naturalWidth, img.naturalHeight, 168);
    c.hidden = false;
    c.dataset.layer = layer;
    c.dataset.channel = channel;
    line.textContent = `${layer} channel ${channel}: the input that excites it most` +
      (d.gain != null ? ` (${fmt(d.gain)}× its response to the starting noise)` : '');
  } catch (e) {
    if (seq === maxSeq) line.textContent = e.message;
    throw e;
  } finally {
    if (seq === maxSeq) bar.hidden = true;
  }
}

async function loadFilters() {
  const box = $('#filters');
  if (!state.run.filters) {
    box.replaceChildren(el('p', { class: 'muted', text: 'this model has no conv layer' }));
    return;
  }
  let d;
  try {
    d = await api('/api/filters');
  } catch (e) {
    box.replaceChildren(el('p', { class: 'message', text: e.message }));
    throw e;
  }
  const gray = d.shape[1] === 1;
  const pics = await Promise.all(d.filters.map(decodePng));
  box.replaceChildren(...pics.map((img, i) => {
    const c = el('canvas', { class: 'pixelated' });
    if (gray) paintGray(c, pixelsOf(img), 0, 0, img.naturalWidth, img.naturalHeight, 'diverging');
    else paintImage(c, img);
    displaySize(c, img.naturalWidth, img.naturalHeight, 40);
    return el('button', { type: 'button', class: 'filter', dataset: { testid: 'filter', index: i },
      title: `filter ${i}: click to run it over the current image in the convolution view`,
      onclick: () => convWithFilter(i) }, c, el('span', { text: String(i) }));
  }));
  $('#filters-layer').textContent = `${d.layer}, ${d.shape.join('×')}${state.run.compression === 'quantize'
    ? ' (int8 kernels, dequantized)' : ''}`;
  $('#filters-note').textContent = gray
    ? `blue negative, white 0, red positive (from ${fmt(d.range[0])} to ${fmt(d.range[1])}); click one to convolve with it`
    : `grey is 0 (from ${fmt(d.range[0])} to ${fmt(d.range[1])}); click one to convolve with it`;
}

async function loadHistory() {
  const note = $('#history-note');
  if (!state.run.history) {
    note.textContent = 'this run has no history.csv (a compressed run keeps its source\'s)';
    $('#history-chart').hidden = true;
    return;
  }
  const d = await api('/api/history');
  const s = d.series;
  const epochs = s.epoch || (s[d.columns[0]] || []).map((_, i) => i + 1);
  const pickSeries = (test) => d.columns.filter((c) => test.test(c) && s[c].some((v) => v != null)).map((c) => [c, s[c]]);
  drawCharts($('#history-chart'), epochs, [
    { title: 'loss', series: pickSeries(/loss$/) },
    { title: 'accuracy', series: pickSeries(/(^|_)acc(uracy)?$/) },
  ]);
  note.textContent = `${epochs.length} epoch${epochs.length === 1 ? '' : 's'}` +
    (epochs.length === 1 ? ': one point per series' : '');
  $('#history-chart').dataset.epochs = String(epochs.length);
}

/** Small line charts side by side on one canvas: each {title, series: [[name, values], ...]} over x. */
function drawCharts(canvas, x, charts) {
  const dpr = window.devicePixelRatio || 1;
  const W = Math.max(320, Math.min(620, canvas.parentElement.clientWidth - 4));
  const H = 220;
  canvas.width = W * dpr;
  canvas.height = H * dpr;
  canvas.style.width = `${W}px`;
  canvas.style.height = `${H}px`;
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, W, H);
  g.font = '11px system-ui, sans-serif';
  const colours = ['#2563eb', '#ea580c', '#16a34a', '#9333ea'];
  const pw = W / charts.length;
  charts.forEach((chart, k) => {
    const box = { x: k * pw + 40, y: 22, w: pw - 54, h: H - 60 };
    const values = chart.series.flatMap(([, v]) => v).filter((v) => v != null);
    g.fillStyle = '#111827';
    g.fillText(chart.title, box.x, 13);
    if (!values.length) {
      g.fillStyle = '#6b7280';
      g.fillText('no data', box.x + 4, box.y + 20);
      return;
    }
    let [lo, hi] = [Math.min(...values), Math.max(...values)];
    if (hi - lo < 1e-9) { lo -= 0.5 * Math.abs(lo || 1) * 0.1 + 0.05; hi += 0.05; }
    const pad = (hi - lo) * 0.08;
    lo -= pad;
    hi += pad;
    const [x0, x1] = x.length > 1 ? [x[0], x[x.length - 1]] : [x[0] - 0.5, x[0] + 0.5];
    const X = (v) => box.x + ((v - x0) / (x1 - x0)) * box.w;
    const Y = (v) => box.y + box.h - ((v - lo) / (hi - lo)) * box.h;
    // axes and grid
    g.strokeStyle = '#e5e7eb';
    g.fillStyle = '#6b7280';
    g.lineWidth = 1;
    for (let t = 0; t <= 4; t++) {
      const v = lo + ((hi - lo) * t) / 4;
      g.beginPath();
      g.moveTo(box.x, Y(v));
      g.lineTo(box.x + box.w, Y(v));
      g.stroke();
      g.fillText(fmt(v, 3), k * pw + 2, Y(v) + 4);
    }
    const ticks = x.length <= 10 ? x : x.filter((_, i) => i % Math.ceil(x.length / 8) === 0);
    for (const t of ticks) g.fillText(String(t), X(t) - 3, box.y + box.h + 14);
    g.fillText('epoch', k * pw + 2, box.y + box.h + 14);
    // the lines, then a legend under the chart
    chart.series.forEach(([name, v], i) => {
      g.strokeStyle = g.fillStyle = colours[i % colours.length];
      g.lineWidth = 2;
      g.beginPath();
      let moved = false;
      v.forEach((y, j) => {
        if (y == null) return;
        if (moved) g.lineTo(X(x[j]), Y(y));
        else g.moveTo(X(x[j]), Y(y));
        moved = true;
      });
      g.stroke();
      v.forEach((y, j) => {
        if (y == null) return;
        g.beginPath();
        g.arc(X(x[j]), Y(y), 2.5, 0, 2 * Math.PI);
        g.fill();
      });
      const lx = box.x + i * Math.min(100, box.w / 2); // the legend under the chart
      g.fillRect(lx, H - 10, 10, 3);
      g.fillText(name, lx + 14, H - 6);
    });
  });
}

async function loadConfusion() {
  const box = $('#confusion');
  let d;
  try {
    d = await api('/api/confusion');
  } catch (e) {
    box.replaceChildren(el('p', { class: 'message', text: e.message }));
    throw e;
  }
  const k = d.classes.length;
  const table = el('table', { class: 'confusion', dataset: { testid: 'confusion-table' } },
    el('tr', {}, el('th', { class: 'corner', text: 'true \\ predicted' }),
      ...d.classes.map((c, j) => el('th', { class: 'col-head', title: c }, el('span', { text: `${j} ${c}` })))));
  d.matrix.forEach((row, i) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    table.append(el('tr', {}, el('th', { class: 'row-head', text: `${i} ${d.classes[i]}`, title: d.classes[i] }),
      ...row.map((n, j) => {
        const td = el('td', { text: n ? String(n) : '', class: n ? 'hit' : 'zero',
          dataset: { testid: 'confusion-cell', label: i, predicted: j, count: n },
          title: `${n} test image${n === 1 ? '' : 's'} of ${d.classes[i]} predicted ${d.classes[j]} (${pct(n / total)} of the row)` });
        if (n) {
          // green: right, red: a mistake; stronger for a larger share of the row
          td.style.backgroundColor = i === j ? `rgba(22, 163, 74, ${0.12 + 0.75 * (n / total)})`
            : `rgba(220, 38, 38, ${0.1 + 0.8 * (n / total)})`;
          td.addEventListener('click', guard('confusion cell', () => loadCell(i, j, n)));
        }
        return td;
      })));
  });
  box.replaceChildren(table);
  $('#confusion-acc').textContent = `test accuracy ${pct(d.accuracy)} over ${fmtInt(d.images)} images`;
  if (k > 20) table.classList.add('dense');
}

let cellSeq = 0;
async function loadCell(label, predicted, count) {
  const seq = ++cellSeq;
  const c = state.run.classes;
  for (const td of $$('#confusion td.picked')) td.classList.remove('picked');
  const td = $(`#confusion td[data-label="${label}"][data-predicted="${predicted}"]`);
  if (td) td.classList.add('picked');
  const d = await api(`/api/test-images?${query({ label, predicted, limit: 96 })}`);
  if (seq !== cellSeq) return;
  $('#cell-title').textContent = `${c[label]} predicted ${c[predicted]}: ${fmtInt(d.total)} image${d.total === 1 ? '' : 's'}` +
    (d.total > d.images.length ? ` (the first ${d.images.length})` : '') + ' — click one to make it the input';
  const box = $('#cell-images');
  box.replaceChildren(...d.images.map(thumb));
  box.dataset.label = String(label);
  box.dataset.predicted = String(predicted);
}

// ============================================================================================ anatomy
async function renderAnatomy() {
  let d;
  try {
    d = await loadAnatomy();
  } catch (e) {
    anatomyPromise = null; // ask again next time
    $('#anatomy-totals').replaceChildren(el('p', { class: 'message', text: e.message }));
    throw e;
  }
  const rf = (l, key) => {
    const f = l.receptive_field;
    if (!f) return 'all';
    const v = f[key];
    return v[0] === v[1] ? fmt(v[0]) : `${fmt(v[0])}×${fmt(v[1])}`;
  };
  const head = ['#', 'layer', 'type', 'output shape', 'params', 'MACs', 'RF size', 'jump', 'start', 'inputs'];
  const rows = d.layers.map((l, i) => {
    const previous = i > 0 ? d.layers[i - 1].name : null;
    const plain = l.inputs.length === 1 && l.inputs[0] === previous;
    const tr = el('tr', { class: `${l.inputs.length > 1 ? 'merge' : ''} ${l.name !== 'input' ? 'link-row' : ''}`,
      dataset: { layer: l.name, testid: 'anatomy-row' }, title: l.name !== 'input' ? 'click to see its maps' : null },
    el('td', { class: 'num', text: String(i) }),
    el('td', { class: 'mono', text: l.name }),
    el('td', { text: l.type }),
    el('td', { class: 'mono', text: shape(l.output_shape) }),
    el('td', { class: 'num', text: fmtInt(l.params) }),
    el('td', { class: 'num', text: l.macs ? fmtInt(l.macs) : '' }),
    el('td', { class: 'num', text: rf(l, 'size') }),
    el('td', { class: 'num', text: l.receptive_field ? rf(l, 'jump') : '' }),
    el('td', { class: 'num', text: l.receptive_field ? rf(l, 'start') : '' }),
    el('td', { class: `mono ${plain ? 'muted' : ''}`, text: plain ? '↑' : l.inputs.join(' + ') }));
    if (l.name !== 'input') tr.addEventListener('click', () => { showView('overview'); setTimeout(() => flashRow(l.name), 50); });
    return tr;
  });
  $('#anatomy-table').replaceChildren(el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { text: h })))),
    el('tbody', {}, ...rows));
  const stat = (label, value) => el('div', { class: 'stat' }, el('div', { class: 'stat-value', text: value }),
    el('div', { class: 'stat-label', text: label }));
  $('#anatomy-totals').replaceChildren(
    stat('parameters', fmtInt(d.total_params)),
    stat('trainable', fmtInt(d.trainable_params)),
    stat('MACs per image', fmtInt(d.total_macs)),
    stat('activations (MB, one image)', fmt(d.activation_mb)),
    stat('parameters (MB)', fmt(d.param_mb)),
    el('div', { class: 'small muted counting', text: `${d.model} on ${shape(d.input)}; counting: ${d.counting}` }));
  $('#anatomy-text').textContent = d.text;
}

// ============================================================================================ boot
function describeRun(r) {
  const kind = r.compression ? `${r.kind}: ${r.compression}` : r.kind;
  return [el('strong', { text: r.name }), ` · ${r.model} (${kind}) · ${r.dataset || 'dataset'} · input ` +
    `${shape(r.input_size)} · ${r.classes.length} classes`];
}

async function boot() {
  document.body.dataset.busy = '0';
  for (const tab of $$('#tabs [data-view]')) tab.addEventListener('click', () => showView(tab.dataset.view));
  try {
    state.run = await api('/api/run');
  } catch (e) {
    $('#run-info').textContent = 'the run could not be loaded';
    fail('the run', e);
    return;
  }
  $('#run-info').replaceChildren(...describeRun(state.run));
  document.title = `cnnlab explore: ${state.run.name}`;
  initDrawing();
  initUpload();
  initOverview();
  initPick();
  initConv();
  initAttribution();
  initMaximize();
  window.addEventListener('hashchange', () => showView(location.hash.slice(1)));
  showView(location.hash.slice(1) || 'overview');
  // a first input, so that every view shows something: test image 0 (else the blank canvas)
  if (!(await useInput('test image', () => api('/api/images/test/0', { method: 'POST' }), true))) sendDrawing();
  document.body.dataset.ready = 'true';
}

boot();
