// Valerix dashboard. Everything shown comes from the gateway: GET /products, GET /orders, GET /system,
// GET /metrics and the live stream GET /events (Server-Sent Events). Nothing is simulated here.
// Safety: values from the API are only ever set as text (textContent), never parsed as HTML.
'use strict';

const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

let products = [];            // from GET /products
let chaosToken = '';          // in memory only: never in a URL or storage
const waiting = new Map();    // order id -> true: a 202 whose final state the page waits for

// ---- small helpers ----------------------------------------------------------------------------

async function getJSON(path) {
  const r = await fetch(path, { headers: { Accept: 'application/json' } });
  if (!r.ok) throw new Error(path + ' answered ' + r.status);
  return r.json();
}

// Coalesces bursts of events into one reload.
function debounce(fn, ms) {
  let t = null;
  return () => { if (t) return; t = setTimeout(() => { t = null; fn(); }, ms); };
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function itemsText(items) {
  return (items || []).map((l) => l.product_id + ' × ' + l.quantity).join(', ');
}

// ---- catalog ----------------------------------------------------------------------------------

async function loadProducts() {
  try {
    const doc = await getJSON('/products');
    products = doc.products || [];
    const body = $('catalog').tBodies[0];
    body.replaceChildren(...products.map((p) => {
      const tr = el('tr');
      tr.dataset.product = p.id;
      tr.append(el('td', p.id), el('td', p.name), el('td', p.stock, 'num stock'));
      return tr;
    }));
    $('catalog-note').textContent = products.length ? '' : 'No products yet: restock some (see the README).';
    refreshSelects();
  } catch (e) {
    $('catalog-note').textContent = 'Products are not available: ' + e.message;
  }
}

// ---- placing an order -------------------------------------------------------------------------

function productSelect(value) {
  const s = el('select');
  s.required = true;
  for (const p of products) {
    const o = el('option', p.id + ' — ' + p.name);
    o.value = p.id;
    s.append(o);
  }
  if (value) s.value = value;
  return s;
}

let lineCount = 0;
function addLine(product, qty) {
  const n = ++lineCount;
  const row = el('div', undefined, 'line');
  const pl = el('label', 'Product ' + n);
  const sel = productSelect(product);
  sel.id = 'line-product-' + n;
  pl.htmlFor = sel.id;
  pl.append(sel);
  const ql = el('label', 'Quantity');
  const q = el('input');
  q.type = 'number'; q.min = '1'; q.max = '1000000'; q.value = qty || '1'; q.id = 'line-qty-' + n;
  ql.htmlFor = q.id;
  ql.append(q);
  const rm = el('button', 'Remove');
  rm.type = 'button';
  rm.setAttribute('aria-label', 'Remove line ' + n);
  rm.addEventListener('click', () => { if ($('lines').querySelectorAll('.line').length > 1) row.remove(); });
  row.append(pl, ql, rm);
  $('lines').append(row);
}

function refreshSelects() {
  for (const s of $('lines').querySelectorAll('select')) {
    const v = s.value;
    const fresh = productSelect(v);
    fresh.id = s.id;
    s.replaceWith(fresh);
  }
  if (!$('lines').querySelector('.line')) addLine();
}

function showAnswer(kind, status, title, detail, body) {
  const a = $('answer');
  a.hidden = false;
  a.className = 'answer ' + kind;
  $('answer-status').textContent = status;
  $('answer-title').textContent = title || '';
  $('answer-detail').textContent = detail || '';
  $('answer-body').textContent = body ? JSON.stringify(body, null, 2) : '';
}

// One click is one Idempotency-Key: the key is made when an order is first sent and kept while the
// form is unchanged: until the API gives a definite answer and for a few seconds after it, so that a
// retry after a network error, or a double click, is the same order (the API answers it again).
const SAME_ORDER_MS = 3000;
let pending = null; // {key, text, answered: when a definite answer came}

async function placeOrder(ev) {
  ev.preventDefault();
  const button = $('place');
  if (button.disabled) return;
  const lines = Array.from($('lines').querySelectorAll('.line')).map((row) => ({
    product_id: row.querySelector('select').value,
    quantity: Number(row.querySelector('input').value),
  }));
  const body = { customer_id: $('customer').value, items: lines };
  const text = JSON.stringify(body);
  if (!pending || pending.text !== text || (pending.answered && Date.now() - pending.answered > SAME_ORDER_MS))
    pending = { key: newKey(), text, answered: 0 };
  button.disabled = true;
  showAnswer('wait', '…', 'sending', 'Idempotency-Key ' + pending.key);
  let r;
  try {
    r = await fetch('/orders', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': pending.key },
      body: pending.text,
    });
  } catch (e) {
    showAnswer('bad', 'network error', 'the request did not get an answer',
      'Send again: the same Idempotency-Key (' + pending.key + ') makes it the same order.');
    button.disabled = false;
    return;
  }
  let doc = null;
  try { doc = await r.json(); } catch (e) { doc = null; }
  const retry = r.headers.get('Retry-After');
  if (r.status === 201) {
    showAnswer('ok', '201', 'CONFIRMED', 'order ' + doc.id +
      (r.headers.get('Idempotent-Replayed') ? ' (the same order again: this click repeated the last one)' : ''), doc);
  } else if (r.status === 202) {
    waiting.set(doc.id, true);
    showAnswer('wait', '202', 'PENDING', 'order ' + doc.id + ' is in Kafka and will finish; its final state shows here', doc);
  } else if (r.status === 409) {
    showAnswer('bad', '409', doc && doc.title, (doc && doc.reason ? doc.reason : '') +
      (doc && doc.product_id ? ' (' + doc.product_id + ')' : '') + (doc && doc.detail ? ': ' + doc.detail : ''), doc);
  } else if (r.status === 400) {
    showAnswer('bad', '400', doc && doc.title, 'field ' + (doc && doc.field) + ': ' + (doc && doc.detail), doc);
  } else if (r.status === 429 || r.status === 503) {
    showAnswer('bad', String(r.status), doc && doc.title, (doc && doc.detail) + (retry ? ' — retry after ' + retry + ' s' : ''), doc);
  } else {
    showAnswer('bad', String(r.status), doc && doc.title, doc && doc.detail, doc);
  }
  if (r.status !== 429 && r.status !== 503) pending.answered = Date.now(); // definite: soon a new click is a new order
  button.disabled = false;
  reloadOrders();
}

// ---- orders -----------------------------------------------------------------------------------

async function showHistory(id) {
  try {
    const o = await getJSON('/orders/' + encodeURIComponent(id));
    $('history').hidden = false;
    $('history-id').textContent = o.id;
    $('history-list').replaceChildren(...(o.history || []).map((h) =>
      el('li', h.at + ' ' + h.status + (h.reason ? ' (' + h.reason + ')' : ''))));
  } catch (e) {
    $('history').hidden = false;
    $('history-id').textContent = id + ': ' + e.message;
  }
}

async function cancelOrder(id, button) {
  button.disabled = true;
  const r = await fetch('/orders/' + encodeURIComponent(id) + '/cancel', {
    method: 'POST', headers: { 'Idempotency-Key': newKey() },
  });
  button.textContent = r.status === 202 ? 'Cancelling…' : 'Cancel: ' + r.status;
}

async function loadOrders() {
  try {
    const doc = await getJSON('/orders?limit=20');
    const body = $('orders').tBodies[0];
    body.replaceChildren(...(doc.orders || []).map((o) => {
      const tr = el('tr', undefined, 'clickable');
      tr.dataset.order = o.id;
      tr.tabIndex = 0;
      const st = el('td', o.status + (o.reason ? ' (' + o.reason + ')' : ''), 'status-' + o.status);
      const act = el('td');
      if (o.status === 'CONFIRMED') {
        const b = el('button', 'Cancel');
        b.type = 'button';
        b.setAttribute('aria-label', 'Cancel order ' + o.id);
        b.addEventListener('click', (e) => { e.stopPropagation(); cancelOrder(o.id, b); });
        act.append(b);
      }
      tr.append(el('td', o.id.slice(0, 8)), el('td', o.customer_id), st, el('td', itemsText(o.items)), act);
      tr.addEventListener('click', () => showHistory(o.id));
      tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') showHistory(o.id); });
      return tr;
    }));
  } catch (e) {
    // order-svc away: the table keeps what it showed; the System panel says why
  }
}
const reloadOrders = debounce(loadOrders, 250);
const reloadProducts = debounce(loadProducts, 250);

// ---- the live stream --------------------------------------------------------------------------

function connect() {
  const es = new EventSource('/events');
  es.addEventListener('open', () => { $('live').textContent = 'live'; $('live').className = 'pill on'; });
  es.addEventListener('error', () => { $('live').textContent = 'reconnecting…'; $('live').className = 'pill off'; });
  es.addEventListener('stock', () => reloadProducts());
  es.addEventListener('command', () => reloadOrders());
  es.addEventListener('result', (ev) => {
    reloadOrders();
    let r = null;
    try { r = JSON.parse(ev.data); } catch (e) { return; }
    if (r && waiting.has(r.order_id)) {
      waiting.delete(r.order_id);
      showAnswer(r.status === 'CONFIRMED' ? 'ok' : 'bad', r.status, 'final state of order ' + r.order_id,
        r.reason ? r.reason + (r.product_id ? ' (' + r.product_id + ')' : '') : '', r);
    }
  });
  es.addEventListener('gap', () => { reloadOrders(); reloadProducts(); });
}

// ---- system -----------------------------------------------------------------------------------

function dlRows(dl, rows) {
  dl.replaceChildren(...rows.flatMap(([k, v, cls]) => [el('dt', k), el('dd', v, cls)]));
}

let chaosShown = false;
async function loadSystem() {
  try {
    const s = await getJSON('/system');
    const rows = [['gateway', 'up, ' + s.gateway.inflight + ' in flight, ' + s.gateway.streams + ' live streams']];
    let chaos = !!(s.gateway.chaos && s.gateway.chaos.admin);
    for (const [name, sv] of Object.entries(s.services || {})) {
      const h = sv.health;
      const text = !h ? 'not answering' : (h.status + (sv.ready ? ', ready' : ', not ready') +
        (h.held ? ', ' + h.held + ' held' : '') + (h.chaos && h.chaos.gremlin && h.chaos.gremlin.delay_ms
          ? ', gremlin ' + h.chaos.gremlin.delay_ms + ' ms every ' + h.chaos.gremlin.every : ''));
      rows.push([name, text, h && h.status === 'up' && sv.ready ? 'status-CONFIRMED' : 'status-REJECTED']);
      if (h && h.chaos && h.chaos.admin) chaos = true;
    }
    dlRows($('services'), rows);
    const b = s.gateway.breaker || {};
    dlRows($('breaker'), [['breaker', b.state, b.state === 'closed' ? 'status-CONFIRMED' : 'status-REJECTED'],
      ['calls in window', b.calls + ' (' + b.failures + ' failed)']]);
    $('breaker').dataset.state = b.state;
    if (chaos !== chaosShown) { $('chaos-panel').hidden = !chaos; chaosShown = chaos; }
  } catch (e) {
    dlRows($('services'), [['gateway', 'not answering: ' + e.message, 'status-REJECTED']]);
  }
}

// ---- charts from /metrics ---------------------------------------------------------------------

const history = []; // {t, rate, p50, p99}, last 5 minutes
let last = null;

function parseMetrics(text) {
  let count = 0;
  const buckets = new Map();
  for (const line of text.split('\n')) {
    if (line.startsWith('valerix_http_responses_total{route="POST /orders"')) count += Number(line.split(' ').pop());
    else if (line.startsWith('valerix_http_request_duration_seconds_bucket{route="POST /orders",le="')) {
      const le = line.slice(line.indexOf('le="') + 4, line.indexOf('"}'));
      buckets.set(le === '+Inf' ? Infinity : Number(le), Number(line.split(' ').pop()));
    }
  }
  return { count, buckets };
}

function quantile(q, deltas) {
  const total = deltas.length ? deltas[deltas.length - 1][1] : 0;
  if (!total) return null;
  let prevLe = 0, prevN = 0;
  for (const [le, n] of deltas) {
    if (n >= q * total) {
      if (le === Infinity) return prevLe * 1000;
      return (prevLe + (le - prevLe) * ((q * total - prevN) / Math.max(1, n - prevN))) * 1000;
    }
    prevLe = le; prevN = n;
  }
  return null;
}

async function sampleMetrics() {
  try {
    const r = await fetch('/metrics');
    const m = parseMetrics(await r.text());
    const t = Date.now();
    if (last) {
      const dt = (t - last.t) / 1000;
      const deltas = Array.from(m.buckets.entries()).sort((a, b) => a[0] - b[0])
        .map(([le, n]) => [le, n - (last.buckets.get(le) || 0)]);
      history.push({ t, rate: (m.count - last.count) / dt, p50: quantile(0.5, deltas), p99: quantile(0.99, deltas) });
      while (history.length && history[0].t < t - 300000) history.shift();
      draw($('chart-rate'), [history.map((h) => h.rate)], ['#0b5cad']);
      draw($('chart-latency'), [history.map((h) => h.p50), history.map((h) => h.p99)], ['#17663a', '#a8201a']);
    }
    last = { t, ...m };
  } catch (e) { /* the next sample tries again */ }
}

function draw(canvas, series, colors) {
  const c = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  c.clearRect(0, 0, w, h);
  const all = series.flat().filter((v) => v !== null && isFinite(v));
  const max = Math.max(1, ...all);
  c.fillStyle = '#4a5563';
  c.font = '11px system-ui, sans-serif';
  c.fillText(max.toFixed(max < 10 ? 1 : 0), 4, 12);
  series.forEach((s, k) => {
    c.strokeStyle = colors[k];
    c.lineWidth = 2;
    c.beginPath();
    let started = false;
    s.forEach((v, i) => {
      if (v === null || !isFinite(v)) { started = false; return; }
      const x = s.length < 2 ? w : (i / (150 - 1)) * w + (w - ((s.length - 1) / (150 - 1)) * w);
      const y = h - 4 - (v / max) * (h - 18);
      if (started) c.lineTo(x, y); else { c.moveTo(x, y); started = true; }
    });
    c.stroke();
  });
}

// ---- chaos ------------------------------------------------------------------------------------

async function sendChaos(body) {
  if ($('chaos-token').value) chaosToken = $('chaos-token').value;
  $('chaos-token').value = ''; // the field does not keep it either
  const service = $('chaos-service').value;
  const r = await fetch('/admin/chaos/' + service, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + chaosToken },
    body: JSON.stringify(body),
  });
  let doc = null;
  try { doc = await r.json(); } catch (e) { doc = null; }
  $('chaos-answer').textContent = service + ': ' + r.status + ' ' + (r.ok ? 'applied' : (doc && doc.detail) || '');
  loadSystem();
}

// ---- start ------------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('order-form').addEventListener('submit', placeOrder);
  $('add-line').addEventListener('click', () => addLine());
  $('chaos-form').addEventListener('submit', (e) => {
    e.preventDefault();
    sendChaos({ crash_points: $('chaos-points').value,
      gremlin: { delay_ms: Number($('chaos-delay').value), every: Number($('chaos-every').value), fraction: 0 } });
  });
  $('chaos-off').addEventListener('click', () => sendChaos({ crash_points: '', gremlin: { delay_ms: 0, every: 0, fraction: 0 } }));
  loadProducts().then(() => { if (!$('lines').querySelector('.line')) addLine(); });
  loadOrders();
  loadSystem();
  connect();
  sampleMetrics();
  setInterval(loadSystem, 2000);
  setInterval(sampleMetrics, 2000);
});
