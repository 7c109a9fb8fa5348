// Pulse dashboard: plain JavaScript over the query API. The token stays in
// this tab (sessionStorage) and is sent as a Bearer header, and to the
// WebSocket as access_token, which browsers cannot send as a header.
'use strict';

const $ = (id) => document.getElementById(id);
const HISTORY = 60;            // points per device sparkline
const RATE_WINDOW_MS = 10000;  // events/s and lag over the last 10 s
const ANOMALY_WINDOW_MS = 60000;
const FEED_MAX = 50;

const state = {
  token: null,
  socket: null,
  cursor: null,
  retryMs: 500,
  devices: new Map(),   // source_id -> { scores: [], anomalous, card, canvas, last }
  jobs: new Map(),      // job_id -> its table row
  cameras: new Map(),   // source_id -> { card, shown (file_id), values: [{ at, value }] }
  recent: [],           // { at, anomaly, lagMs } of received events
  seen: 0,
};

// ---- sign-in ---------------------------------------------------------------

function start() {
  const fromLink = new URLSearchParams(location.hash.slice(1)).get('token');
  if (fromLink) {
    sessionStorage.setItem('pulse-token', fromLink);
    history.replaceState(null, '', location.pathname);
  }
  $('signin').addEventListener('submit', (e) => {
    e.preventDefault();
    signIn($('token').value.trim());
  });
  $('signout').addEventListener('click', signOut);
  $('dd-close').addEventListener('click', () => { $('drilldown').hidden = true; });
  $('report-form').addEventListener('submit', (e) => { e.preventDefault(); requestReport(); });
  $('audit-form').addEventListener('submit', (e) => { e.preventDefault(); searchAudit(); });
  const saved = sessionStorage.getItem('pulse-token');
  if (saved) signIn(saved); else showSignIn('');
}

function showSignIn(error) {
  $('app').hidden = true;
  $('signout').hidden = true;
  $('signin-panel').hidden = false;
  $('signin-error').textContent = error;
}

async function signIn(token) {
  state.token = token;
  const r = await api('/v1/devices?limit=10000');
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    sessionStorage.removeItem('pulse-token');
    showSignIn(`Not signed in: ${body.error || r.status}`);
    return;
  }
  sessionStorage.setItem('pulse-token', token);
  $('signin-panel').hidden = true;
  $('app').hidden = false;
  $('signout').hidden = false;
  $('tenant').textContent = claims(token).tenant || '';
  const { devices } = await r.json();
  for (const d of devices) device(d.source_id);
  $('device-count').textContent = state.devices.size;
  await loadAnomalies();
  await loadJobs();
  await loadSnapshots();
  if (claims(token).role === 'admin') {
    $('audit-panel').hidden = false;
    searchAudit();
  }
  connect();
}

function signOut() {
  sessionStorage.removeItem('pulse-token');
  state.token = null;
  if (state.socket) state.socket.close();
  location.reload();
}

// A JWT's claims, for display only (the API checks the token).
function claims(token) {
  try {
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
  } catch (_) {
    return {};
  }
}

function api(path, init = {}) {
  const headers = { Authorization: `Bearer ${state.token}`, ...(init.headers || {}) };
  return fetch(path, { ...init, headers });
}

// ---- live stream -----------------------------------------------------------

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  let url = `${proto}//${location.host}/v1/stream?jobs=true&access_token=${encodeURIComponent(state.token)}`;
  // After a drop, resume where this page left off: nothing missed.
  if (state.cursor) url += `&resume=${encodeURIComponent(state.cursor)}`;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => { state.retryMs = 500; setLink(true); };
  socket.onmessage = (m) => received(JSON.parse(m.data));
  socket.onclose = () => {
    setLink(false);
    if (!state.token) return;
    setTimeout(connect, state.retryMs);
    state.retryMs = Math.min(state.retryMs * 2, 10000);
  };
}

function setLink(on) {
  const link = $('link');
  link.textContent = on ? 'live' : 'reconnecting';
  link.className = `status ${on ? 'on' : 'off'}`;
}

function received(msg) {
  if (msg.cursor) state.cursor = msg.cursor;
  if (msg.type === 'job') {
    showJob(msg.job);
    if (msg.job.kind === 'ocr' && msg.job.state === 'succeeded') snapshotsSoon();
    return;
  }
  if (msg.type === 'lagged' || msg.type === 'gap' || msg.type === 'jobs_lagged') return;
  if (!msg.event_id) return;
  state.seen += 1;
  const now = Date.now();
  const anomaly = msg.is_anomaly === 1;
  state.recent.push({ at: now, anomaly, lagMs: msg.processed_ms - msg.event_time_ms });
  const d = device(msg.source_id);
  d.scores.push(msg.score);
  if (d.scores.length > HISTORY) d.scores.shift();
  d.anomalous = anomaly;
  d.last = msg;
  d.dirty = true;
  const m = (msg.reading_names || []).indexOf('meter_value');
  if (m >= 0 && state.cameras.has(msg.source_id)) addValue(state.cameras.get(msg.source_id), msg.event_time_ms, msg.reading_values[m]);
  if (anomaly) addAnomaly(msg, true);
}

// ---- devices ---------------------------------------------------------------

function device(id) {
  let d = state.devices.get(id);
  if (d) return d;
  const card = newCard($('device-grid'), 'device-card', id,
    '<div class="name"><span></span><span class="value"></span></div><canvas width="150" height="40"></canvas>');
  card.addEventListener('click', () => drillDown(id));
  d = { scores: [], anomalous: false, card, canvas: card.querySelector('canvas'), last: null, dirty: true };
  state.devices.set(id, d);
  $('device-count').textContent = state.devices.size;
  return d;
}

// A card of `className` for source `id`, its name in its first <span> or
// <strong>, placed in `grid` in order of id.
function newCard(grid, className, id, html) {
  const card = document.createElement('div');
  card.className = className;
  card.dataset.source = id;
  card.innerHTML = html;
  card.querySelector('.name span, .name strong').textContent = id;
  const after = [...grid.querySelectorAll(`.${className}`)].find((c) => c.dataset.source > id);
  grid.insertBefore(card, after || null);
  return card;
}

function renderDevices() {
  for (const d of state.devices.values()) {
    if (!d.dirty) continue;
    d.dirty = false;
    d.card.classList.toggle('anomalous', d.anomalous);
    d.card.querySelector('.value').textContent = headline(d.last);
    line(d.canvas, d.scores, { max: 1, color: d.anomalous ? '#ff5d5d' : '#4fb3ff'});
  }
}

// A device's headline reading: a sensor's temperature, a camera's meter value.
function headline(e) {
  const names = (e && e.reading_names) || [];
  const t = names.indexOf('temperature_c');
  if (t >= 0) return `${e.reading_values[t].toFixed(1)} °C`;
  const m = names.indexOf('meter_value');
  if (m >= 0) return `${e.reading_values[m].toFixed(2)}`;
  return '';
}

// Draws `values` as a line scaled to [0, max] across the canvas.
function line(canvas, values, { max, color }) {
  const g = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  const top = Math.max(max || 0, ...values, 1e-9);
  if (values.length < 2) return;
  g.strokeStyle = color;
  g.lineWidth = 1.5;
  g.beginPath();
  values.forEach((v, i) => {
    const x = (i / (values.length - 1)) * (w - 2) + 1;
    const y = h - 1 - (v / top) * (h - 2);
    if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
  });
  g.stroke();
}

// Draws `values` as bars scaled to the largest, with it labelled.
function bars(canvas, values, color) {
  const g = canvas.getContext('2d');
  const { width: w, height: h } = canvas;
  g.clearRect(0, 0, w, h);
  const top = Math.max(...values, 1e-9);
  const step = w / values.length;
  g.fillStyle = color;
  values.forEach((v, i) => {
    const bh = (v / top) * (h - 14);
    g.fillRect(i * step + 1, h - bh, Math.max(step - 2, 1), bh);
  });
  g.fillStyle = '#8b96a3';
  g.font = '11px system-ui, sans-serif';
  g.fillText(`max ${Number(top.toPrecision(4))}`, 4, 11);
}

// ---- anomalies feed --------------------------------------------------------

async function loadAnomalies() {
  const r = await api('/v1/anomalies?limit=20');
  if (!r.ok) return;
  const { events } = await r.json();
  for (const e of events.reverse()) addAnomaly(e, false);
}

function addAnomaly(e, live) {
  const feed = $('anomaly-feed');
  if (feed.querySelector(`[data-event="${CSS.escape(e.event_id)}"]`)) return;
  const li = document.createElement('li');
  li.dataset.event = e.event_id;
  li.dataset.device = e.source_id;
  const readings = (e.reading_names || []).map((n, i) => `${n} ${Number(e.reading_values[i]).toFixed(2)}`).join(', ');
  li.innerHTML = '<div><strong></strong> score <span class="score"></span></div><div class="meta"></div>';
  li.querySelector('strong').textContent = e.source_id;
  li.querySelector('.score').textContent = e.score.toFixed(3);
  li.querySelector('.meta').textContent = `${new Date(e.event_time_ms).toLocaleTimeString()} · ${readings}${live ? ' · live' : ''}`;
  li.addEventListener('click', () => drillDown(e.source_id));
  feed.prepend(li);
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
}

// ---- jobs ------------------------------------------------------------------

async function loadJobs() {
  const r = await api('/v1/jobs?limit=20');
  if (!r.ok) return;
  const { jobs } = await r.json();
  for (const j of jobs.reverse()) showJob(j);
}

async function requestReport() {
  const to = Date.now();
  const from = to - Number($('report-hours').value) * 3600 * 1000;
  const body = { kind: 'report', params: { format: $('report-format').value, from_ms: from, to_ms: to } };
  const r = await api('/v1/jobs', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const answer = await r.json().catch(() => ({}));
  $('report-error').textContent = r.ok ? '' : `Refused: ${answer.error || r.status}`;
  if (r.ok) showJob(answer);
}

// A job's row, created or brought up to date; a transition older than the
// one shown (a list read racing the stream) is ignored.
function showJob(j) {
  let tr = state.jobs.get(j.job_id);
  if (!tr) {
    tr = document.createElement('tr');
    tr.dataset.job = j.job_id;
    tr.dataset.states = '';
    for (let i = 0; i < 7; i += 1) tr.appendChild(document.createElement('td'));
    state.jobs.set(j.job_id, tr);
    $('jobs-table').prepend(tr);
  }
  if (Number(tr.dataset.updated || 0) > j.updated_ms) return;
  tr.dataset.updated = j.updated_ms;
  tr.dataset.state = j.state;
  const states = tr.dataset.states ? tr.dataset.states.split(',') : [];
  if (states[states.length - 1] !== j.state) tr.dataset.states = [...states, j.state].join(',');
  const cells = tr.children;
  cells[0].textContent = j.job_id.slice(0, 8);
  cells[1].textContent = `${j.kind} ${j.params && j.params.format ? j.params.format : ''}`;
  cells[2].textContent = j.state + (j.error ? ` (${j.error})` : '');
  cells[2].className = `state ${j.state}`;
  cells[3].textContent = `${Math.round(j.progress * 100)} %`;
  cells[4].textContent = j.attempts;
  cells[5].textContent = new Date(j.updated_ms).toLocaleTimeString();
  cells[6].replaceChildren();
  if (j.state === 'succeeded' && j.result_file_id) {
    const a = document.createElement('a');
    a.href = '#';
    a.textContent = 'download';
    a.dataset.testid = 'download';
    a.addEventListener('click', (e) => { e.preventDefault(); download(j); });
    cells[6].appendChild(a);
  }
}

// Files need the Bearer header, which a plain link cannot send: fetched,
// then handed to the browser as a download.
async function download(j) {
  const r = await api(`/v1/files/${encodeURIComponent(j.result_file_id)}`);
  if (!r.ok) return;
  const blob = await r.blob();
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = `report-${j.job_id}.${j.params && j.params.format === 'parquet' ? 'parquet' : 'csv'}`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

// ---- cameras ---------------------------------------------------------------

// Each camera's newest read; called at sign-in and after an OCR job
// succeeds (coalesced, since a camera fleet finishes many jobs a second).
async function loadSnapshots() {
  const r = await api('/v1/snapshots?limit=100');
  if (!r.ok) return;
  const { snapshots } = await r.json();
  await Promise.all(snapshots.map(showSnapshot));
}

let snapshotsTimer = null;
function snapshotsSoon() {
  if (snapshotsTimer) return;
  snapshotsTimer = setTimeout(() => { snapshotsTimer = null; loadSnapshots(); }, 500);
}

function camera(id) {
  let c = state.cameras.get(id);
  if (c) return c;
  const card = newCard($('camera-grid'), 'camera-card', id,
    '<div class="name"><strong></strong><span class="value"></span></div>'
    + '<canvas class="snapshot" width="480" height="270"></canvas>'
    + '<canvas class="values" width="320" height="40"></canvas><div class="meta"></div>');
  $('camera-none').hidden = true;
  c = { card, shown: null, values: [] };
  state.cameras.set(id, c);
  cameraHistory(id, c);
  return c;
}

// The camera's meter values so far: the telemetry events the worker
// published, as the processor stored them.
async function cameraHistory(id, c) {
  const r = await api(`/v1/events?source_id=${encodeURIComponent(id)}&limit=${HISTORY}`);
  if (!r.ok) return;
  const { events } = await r.json();
  for (const e of events) {
    const m = (e.reading_names || []).indexOf('meter_value');
    if (m >= 0) addValue(c, e.event_time_ms, e.reading_values[m]);
  }
}

// One meter value on the camera's chart, once per snapshot time.
function addValue(c, at, value) {
  if (c.values.some((v) => v.at === at)) return;
  c.values.push({ at, value });
  c.values.sort((a, b) => a.at - b.at);
  if (c.values.length > HISTORY) c.values.shift();
  c.card.dataset.values = c.values.length;
  // Drawn as the growth since the lowest value shown, so that a meter's
  // climb shows whatever its counter's size.
  const low = Math.min(...c.values.map((v) => v.value));
  line(c.card.querySelector('canvas.values'), c.values.map((v) => v.value - low), { color: '#5dd39e' });
}

// A read's snapshot drawn with its boxes and text, and its value added to
// the camera's chart. The image needs the Bearer header, so it is fetched
// and drawn rather than linked.
async function showSnapshot(read) {
  if (!read.source_id) return;
  const c = camera(read.source_id);
  if (read.value !== undefined) addValue(c, read.taken_ms, read.value);
  if (c.shown === read.file_id || Number(c.card.dataset.taken || 0) > read.taken_ms) return;
  const r = await api(`/v1/files/${encodeURIComponent(read.file_id)}`);
  if (!r.ok) return;
  const image = await createImageBitmap(await r.blob()).catch(() => null);
  if (!image) return;
  c.shown = read.file_id;
  const canvas = c.card.querySelector('canvas.snapshot');
  canvas.height = Math.round((canvas.width * image.height) / image.width);
  const g = canvas.getContext('2d');
  const k = canvas.width / image.width;
  g.drawImage(image, 0, 0, canvas.width, canvas.height);
  g.lineWidth = 2;
  g.font = '12px system-ui, sans-serif';
  for (const l of read.lines) {
    g.strokeStyle = '#4fb3ff';
    g.beginPath();
    l.box.forEach(([x, y], i) => (i ? g.lineTo(x * k, y * k) : g.moveTo(x * k, y * k)));
    g.closePath();
    g.stroke();
    const [x, y] = l.box[0];
    const label = `${l.text} ${(l.confidence * 100).toFixed(0)}%`;
    g.fillStyle = 'rgba(15, 20, 25, .8)';
    g.fillRect(x * k, Math.max(y * k - 15, 0), g.measureText(label).width + 6, 15);
    g.fillStyle = '#e6e9ed';
    g.fillText(label, x * k + 3, Math.max(y * k - 3, 12));
  }
  const card = c.card;
  card.dataset.taken = read.taken_ms;
  card.dataset.file = read.file_id;
  card.dataset.boxes = read.lines.length;
  card.dataset.texts = read.lines.map((l) => l.text).join('|');
  if (read.value !== undefined) card.dataset.value = read.value;
  card.querySelector('.value').textContent = read.value !== undefined ? read.value.toFixed(2) : '';
  card.querySelector('.meta').textContent = `${new Date(read.taken_ms).toLocaleTimeString()} · `
    + `${read.lines.length} lines · job ${read.job_id.slice(0, 8)}`;
}

// ---- audit trail -----------------------------------------------------------

async function searchAudit() {
  const q = new URLSearchParams({ limit: '200' });
  const minutes = Number($('audit-minutes').value) || 60;
  q.set('from_ms', String(Date.now() - minutes * 60000));
  for (const [id, key] of [['audit-caller', 'caller'], ['audit-route', 'route'], ['audit-status', 'status']]) {
    const v = $(id).value.trim();
    if (v) q.set(key, v);
  }
  const r = await api(`/v1/audit?${q}`);
  const answer = await r.json().catch(() => ({}));
  $('audit-error').textContent = r.ok ? '' : `${answer.field || ''}: ${answer.error || r.status}`;
  if (!r.ok) return;
  $('audit-table').replaceChildren(...answer.records.map((a) => {
    const tr = document.createElement('tr');
    tr.dataset.route = a.route;
    tr.dataset.status = a.status;
    const cells = [new Date(a.time_ms).toLocaleTimeString(), a.caller, a.role, a.method, a.route, a.params, a.status, a.rows, a.latency_ms.toFixed(1)];
    for (const text of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
}

// ---- overview --------------------------------------------------------------

function renderOverview() {
  const now = Date.now();
  state.recent = state.recent.filter((r) => now - r.at < ANOMALY_WINDOW_MS);
  const lastRate = state.recent.filter((r) => now - r.at < RATE_WINDOW_MS);
  $('events-per-s').textContent = (lastRate.length / (RATE_WINDOW_MS / 1000)).toFixed(1);
  const anomalies = state.recent.filter((r) => r.anomaly).length;
  $('anomaly-rate').textContent = state.recent.length ? `${((100 * anomalies) / state.recent.length).toFixed(2)} %` : '0 %';
  const lags = lastRate.map((r) => r.lagMs).sort((a, b) => a - b);
  $('lag').textContent = lags.length ? `${lags[Math.floor(lags.length / 2)]} ms` : '–';
  $('events-seen').textContent = state.seen;
}

// ---- drill-down ------------------------------------------------------------

async function drillDown(id) {
  $('drilldown').hidden = false;
  $('dd-device').textContent = id;
  const to = Date.now();
  const from = to - 3600 * 1000;
  const enc = encodeURIComponent(id);
  const [series, events] = await Promise.all([
    api(`/v1/devices/${enc}/series?from_ms=${from}&to_ms=${to}&resolution_s=60`).then((r) => r.json()),
    api(`/v1/events?source_id=${enc}&limit=20`).then((r) => r.json()),
  ]);
  // One bar per minute of the hour, empty minutes included.
  const byMinute = new Map((series.buckets || []).map((b) => [b.bucket, b]));
  const first = Math.floor(from / 60000) + 1;
  const minutes = Array.from({ length: 60 }, (_, i) => byMinute.get((first + i) * 60));
  bars($('dd-events'), minutes.map((b) => (b ? b.events : 0)), '#4fb3ff');
  bars($('dd-score'), minutes.map((b) => (b ? b.score_max : 0)), '#ffb44f');
  const body = $('dd-events-table');
  body.replaceChildren(...(events.events || []).map((e) => {
    const tr = document.createElement('tr');
    const readings = e.reading_names.map((n, i) => `${n} ${Number(e.reading_values[i]).toFixed(2)}`).join(', ');
    for (const text of [new Date(e.event_time_ms).toLocaleTimeString(), e.score.toFixed(3), readings]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.appendChild(td);
    }
    if (e.is_anomaly) tr.style.color = '#ff5d5d';
    return tr;
  }));
}

// Redraw at most once per animation frame, however fast events arrive.
function frame() {
  if (state.token) {
    renderDevices();
    renderOverview();
  }
  requestAnimationFrame(frame);
}

start();
requestAnimationFrame(frame);
