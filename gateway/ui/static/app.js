// The Gust dashboard. It reads the gateway's own JSON API with the
// credentials the browser already holds for this origin (the Basic
// challenge of /ui/), so it can show and do exactly what its user may.
import { lineChart, barChart } from './chart.js';

const $ = (sel) => document.querySelector(sel);
const REFRESH_MS = 5000;
const BILLING_EVERY = 3; // refreshes: billing is reread every 15 s
const state = { ns: '', fn: '', tick: 0, logs: null, open: new Set(), instances: new Map(), armed: null };

// api fetches a path of this gateway and returns its JSON; a refusal
// throws with the gateway's message and status.
async function api(path, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (opts.body) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { credentials: 'same-origin', ...opts, headers });
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!r.ok) {
    const err = new Error((body && body.error) || `${r.status} ${r.statusText}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

function q(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v != null) u.set(k, v);
  const s = u.toString();
  return s ? '?' + s : '';
}

// h builds an element: h('td', {class: 'num'}, 'text', child, ...).
function h(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== false && v != null) e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids) if (k != null) e.append(k instanceof Node ? k : String(k));
  return e;
}

const time = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
const hhmm = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
const ms = (ns) => (ns / 1e6 < 10 ? (ns / 1e6).toFixed(2) : (ns / 1e6).toFixed(0)) + ' ms';
const short = (id) => (id || '').slice(0, 12);
const money = (v) => Number(v).toFixed(6);

function showError(err) {
  const p = $('#error');
  if (!err) { p.hidden = true; return; }
  p.textContent = err.message || String(err);
  p.hidden = false;
}

// ---- scope: namespace and function --------------------------------------

async function loadNamespaces() {
  const sel = $('#ns');
  let names = ['openfaas-fn'];
  try { names = await api('/system/namespaces'); } catch (e) { showError(e); }
  sel.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
  state.ns = names.includes(state.ns) ? state.ns : names[0] || 'openfaas-fn';
  sel.value = state.ns;
}

function setFunctions(fns) {
  const sel = $('#fn');
  const want = state.fn;
  sel.replaceChildren(h('option', { value: '' }, 'all functions'), ...fns.map((f) => h('option', { value: f.name }, f.name)));
  state.fn = fns.some((f) => f.name === want) ? want : '';
  sel.value = state.fn;
}

// ---- functions and their instances ---------------------------------------

function poolCell(pools) {
  if (!pools.length) return h('span', { class: 'muted' }, 'none (scaled to zero)');
  return h('ul', { class: 'pools' }, ...pools.map((p) => {
    const starting = Math.max(p.replicas - p.available, 0);
    const busy = Math.min(p.inFlight, p.available);
    const parts = [];
    if (starting) parts.push(h('span', { class: 'st st-starting' }, `${starting} starting`));
    const paused = p.paused || 0;
    parts.push(h('span', { class: 'st st-ready' }, `${Math.max(p.available - busy - paused, 0)} ready`));
    if (busy) parts.push(h('span', { class: 'st st-busy' }, `${busy} busy`));
    if (p.paused) parts.push(h('span', { class: 'st st-paused' }, `${p.paused} paused`));
    if (p.inFlight) parts.push(h('span', { class: 'muted' }, `${p.inFlight} in flight`));
    if (p.desired != null && p.desired !== p.replicas) parts.push(h('span', { class: 'muted' }, `wants ${p.desired}`));
    return h('li', {}, h('span', { class: 'worker' }, short(p.worker)), ' ', ...parts.flatMap((x) => [x, ' ']));
  }));
}

async function refreshFunctions() {
  const [fns, pools] = await Promise.all([
    api('/system/functions' + q({ namespace: state.ns })),
    api('/ui/api/pools' + q({ namespace: state.ns })).catch(() => []),
  ]);
  setFunctions(fns);
  const body = $('#functions tbody');
  let ready = 0;
  body.replaceChildren(...fns.map((f) => {
    const mine = pools.filter((p) => p.function === f.name);
    ready += f.availableReplicas;
    const inst = [...(state.instances.get(f.name) || [])];
    return h('tr', { 'data-function': f.name, class: f.name === state.fn ? 'selected' : null },
      h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', onclick: () => select(f.name) }, f.name)),
      h('td', { class: 'mono' }, f.image),
      h('td', { class: 'num' }, `${f.availableReplicas} / ${f.replicas}`),
      h('td', {}, poolCell(mine)),
      h('td', { class: 'mono' }, inst.length ? inst.map(short).join(', ') : h('span', { class: 'muted' }, '–')),
      h('td', { class: 'num' }, f.invocationCount),
      h('td', { class: 'row-actions' },
        h('button', { type: 'button', onclick: () => { select(f.name); followLogs(); } }, 'Logs'), ' ',
        deleteButton(f.name)));
  }));
  $('#functions-empty').hidden = fns.length > 0;
  $('#k-instances').textContent = String(ready);
}

// deleteButton asks for a second click instead of a dialog (which would
// block a headless browser and is no kinder to a screen reader). The
// armed state outlives the table's redraws.
function deleteButton(name) {
  const armed = state.armed && state.armed.name === name && Date.now() < state.armed.until;
  const b = h('button', { type: 'button', class: 'danger', 'data-armed': armed ? 'yes' : null }, armed ? `Delete ${name}?` : 'Delete');
  b.addEventListener('click', async () => {
    if (!(state.armed && state.armed.name === name && Date.now() < state.armed.until)) {
      state.armed = { name, until: Date.now() + 5000 };
      b.dataset.armed = 'yes';
      b.textContent = `Delete ${name}?`;
      return;
    }
    state.armed = null;
    b.disabled = true;
    try {
      await api('/system/functions', { method: 'DELETE', body: JSON.stringify({ functionName: name, namespace: state.ns }) });
      if (state.fn === name) select('');
      await refresh();
    } catch (e) { showError(e); b.disabled = false; }
  });
  return b;
}

// ---- deploy ----------------------------------------------------------------

function pairs(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) out[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  return out;
}

async function deploy(ev) {
  ev.preventDefault();
  const f = ev.target;
  const out = $('#deploy-result');
  const spec = { service: f.service.value.trim(), image: f.image.value.trim(), namespace: state.ns,
    envVars: pairs(f.env.value), labels: pairs(f.labels.value) };
  if (f.memory.value.trim()) spec.limits = { memory: f.memory.value.trim() };
  const button = f.querySelector('button');
  button.disabled = true;
  out.textContent = `Deploying ${spec.service}…`;
  try {
    await api('/system/functions', { method: 'POST', body: JSON.stringify(spec) });
    out.textContent = `Deployed ${spec.service}.`;
    f.reset();
    await refresh();
  } catch (e) {
    out.textContent = `Deploy failed: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

// ---- the last hour ---------------------------------------------------------

async function refreshActivity() {
  const a = await api('/ui/api/activity' + q({ namespace: state.ns, function: state.fn }));
  const b = a.buckets;
  const x = (bk) => Date.parse(bk.start);
  const calls = b.reduce((n, bk) => n + bk.calls, 0);
  const errors = b.reduce((n, bk) => n + bk.errors, 0);
  const cold = b.filter((bk) => bk.coldStarts);
  const coldN = cold.reduce((n, bk) => n + bk.coldStarts, 0);
  const ran = b.filter((bk) => bk.calls - (bk.errors || 0) > 0 || bk.p50Ms > 0);
  const last = b.slice(-2).find((bk) => bk.calls) || b[b.length - 1];
  $('#k-rate').textContent = (last.calls / 60).toFixed(2);
  $('#k-calls').textContent = String(calls);
  $('#k-errors').textContent = String(errors);
  const lat = ran.filter((bk) => bk.p50Ms > 0);
  $('#k-latency').textContent = lat.length
    ? `${median(lat.map((bk) => bk.p50Ms)).toFixed(1)} / ${Math.max(...lat.map((bk) => bk.p95Ms)).toFixed(1)} ms` : '–';
  $('#k-cold').textContent = coldN ? `${coldN} (init ≈ ${(cold.reduce((n, bk) => n + bk.initMs * bk.coldStarts, 0) / coldN).toFixed(0)} ms)` : '0';
  $('#hour-scope').textContent = state.fn ? `· ${state.fn}` : `· ${state.ns}`;
  barChart($('#c-rate'), { title: 'Calls per second by minute', name: 'calls/s', points: b.map((bk) => [x(bk), bk.calls / 60]), xfmt: hhmm });
  lineChart($('#c-latency'), { title: 'Latency by minute (ms)', xfmt: hhmm, yfmt: (v) => v.toFixed(1) + ' ms', series: [
    { name: 'p50', points: b.map((bk) => [x(bk), bk.p50Ms]) },
    { name: 'p95', points: b.map((bk) => [x(bk), bk.p95Ms]) },
  ] });
  barChart($('#c-cold'), { title: 'Cold starts by minute', name: 'cold starts', points: b.map((bk) => [x(bk), bk.coldStarts]), xfmt: hhmm });
  $('#activity-note').textContent = a.truncated ? `Counted from the newest ${a.records} calls only: older minutes are incomplete.` : '';
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

// ---- invocations -----------------------------------------------------------

async function refreshInvocations() {
  const list = await api('/system/invocations' + q({ namespace: state.ns, function: state.fn, limit: 25 }));
  const recs = list.items || [];
  for (const r of recs) {
    if (!r.instance) continue;
    if (!state.instances.has(r.function)) state.instances.set(r.function, new Set());
    const set = state.instances.get(r.function);
    set.add(r.instance);
    if (set.size > 5) set.delete(set.values().next().value);
  }
  $('#invocations tbody').replaceChildren(...recs.map((r) => {
    const det = h('details', { open: state.open.has(r.callId) },
      h('summary', {}, h('span', { class: 'mono' }, short(r.callId))),
      h('pre', {}, JSON.stringify(r, null, 2)));
    det.addEventListener('toggle', () => { det.open ? state.open.add(r.callId) : state.open.delete(r.callId); });
    return h('tr', { 'data-call': r.callId, class: r.outcome === 'ok' ? null : 'failed' },
      h('td', {}, time(r.start)),
      h('td', {}, r.function),
      h('td', {}, r.trigger),
      h('td', { class: 'num' }, r.status),
      h('td', {}, r.outcome),
      h('td', { class: 'num' }, ms(r.durationNs)),
      h('td', {}, r.coldStart ? `yes, init ${ms(r.initNs || 0)}` : 'no'),
      h('td', { class: 'mono' }, short(r.instance) || '–'),
      h('td', {}, det));
  }));
}

// ---- dead letters ----------------------------------------------------------

async function refreshDeadLetters() {
  let dls;
  try {
    dls = await api('/system/deadletters' + q({ namespace: state.ns, function: state.fn, limit: 50 }));
  } catch (e) {
    if (e.status === 503) { $('#dead-empty').textContent = 'Async calls are not enabled on this gateway.'; $('#dead-empty').hidden = false; return; }
    throw e;
  }
  dls = dls || [];
  $('#deadletters tbody').replaceChildren(...dls.map((d) => h('tr', { 'data-call': d.request.callId },
    h('td', {}, time(d.failed)),
    h('td', {}, d.request.function),
    h('td', { class: 'mono' }, short(d.request.callId)),
    h('td', { class: 'num' }, d.attempts),
    h('td', {}, d.lastError + (d.lastStatus ? ` (${d.lastStatus})` : '')),
    h('td', {}, h('button', { type: 'button', onclick: (ev) => redrive(ev.target, d.request.callId) }, 'Redrive')))));
  $('#dead-empty').textContent = 'No dead letters.';
  $('#dead-empty').hidden = dls.length > 0;
}

async function redrive(button, callId) {
  button.disabled = true;
  try {
    await api(`/system/deadletters/${encodeURIComponent(callId)}/redrive`, { method: 'POST' });
    button.textContent = 'Queued';
  } catch (e) { showError(e); button.disabled = false; }
}

// ---- billing ---------------------------------------------------------------

// hourly fills the hours of the last day with the report's rows (missing
// hours cost nothing).
function hourly(rep, hours) {
  const by = new Map((rep.groups || []).map((g) => [Date.parse(g.group.replace(/Z$/, ':00Z')), Number(g.totalCost)]));
  return hours.map((t) => [t, by.get(t) || 0]);
}

async function refreshBilling() {
  const to = new Date(Math.ceil(Date.now() / 3600e3) * 3600e3);
  const from = new Date(to - 24 * 3600e3);
  const hours = Array.from({ length: 24 }, (_, i) => from.getTime() + i * 3600e3);
  const span = { from: from.toISOString(), to: to.toISOString() };
  const byFn = await api('/system/billing' + q({ ...span, namespace: state.ns, group_by: 'function' }));
  $('#currency').textContent = `· ${byFn.currency || ''}`;
  const groups = byFn.groups || [];
  $('#billing tbody').replaceChildren(...groups.map((g) => h('tr', {},
    h('th', { scope: 'row' }, g.group.split('/').pop()),
    h('td', { class: 'num' }, g.requests), h('td', { class: 'num' }, g.errors), h('td', { class: 'num' }, g.coldStarts),
    h('td', { class: 'num' }, Number(g.billedSeconds).toFixed(3)), h('td', { class: 'num' }, Number(g.gbSeconds).toFixed(4)),
    h('td', { class: 'num' }, money(g.totalCost)))));
  const t = byFn.total;
  $('#billing tfoot').replaceChildren(t ? h('tr', {}, h('th', { scope: 'row' }, 'Total'),
    h('td', { class: 'num' }, t.requests), h('td', { class: 'num' }, t.errors), h('td', { class: 'num' }, t.coldStarts),
    h('td', { class: 'num' }, Number(t.billedSeconds).toFixed(3)), h('td', { class: 'num' }, Number(t.gbSeconds).toFixed(4)),
    h('td', { class: 'num' }, money(t.totalCost))) : '');

  const top = [...groups].sort((a, b) => Number(b.totalCost) - Number(a.totalCost)).slice(0, 6);
  const fnSeries = await Promise.all(top.map(async (g) => {
    const fn = g.group.split('/').pop();
    const rep = await api('/system/billing' + q({ ...span, namespace: state.ns, function: fn, group_by: 'hour' }));
    return { name: fn, points: hourly(rep, hours) };
  }));
  lineChart($('#c-bill-fn'), { title: `Cost per hour by function in ${state.ns}`, series: fnSeries, xfmt: hhmm, yfmt: money });

  const byNs = await api('/system/billing' + q({ ...span, group_by: 'namespace' }));
  const nss = (byNs.groups || []).slice(0, 6).map((g) => g.group);
  const nsSeries = await Promise.all(nss.map(async (ns) => {
    const rep = await api('/system/billing' + q({ ...span, namespace: ns, group_by: 'hour' }));
    return { name: ns, points: hourly(rep, hours) };
  }));
  lineChart($('#c-bill-ns'), { title: 'Cost per hour by namespace', series: nsSeries, xfmt: hhmm, yfmt: money });
}

// ---- workers ---------------------------------------------------------------

async function refreshWorkers() {
  let ws;
  try { ws = await api('/system/workers'); } catch (e) {
    if (e.status === 403) { $('#workers-section').hidden = true; return; } // a namespace key
    throw e;
  }
  $('#workers tbody').replaceChildren(...ws.map((w) => h('tr', {},
    h('th', { scope: 'row', class: 'mono' }, w.id),
    h('td', {}, h('span', { class: `st st-${w.state}` }, w.state)),
    h('td', { class: 'mono' }, w.addr),
    h('td', { class: 'num' }, w.memoryBytes ? `${(w.memoryBytes / 2 ** 30).toFixed(1)} GiB` : '–'),
    h('td', {}, (w.pools || []).map((p) => `${p.function} ×${p.instances}`).join(', ') || '–'),
    h('td', {}, time(w.seen)))));
}

// ---- logs --------------------------------------------------------------------

const MAX_LOG_LINES = 1000;

function stopLogs(msg) {
  if (state.logs) state.logs.abort();
  state.logs = null;
  $('#logs-stop').disabled = true;
  $('#logs-follow').disabled = false;
  if (msg != null) $('#logs-state').textContent = msg;
}

function appendLog(line) {
  const pre = $('#logs');
  const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.append(h('span', { class: 'log-line' },
    h('span', { class: 'muted' }, time(line.timestamp), ' ', short(line.instance), ' '), line.text, '\n'));
  while (pre.childElementCount > MAX_LOG_LINES) pre.firstElementChild.remove();
  if (stick) pre.scrollTop = pre.scrollHeight;
}

// followLogs streams GET /system/logs?follow=true (newline-delimited
// JSON) into the log panel until stopped or until another function is
// chosen.
async function followLogs() {
  const fn = state.fn;
  stopLogs();
  if (!fn) { $('#logs-state').textContent = 'Choose a function to follow its logs.'; return; }
  const ctl = new AbortController();
  state.logs = ctl;
  $('#logs-stop').disabled = false;
  $('#logs-follow').disabled = true;
  $('#logs').replaceChildren();
  $('#logs-state').textContent = `Following ${fn}…`;
  try {
    const r = await fetch('/system/logs' + q({ name: fn, namespace: state.ns, follow: 'true', tail: 100 }),
      { signal: ctl.signal, headers: { Accept: 'application/x-ndjson' } });
    if (!r.ok) {
      let msg = `${r.status} ${r.statusText}`;
      try { msg = (await r.json()).error || msg; } catch { /* not JSON */ }
      stopLogs(r.status === 404 ? `No logs: ${msg}` : `Logs unavailable: ${msg}`);
      return;
    }
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line) continue;
        try { appendLog(JSON.parse(line)); } catch { appendLog({ text: line }); }
      }
    }
    if (state.logs === ctl) stopLogs('The log stream ended.');
  } catch (e) {
    if (e.name !== 'AbortError' && state.logs === ctl) stopLogs(`Logs stopped: ${e.message}`);
  }
}

// ---- refresh loop ------------------------------------------------------------

function select(fn) {
  state.fn = fn;
  $('#fn').value = fn;
  $('#logs-fn').textContent = fn ? `· ${fn}` : '';
  if (state.logs) followLogs();
  refresh();
}

let timer = null;
let running = false;

async function refresh() {
  clearTimeout(timer);
  if (running) return;
  running = true;
  const jobs = [refreshFunctions(), refreshActivity(), refreshInvocations(), refreshDeadLetters(), refreshWorkers()];
  if (state.tick++ % BILLING_EVERY === 0) jobs.push(refreshBilling());
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r) => r.status === 'rejected');
  showError(failed && failed.reason);
  $('#updated').textContent = `Updated ${time(Date.now())}`;
  document.body.dataset.loaded = String(state.tick);
  running = false;
  timer = setTimeout(refresh, document.hidden ? REFRESH_MS * 6 : REFRESH_MS);
}

async function main() {
  api('/system/info').then((i) => { $('#version').textContent = `gateway ${i.version.release}`; }).catch(() => {});
  await loadNamespaces();
  $('#ns').addEventListener('change', (e) => { state.ns = e.target.value; state.fn = ''; state.tick = 0; stopLogs(''); select(''); });
  $('#fn').addEventListener('change', (e) => { state.tick = 0; select(e.target.value); });
  $('#scope').addEventListener('submit', (e) => e.preventDefault());
  $('#deploy').addEventListener('submit', deploy);
  $('#logs-follow').addEventListener('click', followLogs);
  $('#logs-stop').addEventListener('click', () => stopLogs('Stopped.'));
  $('#logs-clear').addEventListener('click', () => $('#logs').replaceChildren());
  document.addEventListener('visibilitychange', () => { if (!document.hidden) refresh(); });
  await refresh();
}

main();
