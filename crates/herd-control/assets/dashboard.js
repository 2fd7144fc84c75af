// Herd's web dashboard. Reads the API token from the URL fragment (/dashboard#token=...),
// keeps it in sessionStorage, and polls the Control node's API with it: node and container
// figures every 2 s, cluster events by long poll. Charts are hand-drawn SVG line charts:
// missing samples are breaks (never interpolated), migrations are vertical markers.
//
// Every chart figure carries what it drew, for people debugging and for the end-to-end
// test: data-points (values drawn), data-last-ts (newest drawn point, ms), data-last (its
// value), data-markers (event markers drawn).
'use strict';

const TOKEN_KEY = 'herd.token';
const POLL_MS = 2000;
const SVG_NS = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  generation: 0, // bumped on every (re)start, so loops of an older token stop
  windowMs: 300000,
  selected: null, // the container whose charts are shown
  skewMs: 0, // server clock minus ours, when they differ by more than the Date header's precision
  events: [], // newest last
  last: null, // the latest answers, to redraw on resize
};

class AuthError extends Error {}

// ---- token ----

/** Moves a token from the URL fragment into sessionStorage; true if there was one. */
function takeTokenFromFragment() {
  const m = location.hash.match(/^#(?:.*&)?token=([^&]*)/);
  if (!m) return false;
  history.replaceState(null, '', location.pathname + location.search);
  let token = m[1];
  try { token = decodeURIComponent(token); } catch { /* keep it as given */ }
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  return Boolean(token);
}

function showAuth(why) {
  state.generation++;
  $('board').hidden = true;
  $('auth').hidden = false;
  $('auth-why').textContent = why;
  setStatus('no token', 'bad');
  $('token-input').focus();
}

function start() {
  state.token = sessionStorage.getItem(TOKEN_KEY);
  if (!state.token) {
    showAuth('This page has no API token yet.');
    return;
  }
  const gen = ++state.generation;
  $('auth').hidden = true;
  $('board').hidden = false;
  state.events = [];
  setStatus('connecting', 'idle');
  pollLoop(gen);
  eventLoop(gen);
}

// ---- API ----

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` }, cache: 'no-store' });
  if (resp.status === 401) throw new AuthError('The server refused the token this page has (a new cluster has a new token).');
  const date = Date.parse(resp.headers.get('Date') || '');
  if (!Number.isNaN(date)) {
    const skew = date - Date.now();
    state.skewMs = Math.abs(skew) > 2000 ? skew : 0;
  }
  if (!resp.ok) {
    let msg = resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch { /* not JSON */ }
    const err = new Error(`${path}: ${msg}`);
    err.status = resp.status;
    throw err;
  }
  return resp.json();
}

const serverNow = () => Date.now() + state.skewMs;
const enc = encodeURIComponent;

function seriesQuery(from, to) {
  const step = Math.round(state.windowMs / 300);
  return `from=${from}&to=${to}${step > 1000 ? `&step=${step}` : ''}`;
}

/** A series, or `{error}` when there is none (no samples yet); auth errors go through. */
function series(path) {
  return api(path).catch((e) => {
    if (e instanceof AuthError) throw e;
    return { error: e.message };
  });
}

// ---- loops ----

let wakeUp = () => {};
function sleep(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    wakeUp = () => { clearTimeout(timer); resolve(); };
  });
}

async function pollLoop(gen) {
  while (gen === state.generation) {
    const began = Date.now();
    try {
      await refresh(gen);
      setStatus(`live, updated ${clock(serverNow(), true)}`, 'ok');
    } catch (e) {
      if (gen !== state.generation) return;
      if (e instanceof AuthError) { showAuth(e.message); return; }
      setStatus(`cannot reach the API: ${e.message}`, 'bad');
    }
    await sleep(Math.max(250, POLL_MS - (Date.now() - began)));
  }
}

async function eventLoop(gen) {
  let after = null;
  while (gen === state.generation) {
    try {
      const fresh = after === null
        ? await api('/v1/events?limit=50')
        : await api(`/v1/events?after=${after}&wait=25`);
      if (gen !== state.generation) return;
      if (after === null) after = 0;
      if (fresh.length) {
        after = fresh[fresh.length - 1].seq;
        state.events.push(...fresh);
        state.events.splice(0, Math.max(0, state.events.length - 200));
        renderEvents();
        wakeUp(); // something changed: refresh the figures now
      }
    } catch (e) {
      if (e instanceof AuthError) { if (gen === state.generation) showAuth(e.message); return; }
      await new Promise((r) => setTimeout(r, 3000));
    }
  }
}

async function refresh(gen) {
  const to = serverNow();
  const from = to - state.windowMs;
  const q = seriesQuery(from, to);
  const [nodes, nodeStats, containers, stats] = await Promise.all([
    api('/v1/nodes'), api('/v1/stats/nodes'), api('/v1/containers?all=true'), api('/v1/stats'),
  ]);
  const selected = containers.find((c) => c.name === state.selected) || null;
  const [nodeSeries, detail] = await Promise.all([
    Promise.all(nodes.map((n) => series(`/v1/nodes/${enc(n.name)}/series?${q}`))),
    selected ? series(`/v1/containers/${enc(selected.name)}/series?${q}`) : null,
  ]);
  if (gen !== state.generation) return;
  state.last = { from, to, nodes, nodeStats, containers, stats, nodeSeries, selected, detail };
  render();
}

function render() {
  const d = state.last;
  if (!d) return;
  renderSummary(d.nodes, d.containers);
  renderCards(d.nodes, d.nodeStats);
  renderTable(d.containers, d.stats);
  renderDetail(d.selected, d.detail, d.from, d.to);
  renderNodeCharts(d.nodes, d.nodeSeries, d.from, d.to);
}

// ---- formatting ----

function scaled(v, base, units) {
  let i = 0;
  while (Math.abs(v) >= base && i < units.length - 1) { v /= base; i++; }
  return `${i === 0 || Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
const fmt = {
  bytes: (v) => (v == null ? '–' : scaled(v, 1024, BYTE_UNITS)),
  rate: (v) => (v == null ? '–' : `${scaled(v, 1024, BYTE_UNITS)}/s`),
  cores: (v) => (v == null ? '–' : v.toFixed(v < 10 ? 2 : 1)),
  pct: (v) => (v == null ? '–' : `${v.toFixed(v < 10 ? 1 : 0)} %`),
  num: (v) => (v == null ? '–' : v.toFixed(2)),
};

function clock(ms, seconds = true) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}${seconds ? `:${p(d.getSeconds())}` : ''}`;
}

function setStatus(text, kind) {
  const s = $('status');
  s.textContent = text;
  s.dataset.state = kind;
}

// ---- DOM helpers ----

function attrs(e, a) {
  for (const [k, v] of Object.entries(a || {})) if (v != null && v !== false) e.setAttribute(k, String(v));
  return e;
}
function h(tag, a, ...kids) {
  const e = attrs(document.createElement(tag), a);
  e.append(...kids.filter((k) => k != null));
  return e;
}
function s(tag, a, ...kids) {
  const e = attrs(document.createElementNS(SVG_NS, tag), a);
  e.append(...kids.filter((k) => k != null));
  return e;
}
function bar(fraction) {
  const fill = h('span', { class: 'fill' });
  fill.style.width = `${Math.max(0, Math.min(1, fraction || 0)) * 100}%`;
  return h('span', { class: 'bar' }, fill);
}

// ---- overview ----

function renderSummary(nodes, containers) {
  const ready = nodes.filter((n) => n.state === 'ready').length;
  const running = containers.filter((c) => c.state === 'running').length;
  $('summary').textContent = `${ready}/${nodes.length} nodes ready · ${running} running of ${containers.length} containers`;
}

function nodeCpuPct(st) {
  if (st?.cpu_user_percent == null) return null;
  return st.cpu_user_percent + (st.cpu_system_percent || 0);
}

function renderCards(nodes, nodeStats) {
  const cards = nodes.map((n) => {
    const st = nodeStats.find((x) => x.name === n.name);
    const cpu = nodeCpuPct(st);
    const total = st?.memory_total_bytes;
    const used = total != null && st.memory_available_bytes != null ? total - st.memory_available_bytes : null;
    return h('article', { class: 'card', 'data-node': n.name },
      h('header', {}, h('strong', {}, n.name), h('span', { class: `badge ${n.state}` }, n.state)),
      h('div', { class: 'meter' }, h('span', {}, 'CPU'), bar(cpu / 100),
        h('span', { class: 'num' }, `${fmt.pct(cpu)}${st?.cpus ? ` of ${st.cpus} CPUs` : ''}`)),
      h('div', { class: 'meter' }, h('span', {}, 'Memory'), bar(used / total),
        h('span', { class: 'num' }, `${fmt.bytes(used)} / ${fmt.bytes(total)}`)),
      h('p', { class: 'facts' },
        `${st?.containers_running ?? n.containers} running · load ${fmt.num(st?.load1)} · `
        + `net ↓ ${fmt.rate(st?.net_rx_bytes_per_sec)} ↑ ${fmt.rate(st?.net_tx_bytes_per_sec)}`));
  });
  $('node-cards').replaceChildren(...cards);
}

// ---- containers table ----

function renderTable(containers, stats) {
  const rows = [...containers].sort((a, b) => a.name.localeCompare(b.name)).map((c) => {
    const st = stats.find((x) => x.name === c.name);
    const limit = c.limits?.memory_bytes;
    const cpu = st?.cpu_cores == null ? '–'
      : `${fmt.cores(st.cpu_cores)}${st.cpu_percent_of_limit != null ? ` (${fmt.pct(st.cpu_percent_of_limit)} of limit)` : ''}`;
    const row = h('tr', { 'data-name': c.name, class: c.name === state.selected ? 'selected' : null, tabindex: 0 },
      h('td', {}, c.name),
      h('td', {}, c.node_down ? `${c.node} (down)` : c.node),
      h('td', {}, c.image),
      h('td', {}, h('span', { class: `badge ${c.state}` }, c.state)),
      h('td', { class: 'num' }, cpu),
      h('td', { class: 'num' }, `${fmt.bytes(st?.memory_bytes)}${limit ? ` / ${fmt.bytes(limit)}` : ''}`),
      h('td', { class: 'num' }, st ? `${fmt.rate(st.net_rx_bytes_per_sec)} / ${fmt.rate(st.net_tx_bytes_per_sec)}` : '–'));
    const pick = () => select(c.name);
    row.addEventListener('click', pick);
    row.addEventListener('keydown', (e) => { if (e.key === 'Enter') pick(); });
    return row;
  });
  $('container-table').tBodies[0].replaceChildren(...rows);
  $('no-containers').hidden = rows.length > 0;
}

function select(name) {
  state.selected = state.selected === name ? null : name;
  for (const tr of $('container-table').tBodies[0].rows) tr.classList.toggle('selected', tr.dataset.name === state.selected);
  if (!state.selected) $('detail').hidden = true;
  $('detail-charts').replaceChildren();
  wakeUp();
}

// ---- charts ----

/** A column of a series answer as [[t, value]], or [] when the field is missing. */
function column(res, field) {
  const i = res?.fields ? res.fields.indexOf(field) : -1;
  return i < 0 ? [] : res.points.map((p) => [p.t, p.v[i]]);
}

/** Migration markers for a node chart, from the cluster's event log ("... from A to B ..."). */
function nodeMarkers(node) {
  return state.events
    .filter((e) => e.kind === 'migration' && e.action === 'done')
    .flatMap((e) => {
      const m = e.message.match(/ from (\S+) to (\S+)/);
      if (!m || (m[1] !== node && m[2] !== node)) return [];
      return [{ t: e.time, kind: 'migration', label: m[1] === node ? `${e.name} →` : `→ ${e.name}`, title: `${clock(e.time)} ${e.message}` }];
    });
}

function renderNodeCharts(nodes, nodeSeries, from, to) {
  const holder = $('node-charts');
  const rows = nodes.map((n, i) => {
    const res = nodeSeries[i];
    let row = holder.querySelector(`.node-row[data-node="${CSS.escape(n.name)}"]`);
    if (!row) row = h('div', { class: 'node-row', 'data-node': n.name }, h('h3', {}, n.name), h('div', { class: 'charts' }));
    const charts = row.querySelector('.charts');
    const base = { from, to, gaps: res.gaps || [], stepMs: res.step_ms || 1000, markers: nodeMarkers(n.name), empty: res.error && 'no samples yet' };
    const total = column(res, 'mem_total');
    const avail = column(res, 'mem_available');
    const used = total.map(([t, v], j) => [t, v != null && avail[j][1] != null ? v - avail[j][1] : null]);
    drawChart(chartFigure(charts, `node:${n.name}:cpu`, 'CPU'), { ...base, kind: 'pct', fixedMax: 100, lines: [
      { label: 'user', points: column(res, 'cpu_user_pct') },
      { label: 'system', points: column(res, 'cpu_system_pct') }] });
    drawChart(chartFigure(charts, `node:${n.name}:memory`, 'Memory'), { ...base, kind: 'bytes', limit: lastValue(total), limitLabel: 'total', lines: [
      { label: 'used', points: used },
      { label: 'containers', points: column(res, 'mem_containers') }] });
    drawChart(chartFigure(charts, `node:${n.name}:net`, 'Network'), { ...base, kind: 'rate', lines: [
      { label: 'rx', points: column(res, 'net_rx_bps') },
      { label: 'tx', points: column(res, 'net_tx_bps') }] });
    return row;
  });
  holder.replaceChildren(...rows);
}

function renderDetail(c, res, from, to) {
  const section = $('detail');
  if (!c) { section.hidden = true; return; }
  section.hidden = false;
  $('detail-title').textContent = `Container ${c.name}`;
  const spans = (res?.nodes || []).map((sp) => `${sp.node} from ${clock(sp.from_ms)}`).join(' → ');
  $('detail-info').textContent = [`${c.state} on ${c.node}`, `image ${c.image}`, c.ip, spans && `ran on ${spans}`,
    res?.error && `no samples yet (${res.error})`].filter(Boolean).join(' · ');
  const charts = $('detail-charts');
  const markers = (res?.events || []).map((e) => ({
    t: e.ts_ms, kind: e.kind, title: `${clock(e.ts_ms)} ${e.kind}: ${e.text}`,
    label: e.kind === 'migration' ? `⇄ ${(e.text.match(/ to (\S+)/) || [])[1] || ''}`.trim() : e.kind,
  }));
  const base = { from, to, gaps: res?.gaps || [], stepMs: res?.step_ms || 1000, markers, empty: res?.error && 'no samples yet' };
  const cpuLimit = c.limits?.cpus_milli ? c.limits.cpus_milli / 1000 : null;
  for (const [key, title, spec] of [
    ['cpu', 'CPU (cores)', { kind: 'cores', limit: cpuLimit, lines: [{ label: 'used', points: column(res, 'cpu_cores') }] }],
    ['memory', 'Memory', { kind: 'bytes', limit: c.limits?.memory_bytes, lines: [
      { label: 'usage', points: column(res, 'mem_bytes') }, { label: 'working set', points: column(res, 'working_set') }] }],
    ['net', 'Network', { kind: 'rate', lines: [
      { label: 'rx', points: column(res, 'net_rx_bps') }, { label: 'tx', points: column(res, 'net_tx_bps') }] }],
  ]) {
    const fig = chartFigure(charts, `container:${key}`, title);
    fig.dataset.container = c.name;
    drawChart(fig, { ...base, ...spec });
  }
}

function lastValue(points) {
  for (let i = points.length - 1; i >= 0; i--) if (points[i][1] != null) return points[i][1];
  return null;
}

/** The figure for chart `key` inside `holder`, made on first use. */
function chartFigure(holder, key, title) {
  let fig = holder.querySelector(`figure[data-chart="${CSS.escape(key)}"]`);
  if (!fig) {
    fig = h('figure', { class: 'chart', 'data-chart': key },
      h('figcaption', {}, h('span', { class: 'title' }, title), h('span', { class: 'values' })),
      h('div', { class: 'plot' }));
    holder.append(fig);
  }
  return fig;
}

function niceStep(raw) {
  const p = 10 ** Math.floor(Math.log10(raw));
  const f = raw / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

/** The y axis for values up to `max`: its top, its ticks and how to label them. */
function yAxis(max, kind) {
  let div = 1;
  let unit = { pct: '%', cores: '' }[kind] || '';
  if (kind === 'bytes' || kind === 'rate') {
    let i = 0;
    while (max / div >= 1024 && i < BYTE_UNITS.length - 1) { div *= 1024; i++; }
    unit = BYTE_UNITS[i] + (kind === 'rate' ? '/s' : '');
  }
  const top = Math.max(max / div, kind === 'cores' ? 0.1 : 1);
  const step = niceStep(top / 4);
  const ticks = [];
  for (let v = 0; v < top + step * 0.999; v += step) ticks.push(v * div);
  return { top: ticks[ticks.length - 1], ticks, label: (v) => `${+(v / div).toFixed(2)}${unit ? ` ${unit}` : ''}` };
}

const X_STEPS = [5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3];

/** Splits points into runs to draw as one line: a missing value or a gap ends a run. */
function runs(points, gaps, stepMs) {
  const out = [];
  let cur = [];
  let prev = null;
  for (const [t, v] of points) {
    if (v == null || !Number.isFinite(v)) { if (cur.length) out.push(cur); cur = []; prev = null; continue; }
    if (prev != null && (t - prev > 2.5 * stepMs || gaps.some((g) => g.from_ms < t && g.to_ms > prev))) {
      out.push(cur);
      cur = [];
    }
    cur.push([t, v]);
    prev = t;
  }
  if (cur.length) out.push(cur);
  return out;
}

function drawChart(fig, spec) {
  const W = Math.max(260, Math.floor(fig.querySelector('.plot').clientWidth || 360));
  const H = 160;
  const m = { l: 64, r: 10, t: 16, b: 22 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const span = Math.max(1, spec.to - spec.from);
  let max = spec.fixedMax ?? 0;
  if (spec.fixedMax == null) {
    for (const line of spec.lines) for (const [t, v] of line.points) if (v != null && t >= spec.from && v > max) max = v;
    if (spec.limit != null) max = Math.max(max, spec.limit);
  }
  const ya = yAxis(max, spec.kind);
  const x = (t) => m.l + ((t - spec.from) / span) * pw;
  const y = (v) => m.t + ph - (Math.min(Math.max(v, 0), ya.top) / ya.top) * ph;
  const root = s('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': fig.querySelector('.title').textContent });

  for (const v of ya.ticks) {
    root.append(s('line', { class: 'grid', x1: m.l, x2: W - m.r, y1: y(v), y2: y(v) }),
      s('text', { class: 'axis', x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, ya.label(v)));
  }
  const step = X_STEPS.find((st) => span / st <= Math.max(2, pw / 64)) || X_STEPS[X_STEPS.length - 1];
  for (let t = Math.ceil(spec.from / step) * step; t <= spec.to; t += step) {
    root.append(s('line', { class: 'tick', x1: x(t), x2: x(t), y1: m.t + ph, y2: m.t + ph + 4 }),
      s('text', { class: 'axis', x: x(t), y: H - 5, 'text-anchor': 'middle' }, clock(t, step < 60e3)));
  }
  for (const g of spec.gaps) {
    const a = Math.max(spec.from, g.from_ms);
    const b = Math.min(spec.to, g.to_ms);
    if (b > a) {
      root.append(s('rect', { class: 'gap', x: x(a), y: m.t, width: Math.max(1, x(b) - x(a)), height: ph },
        s('title', {}, `no samples ${clock(a)}–${clock(b)}`)));
    }
  }
  if (spec.limit != null) {
    root.append(s('line', { class: 'limit', x1: m.l, x2: W - m.r, y1: y(spec.limit), y2: y(spec.limit) }),
      s('text', { class: 'limit-label', x: m.l + 4, y: y(spec.limit) - 3 },
        `${spec.limitLabel || 'limit'} ${ya.label(spec.limit)}`));
  }
  let drawn = 0;
  let lastTs = 0;
  let last = null;
  spec.lines.forEach((line, i) => {
    let d = '';
    const inRange = line.points.filter(([t]) => t >= spec.from && t <= spec.to);
    for (const run of runs(inRange, spec.gaps, spec.stepMs)) {
      if (run.length === 1) root.append(s('circle', { class: `dot s${i}`, cx: x(run[0][0]), cy: y(run[0][1]), r: 2 }));
      else d += run.map(([t, v], j) => `${j ? 'L' : 'M'}${x(t).toFixed(1)},${y(v).toFixed(1)}`).join('');
      drawn += run.length;
      const [t, v] = run[run.length - 1];
      if (t > lastTs) lastTs = t;
      if (i === 0) last = v;
    }
    if (d) root.append(s('path', { class: `line s${i}`, d }));
  });
  if (!drawn) {
    root.append(s('text', { class: 'empty', x: m.l + pw / 2, y: m.t + ph / 2, 'text-anchor': 'middle' }, spec.empty || 'no samples in this window'));
  }

  // Hover: a cursor and the values at that time in the caption.
  const cursor = s('line', { class: 'cursor', y1: m.t, y2: m.t + ph, visibility: 'hidden' });
  const overlay = s('rect', { class: 'overlay', x: m.l, y: m.t, width: pw, height: ph });
  const values = fig.querySelector('.values');
  const showValues = (at) => {
    values.replaceChildren(...spec.lines.map((line, i) => {
      const p = at == null ? [null, lastValue(line.points)] : nearest(line.points, at, spec.stepMs);
      return h('span', { class: `value s${i}` }, `${line.label} ${format(spec.kind, p[1])}`);
    }), at == null ? '' : h('span', { class: 'at' }, clock(at)));
  };
  // The pointer's position outlives redraws (fig.hoverPx), so the cursor stays put.
  const hoverAt = (px) => {
    if (px == null) { cursor.setAttribute('visibility', 'hidden'); showValues(null); return; }
    attrs(cursor, { x1: px, x2: px, visibility: 'visible' });
    showValues(spec.from + ((px - m.l) / pw) * span);
  };
  overlay.addEventListener('mousemove', (ev) => {
    fig.hoverPx = ev.clientX - root.getBoundingClientRect().left;
    hoverAt(fig.hoverPx);
  });
  overlay.addEventListener('mouseleave', () => { fig.hoverPx = null; hoverAt(null); });
  root.append(cursor, overlay);

  let markers = 0;
  for (const mk of spec.markers) {
    if (mk.t < spec.from || mk.t > spec.to) continue;
    const mx = x(mk.t);
    markers++;
    root.append(s('g', { class: 'marker', 'data-kind': mk.kind, 'data-ts': mk.t },
      s('title', {}, mk.title),
      s('line', { class: 'hit', x1: mx, x2: mx, y1: m.t, y2: m.t + ph }),
      s('line', { x1: mx, x2: mx, y1: m.t - 4, y2: m.t + ph }),
      s('text', { x: mx + (mx > W - 90 ? -3 : 3), y: m.t - 5, 'text-anchor': mx > W - 90 ? 'end' : 'start' }, mk.label)));
  }

  fig.querySelector('.plot').replaceChildren(root);
  hoverAt(fig.hoverPx ?? null);
  Object.assign(fig.dataset, { points: drawn, lastTs, last: last ?? '', markers });
}

function nearest(points, t, stepMs) {
  let best = null;
  for (const p of points) if (best == null || Math.abs(p[0] - t) < Math.abs(best[0] - t)) best = p;
  return best && Math.abs(best[0] - t) <= stepMs ? best : [t, null];
}

function format(kind, v) {
  if (kind === 'pct') return fmt.pct(v);
  if (kind === 'bytes') return fmt.bytes(v);
  if (kind === 'rate') return fmt.rate(v);
  return fmt.cores(v);
}

// ---- events ----

function renderEvents() {
  const items = state.events.slice(-40).reverse().map((e) => h('li', { class: `event ${e.kind}` },
    h('time', {}, clock(e.time)), h('span', { class: 'what' }, `${e.kind} ${e.action}`),
    h('strong', {}, e.name), h('span', { class: 'msg' }, e.message)));
  $('event-list').replaceChildren(...items);
}

// ---- wiring ----

document.addEventListener('DOMContentLoaded', () => {
  $('auth-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $('token-input').value = '';
    start();
  });
  $('window').addEventListener('change', (ev) => {
    state.windowMs = Number(ev.target.value);
    wakeUp();
  });
  window.addEventListener('hashchange', () => { if (takeTokenFromFragment()) start(); });
  let resizeTimer = null;
  window.addEventListener('resize', () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(render, 150); });
  takeTokenFromFragment();
  start();
});
