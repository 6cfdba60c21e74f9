// Riposte's web console: a client of the REST API, like the CLI.
//
// Rules this file keeps (tests check them):
// - Everything the API returns is rendered as text: elements are built with `el()` and
//   `textContent`, never from HTML strings, so a workflow name, a parameter or a log line
//   that contains markup stays text.
// - The bearer token lives in session storage and is sent as `Authorization`; a 401 sends the
//   user to the sign-in page, a 403 says which role is missing.
// - What a caller may not do is hidden (the API checks every call anyway).

const TOKEN_KEY = 'riposte.token';
const RANK = { viewer: 1, submitter: 2, approver: 3, admin: 4 };
const PHASES = ['Pending', 'Running', 'Succeeded', 'Failed', 'Error'];
/// A node with more children than this shows the first ones and one collapsed group.
const GROUP_LIMIT = 12;
/// How many more children one expansion of a group shows.
const GROUP_STEP = 100;
const NODE_W = 176, NODE_H = 38, GAP_X = 22, GAP_Y = 54;

let me = { subject: '', roles: {}, authentication: false };
/// Undone when the page changes: streams aborted, timers cleared.
let teardown = [];

// ---------------------------------------------------------------------------------------
// Elements, text and time

/// `el('a', {href: '/x', class: 'c', onclick: f}, 'text', child)`: attributes are set as
/// attributes (event handlers as listeners), children strings become text nodes.
function el(tag, attrs, ...children) {
  const svg = ['svg', 'g', 'rect', 'path', 'text', 'title', 'circle', 'line', 'polygon'].includes(tag);
  const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'text') node.textContent = String(v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/// Appends children (nested lists flattened; null, undefined and false skipped).
function add(node, ...children) {
  return append(node, children);
}

function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

function link(href, ...children) {
  return el('a', { href, 'data-link': true }, ...children);
}

function phaseBadge(phase) {
  return el('span', { class: `phase phase-${cssName(phase || 'Pending')}` }, phase || 'Pending');
}

function cssName(s) {
  return String(s).replace(/[^A-Za-z0-9_-]/g, '');
}

function parseTime(s) {
  const t = s ? Date.parse(s) : NaN;
  return Number.isNaN(t) ? null : t;
}

function fmtTime(s) {
  const t = parseTime(s);
  if (t === null) return '';
  return new Date(t).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return '';
  const s = Math.round(ms / 1000);
  if (s < 60) return ms < 10000 ? `${(ms / 1000).toFixed(1)}s` : `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  const hh = Math.floor(m / 60);
  return `${hh}h${String(m % 60).padStart(2, '0')}m`;
}

function duration(started, finished) {
  const a = parseTime(started);
  if (a === null) return '';
  const b = parseTime(finished) ?? Date.now();
  return fmtDuration(b - a);
}

function pretty(v) {
  return typeof v === 'string' ? v : JSON.stringify(v, null, 2);
}

function enc(s) {
  return encodeURIComponent(s);
}

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra) {
  const h = Object.assign({ Accept: 'application/json' }, extra || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function api(method, path, body) {
  const init = { method, headers: headers(body === undefined ? {} : { 'Content-Type': 'application/json' }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the server did not answer (${e.message}); is riposte server running?`);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { message: text }; }
  if (!resp.ok) {
    const message = (data && data.message) || `${resp.status} ${resp.statusText}`;
    if (resp.status === 401) signedOut(message);
    throw new ApiError(resp.status, message);
  }
  return data;
}

/// Reads an NDJSON stream (watch, logs) line by line until `signal` aborts it.
async function stream(path, onItem, signal) {
  const resp = await fetch(path, { headers: headers(), signal });
  if (!resp.ok) {
    const text = await resp.text();
    let msg = text;
    try { msg = JSON.parse(text).message; } catch { /* plain text */ }
    if (resp.status === 401) signedOut(msg);
    throw new ApiError(resp.status, msg);
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (!line) continue;
      let item;
      try { item = JSON.parse(line.startsWith('data:') ? line.slice(5) : line); } catch { continue; }
      onItem(item);
    }
  }
}

/// A stream that restarts after a break (server restart, proxy timeout) until the page
/// changes.
function live(path, onItem) {
  const ctl = new AbortController();
  teardown.push(() => ctl.abort());
  (async () => {
    let delay = 500;
    while (!ctl.signal.aborted) {
      try {
        await stream(path, onItem, ctl.signal);
        delay = 500;
      } catch (e) {
        if (ctl.signal.aborted) return;
        if (e.status === 401 || e.status === 403 || e.status === 404) { showError(e); return; }
      }
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return ctl;
}

function roleIn(ns) {
  const r = me.roles[ns] || me.roles['*'];
  if (r) return r;
  if (!ns) return Object.values(me.roles).sort((a, b) => RANK[b] - RANK[a])[0];
  return undefined;
}

/// Where lists start: every namespace for a caller with a role in all of them, else the
/// first namespace the caller has a role in.
function defaultNs(fallback) {
  if (!me.authentication || (me.roles || {})['*']) return fallback;
  return Object.keys(me.roles || {})[0] || fallback;
}

function can(ns, needed) {
  const r = roleIn(ns);
  return !!r && RANK[r] >= RANK[needed];
}

// ---------------------------------------------------------------------------------------
// Messages, confirmation, navigation

function showError(e) {
  const banner = document.getElementById('banner');
  let text = e.message || String(e);
  if (e.status === 403) text = `Not allowed: ${text}`;
  add(clear(banner), el('span', {}, text), ' ', el('button', { type: 'button', class: 'link', onclick: () => { banner.hidden = true; } }, 'Dismiss'));
  banner.className = 'banner error';
  banner.hidden = false;
}

function showNotice(text) {
  const banner = document.getElementById('banner');
  add(clear(banner), el('span', {}, text));
  banner.className = 'banner notice';
  banner.hidden = false;
  setTimeout(() => { if (banner.textContent.startsWith(text)) banner.hidden = true; }, 4000);
}

function hideBanner() {
  document.getElementById('banner').hidden = true;
}

/// A modal question; resolves true when confirmed. Escape or Cancel says no.
function confirmAction(title, text, okLabel) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = 'cancel';
    dlg.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

function signedOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (location.pathname !== '/login') {
    const next = location.pathname + location.search;
    navigate(`/login?next=${enc(next)}&reason=${enc(message || 'sign in')}`, true);
  }
}

function navigate(url, replace) {
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  render();
}

document.addEventListener('click', (ev) => {
  const a = ev.target.closest && ev.target.closest('a[data-link]');
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute('href'));
});
window.addEventListener('popstate', () => render());

// ---------------------------------------------------------------------------------------
// Pages

const ROUTES = [
  [/^\/$/, () => navigate('/workflows', true)],
  [/^\/login$/, loginPage],
  [/^\/workflows$/, workflowsPage],
  [/^\/workflows\/([^/]+)\/([^/]+)$/, workflowPage],
  [/^\/approvals$/, approvalsPage],
  [/^\/templates$/, templatesPage],
  [/^\/templates\/([^/]+)\/([^/]+)$/, (ns, n, main) => templatePage('WorkflowTemplate', ns, n, main)],
  [/^\/cluster-templates\/([^/]+)$/, (n, main) => templatePage('ClusterWorkflowTemplate', '', n, main)],
  [/^\/cron-workflows$/, cronsPage],
  [/^\/cron-workflows\/([^/]+)\/([^/]+)$/, (ns, n, main) => templatePage('CronWorkflow', ns, n, main)],
  [/^\/events$/, eventsPage],
  [/^\/events\/(\d+)$/, eventPage],
  [/^\/sensors$/, sensorsPage],
  [/^\/sensors\/([^/]+)\/([^/]+)$/, sensorPage],
  [/^\/audit$/, auditPage],
];

async function render() {
  for (const f of teardown) { try { f(); } catch { /* already gone */ } }
  teardown = [];
  hideBanner();
  const main = document.getElementById('main');
  const path = location.pathname;
  for (const a of document.querySelectorAll('#nav a')) {
    if (path.startsWith(`/${a.dataset.page}`)) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  for (const [re, page] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    clear(main);
    try {
      await page(...m.slice(1).map(decodeURIComponent), main);
    } catch (e) {
      if (e.status !== 401) {
        showError(e);
        if (!main.firstChild) add(main, el('p', { class: 'muted' }, 'This page could not be loaded.'));
      }
    }
    document.body.dataset.page = path.split('/')[1] || 'workflows';
    return;
  }
  add(clear(main), el('h1', {}, 'Not found'), el('p', {}, `No page at ${path}. `), link('/workflows', 'Workflows'));
}

function query() {
  return new URLSearchParams(location.search);
}

function setQuery(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const s = q.toString();
  navigate(location.pathname + (s ? `?${s}` : ''));
}

// --- sign-in

async function loginPage(main) {
  const q = query();
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, 'aria-describedby': 'token-help' });
  const form = el('form', { class: 'card narrow' },
    el('h1', {}, 'Sign in'),
    q.get('reason') ? el('p', { class: 'error-text', role: 'status' }, q.get('reason')) : null,
    el('label', { for: 'token' }, 'Bearer token'),
    input,
    el('p', { id: 'token-help', class: 'muted' }, 'The token from your identities file (riposte auth new-token). It is kept in this tab only (session storage) and sent as the Authorization header.'),
    el('button', { type: 'submit', id: 'signin' }, 'Sign in'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await loadMe();
      navigate(q.get('next') || '/workflows', true);
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      showError(e);
    }
  });
  add(main, form);
  input.focus();
}

async function loadMe() {
  me = await api('GET', '/api/v1/userinfo');
  const who = document.getElementById('who');
  const roles = Object.entries(me.roles || {}).map(([ns, r]) => `${r} in ${ns === '*' ? 'all namespaces' : ns}`).join(', ');
  who.textContent = me.authentication ? `${me.subject} (${roles})` : 'authentication off';
  document.getElementById('signout').hidden = !me.authentication;
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    me = { subject: '', roles: {}, authentication: true };
    document.getElementById('who').textContent = '';
    navigate('/login', true);
  });
});

// --- workflows

function labelText(labels) {
  return Object.entries(labels || {})
    .filter(([k]) => !k.startsWith('workflows.argoproj.io/'))
    .map(([k, v]) => `${k}=${v}`);
}

async function workflowsPage(main) {
  const q = query();
  const ns = q.has('namespace') ? q.get('namespace') : defaultNs('');
  const phase = q.get('phase') || '';
  const labels = q.get('labels') || '';
  const since = q.get('since') || '';
  const nsInput = el('input', { id: 'f-namespace', name: 'namespace', value: ns, placeholder: 'all namespaces' });
  const phaseSel = el('select', { id: 'f-phase', name: 'phase' }, el('option', { value: '' }, 'any phase'),
    PHASES.map((p) => el('option', { value: p, selected: p === phase }, p)));
  const labelInput = el('input', { id: 'f-labels', name: 'labels', value: labels, placeholder: 'key=value,key2=value2' });
  const sinceSel = el('select', { id: 'f-since', name: 'since' },
    [['', 'any time'], ['1h', 'last hour'], ['24h', 'last day'], ['168h', 'last week']]
      .map(([v, t]) => el('option', { value: v, selected: v === since }, t)));
  const form = el('form', { class: 'filters', role: 'search' },
    el('label', { for: 'f-namespace' }, 'Namespace'), nsInput,
    el('label', { for: 'f-phase' }, 'Phase'), phaseSel,
    el('label', { for: 'f-labels' }, 'Labels'), labelInput,
    el('label', { for: 'f-since' }, 'Created'), sinceSel,
    el('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setQuery({ namespace: nsInput.value.trim(), phase: phaseSel.value, labels: labelInput.value.trim(), since: sinceSel.value });
  });
  const tbody = el('tbody', { id: 'workflow-rows' });
  const table = el('table', { class: 'list' },
    el('thead', {}, el('tr', {}, ['Name', 'Namespace', 'Phase', 'Labels', 'Started', 'Finished', 'Duration'].map((t) => el('th', { scope: 'col' }, t)))),
    tbody);
  const more = el('button', { type: 'button', id: 'more', hidden: true }, 'Load more');
  add(main, el('h1', {}, 'Workflows'), form, table, more);

  const params = new URLSearchParams({ 'listOptions.limit': '100' });
  if (phase) params.set('phase', phase);
  if (labels) params.set('listOptions.labelSelector', labels);
  if (since) {
    const hours = parseInt(since, 10);
    params.set('createdAfter', new Date(Date.now() - hours * 3600e3).toISOString().replace(/\.\d+Z$/, 'Z'));
  }
  const rows = new Map();
  const rowOf = (w) => {
    const m = w.metadata || {};
    const s = w.status || {};
    return el('tr', { 'data-name': m.name, 'data-phase': s.phase || 'Pending' },
      el('td', {}, link(`/workflows/${enc(m.namespace)}/${enc(m.name)}`, m.name)),
      el('td', {}, m.namespace),
      el('td', {}, phaseBadge(s.phase)),
      el('td', { class: 'labels' }, labelText(m.labels).map((l) => el('span', { class: 'label' }, l))),
      el('td', {}, fmtTime(s.startedAt || m.creationTimestamp)),
      el('td', {}, fmtTime(s.finishedAt)),
      el('td', {}, duration(s.startedAt, s.finishedAt)));
  };
  const put = (w, atTop) => {
    const key = `${w.metadata.namespace}/${w.metadata.name}`;
    const row = rowOf(w);
    const old = rows.get(key);
    if (old) old.replaceWith(row);
    else if (atTop) tbody.prepend(row);
    else add(tbody, row);
    rows.set(key, row);
  };
  let cont = '';
  const loadPage = async () => {
    if (cont) params.set('listOptions.continue', cont);
    const list = await api('GET', `/api/v1/workflows/${enc(ns)}?${params}`);
    for (const w of list.items || []) put(w, false);
    cont = (list.metadata && list.metadata.continue) || '';
    more.hidden = !cont;
    if (!rows.size) add(tbody, el('tr', { class: 'empty' }, el('td', { colspan: 7 }, 'No workflows match.')));
  };
  more.addEventListener('click', () => loadPage().then(() => {
    document.body.dataset.moreReady = String(performance.now());
  }).catch(showError));
  await loadPage();
  document.body.dataset.listReady = String(performance.now());
  // Live: a change to a workflow that matches the filters updates its row or adds it.
  const matches = (w) => {
    if (phase && (w.status || {}).phase !== phase) return false;
    for (const kv of labels.split(',').filter(Boolean)) {
      const [k, v] = kv.split('=').map((x) => x.trim());
      if (((w.metadata || {}).labels || {})[k] !== v) return false;
    }
    return true;
  };
  live(`/api/v1/workflow-events/${enc(ns)}`, (item) => {
    const w = item.result && item.result.object;
    if (!w || !w.metadata) return;
    const empty = tbody.querySelector('tr.empty');
    if (matches(w)) {
      if (empty) empty.remove();
      put(w, true);
    }
  });
}

// --- one workflow: graph, node panel, logs, actions

const ACTIONS = [
  // name, API verb, role, when it applies, what the confirmation says
  ['suspend', 'PUT', 'approver', (w) => !finished(w), 'Suspend: no new steps start until it is resumed.'],
  ['resume', 'PUT', 'approver', (w) => !finished(w), 'Resume: suspended steps and the workflow continue.'],
  ['stop', 'PUT', 'admin', (w) => !finished(w), 'Stop: running steps are stopped; exit handlers still run.'],
  ['terminate', 'PUT', 'admin', (w) => !finished(w), 'Terminate: everything stops at once; exit handlers do not run.'],
  ['retry', 'PUT', 'submitter', (w) => ['Failed', 'Error'].includes(phaseOf(w)), 'Retry: failed steps run again in this workflow.'],
  ['resubmit', 'PUT', 'submitter', (w) => finished(w), 'Resubmit: a new workflow with the same definition and parameters.'],
  ['delete', 'DELETE', 'admin', (w) => finished(w), 'Delete: the workflow and its nodes are removed (the audit log keeps what happened).'],
];

function phaseOf(w) {
  return (w.status && w.status.phase) || 'Pending';
}

function finished(w) {
  return ['Succeeded', 'Failed', 'Error'].includes(phaseOf(w));
}

async function workflowPage(ns, name, main) {
  const base = `/api/v1/workflows/${enc(ns)}/${enc(name)}`;
  let wf = await api('GET', base);
  const expanded = new Map();
  let selected = query().get('node') || '';
  const title = el('h1', {}, el('span', { class: 'muted' }, `${ns} / `), name, ' ', el('span', { id: 'wf-phase' }));
  const summary = el('dl', { class: 'summary', id: 'wf-summary' });
  const actions = el('div', { class: 'actions', id: 'wf-actions', role: 'toolbar', 'aria-label': 'Workflow actions' });
  const graph = el('div', { class: 'graph', id: 'graph', role: 'group', 'aria-label': 'Workflow graph' });
  const panel = el('aside', { class: 'panel', id: 'node-panel', 'aria-live': 'polite' }, el('p', { class: 'muted' }, 'Select a node to see its inputs, outputs and logs.'));
  add(main, title, summary, actions, el('div', { class: 'split' }, graph, panel));
  let logCtl = null;
  let panelFor = '';

  const drawSummary = () => {
    const s = wf.status || {};
    add(clear(document.getElementById('wf-phase')), phaseBadge(s.phase));
    const labels = labelText((wf.metadata || {}).labels);
    add(clear(summary), 
      el('dt', {}, 'Started'), el('dd', {}, fmtTime(s.startedAt) || '—'),
      el('dt', {}, 'Finished'), el('dd', {}, fmtTime(s.finishedAt) || '—'),
      el('dt', {}, 'Duration'), el('dd', {}, duration(s.startedAt, s.finishedAt) || '—'),
      el('dt', {}, 'Progress'), el('dd', {}, s.progress || '—'),
      labels.length ? [el('dt', {}, 'Labels'), el('dd', {}, labels.map((l) => el('span', { class: 'label' }, l)))] : null,
      s.message ? [el('dt', {}, 'Message'), el('dd', { id: 'wf-message' }, s.message)] : null);
  };
  const drawActions = () => {
    clear(actions);
    for (const [act, method, role, applies, text] of ACTIONS) {
      if (!can(ns, role)) continue;
      const b = el('button', { type: 'button', 'data-action': act, disabled: !applies(wf) }, act[0].toUpperCase() + act.slice(1));
      b.addEventListener('click', async () => {
        if (!(await confirmAction(`${act[0].toUpperCase() + act.slice(1)} ${name}?`, text, act[0].toUpperCase() + act.slice(1)))) return;
        try {
          const out = await api(method, method === 'DELETE' ? base : `${base}/${act}`, method === 'DELETE' ? undefined : {});
          if (act === 'delete') { navigate('/workflows'); return; }
          if (act === 'resubmit' && out && out.metadata) { navigate(`/workflows/${enc(out.metadata.namespace)}/${enc(out.metadata.name)}`); return; }
          showNotice(`${act}: done`);
          if (out && out.status) { wf = out; redraw(); }
        } catch (e) { showError(e); }
      });
      add(actions, b);
    }
    if (!actions.firstChild) add(actions, el('span', { class: 'muted' }, 'Read-only: your role allows no actions here.'));
  };
  const select = (id) => {
    selected = id;
    const url = new URL(location.href);
    url.searchParams.set('node', id);
    history.replaceState(null, '', url.pathname + url.search);
    drawGraph(graph, wf, expanded, selected, select, toggle);
    drawPanel(true);
  };
  const toggle = (parent, collapse) => {
    if (collapse) expanded.delete(parent);
    else expanded.set(parent, (expanded.get(parent) || GROUP_LIMIT - 1) + GROUP_STEP);
    drawGraph(graph, wf, expanded, selected, select, toggle);
  };
  const drawPanel = (force) => {
    const nodes = (wf.status && wf.status.nodes) || {};
    const n = nodes[selected];
    if (!n) return;
    // Re-render the details on every change; the log keeps streaming.
    const details = nodeDetails(n, nodes);
    const existing = document.getElementById('node-details');
    if (existing && panelFor === selected && !force) { existing.replaceWith(details); return; }
    panelFor = selected;
    if (logCtl) logCtl.abort();
    const pre = el('pre', { class: 'logs', id: 'node-logs', tabindex: 0, 'aria-label': 'Logs' });
    add(clear(panel), details);
    if (['Pod', 'Retry'].includes(n.type) || !n.children) {
      add(panel, el('h3', {}, 'Logs'), pre);
      let lines = 0;
      const ctl = new AbortController();
      logCtl = ctl;
      teardown.push(() => ctl.abort());
      const podName = n.type === 'Retry' && n.children ? n.children[n.children.length - 1] : n.id;
      stream(`${base}/log?podName=${enc(podName)}&logOptions.container=main&logOptions.follow=true`, (item) => {
        const r = item.result || {};
        if (typeof r.content !== 'string') return;
        if (lines++ > 5000) pre.firstChild && pre.removeChild(pre.firstChild);
        add(pre, document.createTextNode(`${r.content}\n`));
        pre.scrollTop = pre.scrollHeight;
      }, ctl.signal).then(() => {
        if (!pre.firstChild) add(pre, el('span', { class: 'muted' }, '(no log lines)'));
      }).catch((e) => { if (!ctl.signal.aborted) add(pre, el('span', { class: 'error-text' }, `logs: ${e.message}`)); });
    }
  };
  const redraw = () => {
    drawSummary();
    drawActions();
    drawGraph(graph, wf, expanded, selected, select, toggle);
    if (selected) drawPanel(false);
  };
  redraw();
  document.body.dataset.graphReady = String(performance.now());
  live(`/api/v1/workflow-events/${enc(ns)}?listOptions.fieldSelector=${enc(`metadata.name=${name}`)}`, (item) => {
    const w = item.result && item.result.object;
    if (!w || !w.status) return;
    wf = w;
    redraw();
  });
}

function nodeDetails(n, nodes) {
  const kv = (k, v) => (v === undefined || v === null || v === '' ? null : [el('dt', {}, k), el('dd', {}, v)]);
  const params = (list, id) => (list && list.length
    ? el('table', { class: 'params', id }, el('tbody', {}, list.map((p) => el('tr', {}, el('th', { scope: 'row' }, p.name), el('td', {}, el('code', {}, p.value === undefined ? '' : String(p.value)))))))
    : el('p', { class: 'muted' }, 'none'));
  const retries = n.type === 'Retry' ? (n.children || []).length : null;
  const parentRetry = Object.values(nodes).find((p) => p.type === 'Retry' && (p.children || []).includes(n.id));
  const attempt = parentRetry ? `${parentRetry.children.indexOf(n.id) + 1} of ${parentRetry.children.length}` : null;
  const out = n.outputs || {};
  return el('div', { id: 'node-details', 'data-node': n.id, 'data-phase': n.phase },
    el('h2', {}, n.displayName || n.name), phaseBadge(n.phase),
    el('dl', { class: 'summary' },
      kv('Type', n.type), kv('Node', n.id), kv('Name', n.name), kv('Template', n.templateName),
      kv('Job / pod', n.type === 'Pod' ? (n.podName || n.id) : null),
      kv('Started', fmtTime(n.startedAt)), kv('Finished', fmtTime(n.finishedAt)),
      kv('Duration', duration(n.startedAt, n.finishedAt)),
      kv('Attempts', retries), kv('Attempt', attempt), kv('Exit code', out.exitCode),
      kv('Message', n.message)),
    el('h3', {}, 'Inputs'), params((n.inputs || {}).parameters, 'node-inputs'),
    el('h3', {}, 'Outputs'), params(out.parameters, 'node-outputs'),
    out.result !== undefined ? [el('h4', {}, 'Result'), el('pre', { class: 'result', id: 'node-result' }, out.result)] : null);
}

/// Visible nodes and edges: every node, except that a node with more than GROUP_LIMIT
/// children shows the ones worth looking at (failed and running first) and one group standing
/// for the rest; each expansion shows GROUP_STEP more. So a 10,000-node fan-out draws as a
/// dozen boxes and never as 10,000 at once. `expanded`: node id → children shown.
export function visibleGraph(nodes, expanded) {
  const ids = Object.keys(nodes);
  const hasParent = new Set();
  for (const n of Object.values(nodes)) for (const c of n.children || []) hasParent.add(c);
  const roots = ids.filter((id) => !hasParent.has(id));
  const visible = new Map();
  const edges = [];
  const seenEdge = new Set();
  const edge = (a, b) => {
    const k = `${a}\u0000${b}`;
    if (!seenEdge.has(k)) { seenEdge.add(k); edges.push([a, b]); }
  };
  const order = { Failed: 0, Error: 0, Running: 1, Pending: 2, Omitted: 3, Skipped: 3, Succeeded: 4 };
  const queue = [];
  for (const r of roots) { visible.set(r, { id: r, node: nodes[r] }); queue.push(r); }
  while (queue.length) {
    const id = queue.shift();
    const v = visible.get(id);
    let kids = v.group ? v.group.next : (v.node.children || []).filter((c) => nodes[c]);
    let group = null;
    const limit = expanded.get(id) || GROUP_LIMIT - 1;
    if (!v.group && kids.length > limit + 1) {
      const sorted = kids.map((c, i) => [c, i]).sort((a, b) => ((order[nodes[a[0]].phase] ?? 2) - (order[nodes[b[0]].phase] ?? 2)) || (a[1] - b[1])).map((x) => x[0]);
      const shown = sorted.slice(0, limit);
      const hidden = sorted.slice(limit);
      const counts = {};
      const next = new Set();
      for (const h of hidden) {
        counts[nodes[h].phase] = (counts[nodes[h].phase] || 0) + 1;
        for (const c of nodes[h].children || []) if (nodes[c]) next.add(c);
      }
      kids = shown;
      group = { parent: id, hidden, counts, next: [...next] };
    }
    for (const c of kids) {
      edge(id, c);
      if (!visible.has(c)) { visible.set(c, { id: c, node: nodes[c] }); queue.push(c); }
    }
    // After the children it stands beside, so it is drawn at the end of their layer.
    if (group) {
      const gid = `${id}/+`;
      visible.set(gid, { id: gid, group });
      edge(id, gid);
      queue.push(gid);
    }
  }
  return { visible, edges };
}

/// Layers by longest path from a root, ordered within a layer by the mean position of
/// their parents (one sweep), top to bottom.
export function layout(visible, edges) {
  const parents = new Map();
  const children = new Map();
  for (const id of visible.keys()) { parents.set(id, []); children.set(id, []); }
  for (const [a, b] of edges) { children.get(a).push(b); parents.get(b).push(a); }
  const indeg = new Map([...parents].map(([k, v]) => [k, v.length]));
  const depth = new Map();
  const ready = [...visible.keys()].filter((k) => indeg.get(k) === 0);
  for (const r of ready) depth.set(r, 0);
  for (let i = 0; i < ready.length; i++) {
    const id = ready[i];
    for (const c of children.get(id)) {
      depth.set(c, Math.max(depth.get(c) ?? 0, depth.get(id) + 1));
      indeg.set(c, indeg.get(c) - 1);
      if (indeg.get(c) === 0) ready.push(c);
    }
  }
  // A cycle cannot come from the engine; place what is left at the bottom rather than lose it.
  let maxDepth = Math.max(0, ...depth.values());
  for (const id of visible.keys()) if (!depth.has(id)) depth.set(id, ++maxDepth);
  const layers = [];
  for (const id of ready.concat([...visible.keys()].filter((k) => !ready.includes(k)))) {
    const d = depth.get(id);
    (layers[d] = layers[d] || []).push(id);
  }
  const pos = new Map();
  layers.forEach((layer, d) => {
    if (d > 0) {
      const key = (id) => {
        const ps = parents.get(id).filter((p) => pos.has(p));
        return ps.length ? ps.reduce((s, p) => s + pos.get(p).x, 0) / ps.length : 0;
      };
      const keyed = layer.map((id, i) => [id, key(id), i]);
      keyed.sort((a, b) => (a[1] - b[1]) || (a[2] - b[2]));
      layer.splice(0, layer.length, ...keyed.map((k) => k[0]));
    }
    layer.forEach((id, i) => pos.set(id, { x: i * (NODE_W + GAP_X), y: d * (NODE_H + GAP_Y), layer: d }));
  });
  // Centre each layer under the widest.
  const widest = Math.max(1, ...layers.map((l) => (l ? l.length : 0)));
  const width = widest * (NODE_W + GAP_X);
  layers.forEach((layer) => {
    const shift = (width - layer.length * (NODE_W + GAP_X)) / 2;
    for (const id of layer) pos.get(id).x += shift;
  });
  return { pos, width, height: layers.length * (NODE_H + GAP_Y) };
}

const TYPE_MARK = { Pod: '', Suspend: '‖ ', Skipped: '↷ ', Retry: '↻ ', DAG: '◇ ', Steps: '☰ ', StepGroup: '', TaskGroup: '', Container: '', HTTP: '⇄ ', Plugin: '' };

function drawGraph(container, wf, expanded, selected, onSelect, onToggle) {
  const nodes = (wf.status && wf.status.nodes) || {};
  const { visible, edges } = visibleGraph(nodes, expanded);
  const { pos, width, height } = layout(visible, edges);
  const svg = el('svg', { class: 'dag', width: Math.max(width, 200), height: Math.max(height, 60), viewBox: `0 0 ${Math.max(width, 200)} ${Math.max(height, 60)}`, role: 'img', 'aria-label': `Graph of ${visible.size} of ${Object.keys(nodes).length} nodes` });
  const edgeLayer = el('g', { class: 'edges' });
  for (const [a, b] of edges) {
    const p = pos.get(a), q = pos.get(b);
    const x1 = p.x + NODE_W / 2, y1 = p.y + NODE_H, x2 = q.x + NODE_W / 2, y2 = q.y;
    const my = (y1 + y2) / 2;
    add(edgeLayer, el('path', { d: `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}` }));
  }
  add(svg, edgeLayer);
  for (const [id, v] of visible) {
    const p = pos.get(id);
    if (v.group) {
      const total = v.group.hidden.length;
      const counts = Object.entries(v.group.counts).map(([ph, c]) => `${c} ${ph}`).join(', ');
      const g = el('g', { class: 'node group', transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button', 'data-group': v.group.parent, 'aria-label': `${total} more nodes (${counts}); press Enter to expand` },
        el('title', {}, `${total} more: ${counts}. Click to show ${Math.min(total, GROUP_STEP)} more.`),
        el('rect', { width: NODE_W, height: NODE_H, rx: 6 }),
        el('text', { x: NODE_W / 2, y: 16, 'text-anchor': 'middle' }, `+${total} more`),
        el('text', { x: NODE_W / 2, y: 30, 'text-anchor': 'middle', class: 'sub' }, counts.slice(0, 30)));
      const act = () => onToggle(v.group.parent);
      g.addEventListener('click', act);
      g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); act(); } });
      add(svg, g);
      continue;
    }
    const n = v.node;
    const small = n.type === 'StepGroup' || n.type === 'TaskGroup';
    const label = `${TYPE_MARK[n.type] || ''}${n.displayName || n.name || id}`;
    const g = el('g', {
      class: `node type-${cssName(n.type)} phase-${cssName(n.phase)}${id === selected ? ' selected' : ''}`,
      transform: `translate(${p.x},${p.y})`, tabindex: 0, role: 'button', 'data-node': id, 'data-phase': n.phase,
      'aria-label': `${n.displayName || n.name} (${n.type}, ${n.phase})`,
      'aria-pressed': id === selected ? 'true' : 'false',
    }, el('title', {}, `${n.displayName || n.name} — ${n.type}, ${n.phase}${n.message ? `: ${n.message}` : ''}`));
    if (small) {
      add(g, el('circle', { cx: NODE_W / 2, cy: NODE_H / 2, r: 9 }));
    } else {
      add(g, el('rect', { width: NODE_W, height: NODE_H, rx: n.type === 'DAG' || n.type === 'Steps' ? 14 : 4 }),
        el('text', { x: 10, y: 16 }, label.length > 24 ? `${label.slice(0, 23)}…` : label),
        el('text', { x: 10, y: 30, class: 'sub' }, `${n.type} · ${n.phase}`));
    }
    if (expanded.has(id)) {
      const collapse = el('text', { x: NODE_W - 14, y: 16, class: 'toggle', role: 'button', tabindex: 0, 'aria-label': 'Collapse children' }, '−');
      collapse.addEventListener('click', (e) => { e.stopPropagation(); onToggle(id, true); });
      add(g, collapse);
    }
    g.addEventListener('click', () => onSelect(id));
    g.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onSelect(id); } });
    add(svg, g);
  }
  const first = !container.firstChild;
  const focused = document.activeElement && document.activeElement.dataset ? (document.activeElement.dataset.node || document.activeElement.dataset.group) : null;
  add(clear(container), svg);
  // The first time, bring the root into view (a wide layer centres it far to the right).
  const root = [...visible.keys()][0];
  if (first && root && pos.get(root)) container.scrollLeft = Math.max(0, pos.get(root).x + NODE_W / 2 - container.clientWidth / 2);
  if (focused) {
    const again = container.querySelector(`[data-node="${CSS.escape(focused)}"], [data-group="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

// --- approvals

async function approvalsPage(main) {
  add(main, el('h1', {}, 'Approvals'), el('p', { class: 'muted' }, 'Steps waiting for a person, across running workflows. A decision goes through the API and is recorded in the audit log under your name.'));
  const list = el('div', { id: 'approvals' });
  add(main, list);
  const draw = async () => {
    const items = await pendingApprovals();
    updateApprovalsCount(items.length);
    clear(list);
    if (!items.length) { add(list, el('p', { class: 'empty' }, 'Nothing is waiting for approval.')); return; }
    for (const a of items) add(list, approvalCard(a, draw));
  };
  await draw();
  // Countdowns tick; the list refreshes when workflows change.
  const tick = setInterval(() => {
    for (const c of document.querySelectorAll('[data-deadline]')) c.textContent = countdown(c.dataset.deadline);
  }, 1000);
  teardown.push(() => clearInterval(tick));
  let pending = null;
  const watchNs = !me.authentication || (me.roles || {})['*'] ? '' : Object.keys(me.roles || {})[0] || '';
  live(`/api/v1/workflow-events/${enc(watchNs)}`, () => {
    if (pending) return;
    pending = setTimeout(() => { pending = null; draw().catch(showError); }, 500);
  });
  teardown.push(() => pending && clearTimeout(pending));
}

/// The inbox across the namespaces the caller has a role in (one call with a role in `*`).
async function pendingApprovals() {
  const namespaces = Object.keys(me.roles || {});
  if (!me.authentication || namespaces.includes('*')) return (await api('GET', '/api/v1/riposte/approvals')).items || [];
  const lists = await Promise.all(namespaces.map((ns) => api('GET', `/api/v1/riposte/approvals?namespace=${enc(ns)}`)));
  return lists.flatMap((l) => l.items || []);
}

function countdown(deadline) {
  const t = parseTime(deadline);
  if (t === null) return '';
  const left = t - Date.now();
  return left <= 0 ? 'deadline passed (the default applies)' : `${fmtDuration(left)} left`;
}

function updateApprovalsCount(n) {
  const c = document.getElementById('approvals-count');
  c.textContent = String(n);
  c.hidden = !n;
}

function changeLines(change) {
  // `path: old → new`: the old value struck through, the new one added.
  return (change.changes || []).map((line) => {
    const m = String(line).match(/^(.*?): (.*) → (.*)$/);
    if (!m) return el('div', { class: 'diff-line' }, line);
    return el('div', { class: 'diff-line' }, el('span', { class: 'diff-path' }, `${m[1]}: `), el('del', {}, m[2]), ' → ', el('ins', {}, m[3]));
  });
}

function approvalCard(a, refresh) {
  const mayDecide = can(a.namespace, 'approver');
  const inputs = [];
  const form = el('form', { class: 'decide' });
  for (const p of a.supply || []) {
    const id = `v-${a.nodeId}-${p.name}`;
    const field = Array.isArray(p.enum) && p.enum.length
      ? el('select', { id, name: p.name }, p.enum.map((v) => el('option', { value: v, selected: v === p.default }, v)))
      : el('input', { id, name: p.name, value: p.default ?? '' });
    inputs.push([p.name, field]);
    add(form, el('label', { for: id }, p.name), field, p.description ? el('span', { class: 'muted' }, p.description) : null);
  }
  const approve = el('button', { type: 'submit', class: 'primary', 'data-approve': a.nodeId }, 'Approve');
  const deny = el('button', { type: 'button', class: 'danger', 'data-deny': a.nodeId }, 'Deny');
  const wfBase = `/api/v1/workflows/${enc(a.namespace)}/${enc(a.workflow)}`;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const values = Object.fromEntries(inputs.map(([n, f]) => [n, f.value]));
    const said = Object.entries(values).map(([k, v]) => `${k}=${v}`).join(', ');
    if (!(await confirmAction(`Approve ${a.displayName} in ${a.workflow}?`, said ? `The step continues with ${said}.` : 'The step continues.', 'Approve'))) return;
    try {
      await api('PUT', `${wfBase}/set`, { nodeFieldSelector: `id=${a.nodeId}`, outputParameters: JSON.stringify(values) });
      showNotice(`Approved ${a.displayName} in ${a.workflow}`);
      await refresh();
    } catch (e) { showError(e); }
  });
  deny.addEventListener('click', async () => {
    if (!(await confirmAction(`Deny ${a.displayName} in ${a.workflow}?`, 'The workflow is stopped (its exit handlers still run), as `argo stop` does. To continue with another value, choose it and approve instead.', 'Deny'))) return;
    try {
      await api('PUT', `${wfBase}/stop`, { message: `denied at ${a.displayName}` });
      showNotice(`Denied: ${a.workflow} stopped`);
      await refresh();
    } catch (e) { showError(e); }
  });
  if (mayDecide) add(form, el('div', { class: 'buttons' }, approve, deny));
  else add(form, el('p', { class: 'muted' }, `Read-only: deciding needs the approver role in ${a.namespace}.`));
  const ev = a.event;
  return el('article', { class: 'card approval', 'data-workflow': a.workflow, 'data-node': a.nodeId },
    el('h2', {}, link(`/workflows/${enc(a.namespace)}/${enc(a.workflow)}?node=${enc(a.nodeId)}`, a.workflow), ' · ', a.displayName),
    el('p', {}, `Waiting since ${fmtTime(a.startedAt)} (${duration(a.startedAt)}) `,
      a.deadline ? el('strong', { 'data-deadline': a.deadline }, countdown(a.deadline)) : el('span', { class: 'muted' }, 'no deadline')),
    ev ? el('section', { class: 'alert-source' }, el('h3', {}, 'The alert'),
      el('p', {}, link(`/events/${ev.seq}`, `event ${ev.seq}`), ` ${ev.type || ''} from ${ev.source || ''}${ev.subject ? ` about ${ev.subject}` : ''} at ${fmtTime(ev.time)}`),
      el('details', {}, el('summary', {}, 'Payload'), el('pre', {}, pretty(ev.data)))) : null,
    (a.parameters || []).length ? el('section', {}, el('h3', {}, 'Parameters'),
      el('table', { class: 'params' }, el('tbody', {}, a.parameters.map((p) => el('tr', {}, el('th', { scope: 'row' }, p.name), el('td', {}, el('code', {}, p.value ?? ''))))))) : null,
    (a.findings || []).length ? el('section', {}, el('h3', {}, 'What the steps before found or would change'),
      a.findings.map((f) => el('div', { class: 'finding' }, el('strong', {}, f.node), f.message ? ` — ${f.message}` : '',
        f.output ? el('pre', { class: 'result' }, f.output) : null,
        f.change ? el('div', { class: 'diff' }, el('div', { class: 'muted' }, `${f.change.dryRun ? 'would ' : ''}${f.change.action || ''} ${f.change.object || ''}`), changeLines(f.change)) : null))) : null,
    (a.next || []).length ? el('section', { class: 'next-steps' }, el('h3', {}, 'If approved, next'),
      a.next.map((n) => el('div', { class: 'finding' }, el('strong', {}, n.name),
        n.templateRef ? ` — library template ${n.templateRef.name}/${n.templateRef.template}` : (n.template ? ` — template ${n.template}` : ''),
        n.when ? el('div', { class: 'muted' }, `when ${n.when}`) : null,
        (n.arguments || []).length ? el('div', { class: 'muted' }, n.arguments.map((p) => `${p.name}=${p.value ?? ''}`).join(', ')) : null,
        n.does && n.does.manifest ? [el('div', {}, `${n.does.action || 'apply'}:`), el('pre', { class: 'result' }, pretty(n.does.manifest))] : null,
        n.does && n.does.image ? el('pre', { class: 'result' }, [n.does.image, ...(n.does.command || []), ...(n.does.args || [])].join(' ') + (n.does.source ? `\n${n.does.source}` : '')) : null))) : null,
    el('section', {}, el('h3', {}, 'Decision'), form));
}

// --- templates and cron workflows

async function templatesPage(main) {
  const ns = query().get('namespace') || defaultNs('default');
  const nsInput = el('input', { id: 't-namespace', value: ns });
  const form = el('form', { class: 'filters' }, el('label', { for: 't-namespace' }, 'Namespace'), nsInput, el('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); setQuery({ namespace: nsInput.value.trim() }); });
  add(main, el('h1', {}, 'Workflow templates'), form);
  const [tpls, cluster] = await Promise.all([
    api('GET', `/api/v1/workflow-templates/${enc(ns)}`),
    api('GET', '/api/v1/cluster-workflow-templates').catch(() => ({ items: [] })),
  ]);
  const table = (items, href) => el('table', { class: 'list' },
    el('thead', {}, el('tr', {}, ['Name', 'Entrypoint', 'Parameters', 'Created'].map((t) => el('th', { scope: 'col' }, t)))),
    el('tbody', {}, (items || []).map((t) => el('tr', {},
      el('td', {}, link(href(t), t.metadata.name)),
      el('td', {}, (t.spec || {}).entrypoint || ''),
      el('td', {}, (((t.spec || {}).arguments || {}).parameters || []).map((p) => p.name).join(', ')),
      el('td', {}, fmtTime(t.metadata.creationTimestamp))))));
  add(main, table(tpls.items, (t) => `/templates/${enc(t.metadata.namespace || ns)}/${enc(t.metadata.name)}`));
  if ((cluster.items || []).length) add(main, el('h2', {}, 'Cluster workflow templates'), table(cluster.items, (t) => `/cluster-templates/${enc(t.metadata.name)}`));
  if (!(tpls.items || []).length) add(main, el('p', { class: 'empty' }, `No workflow templates in ${ns}.`));
}

async function cronsPage(main) {
  const ns = query().get('namespace') || defaultNs('default');
  const data = await api('GET', `/api/v1/cron-workflows/${enc(ns)}`);
  add(main, el('h1', {}, 'Cron workflows'), el('table', { class: 'list' },
    el('thead', {}, el('tr', {}, ['Name', 'Schedule', 'Time zone', 'Suspended', 'Last run'].map((t) => el('th', { scope: 'col' }, t)))),
    el('tbody', {}, (data.items || []).map((c) => el('tr', {},
      el('td', {}, link(`/cron-workflows/${enc(c.metadata.namespace || ns)}/${enc(c.metadata.name)}`, c.metadata.name)),
      el('td', {}, el('code', {}, (c.spec || {}).schedule || ((c.spec || {}).schedules || []).join(', '))),
      el('td', {}, (c.spec || {}).timezone || ''),
      el('td', {}, (c.spec || {}).suspend ? 'yes' : 'no'),
      el('td', {}, fmtTime((c.status || {}).lastScheduledTime)))))));
  if (!(data.items || []).length) add(main, el('p', { class: 'empty' }, `No cron workflows in ${ns}.`));
}

/// A definition as YAML with its lint diagnostics under the lines they point at (the same
/// `file:line:col` messages as `riposte lint`).
function yamlWithDiagnostics(lint) {
  const byLine = new Map();
  for (const d of lint.diagnostics || []) {
    const l = d.line || 1;
    (byLine.get(l) || byLine.set(l, []).get(l)).push(d);
  }
  const lines = String(lint.yaml || '').split('\n');
  const code = el('div', { class: 'yaml', role: 'region', 'aria-label': 'YAML', tabindex: 0 });
  lines.forEach((text, i) => {
    const n = i + 1;
    const diags = byLine.get(n) || [];
    add(code, el('div', { class: `yaml-line${diags.length ? ' has-diag' : ''}` }, el('span', { class: 'ln' }, String(n)), el('span', { class: 'src' }, text || ' ')));
    for (const d of diags) add(code, el('div', { class: `diag ${cssName(d.severity)}`, role: 'note' }, d.text));
  });
  const errors = (lint.diagnostics || []).filter((d) => d.severity === 'error').length;
  const warnings = (lint.diagnostics || []).length - errors;
  return [el('p', { id: 'lint-summary', class: errors ? 'error-text' : 'muted' }, `${errors} error(s), ${warnings} warning(s)`), code];
}

async function templatePage(kind, ns, name, main) {
  const path = {
    WorkflowTemplate: `/api/v1/workflow-templates/${enc(ns)}/${enc(name)}`,
    ClusterWorkflowTemplate: `/api/v1/cluster-workflow-templates/${enc(name)}`,
    CronWorkflow: `/api/v1/cron-workflows/${enc(ns)}/${enc(name)}`,
  }[kind];
  const obj = await api('GET', path);
  obj.kind = obj.kind || kind;
  obj.apiVersion = obj.apiVersion || 'argoproj.io/v1alpha1';
  add(main, el('h1', {}, el('span', { class: 'muted' }, `${kind} `), name));
  const spec = kind === 'CronWorkflow' ? ((obj.spec || {}).workflowSpec || {}) : (obj.spec || {});
  const submitNs = ns || 'default';
  if (can(submitNs, 'submitter')) add(main, submitForm(kind, submitNs, name, spec));
  const lint = await api('POST', '/api/v1/riposte/lint', { object: obj, namespace: submitNs });
  add(main, el('h2', {}, 'Definition'), yamlWithDiagnostics(lint));
}

function submitForm(kind, ns, name, spec) {
  const params = ((spec.arguments || {}).parameters || []);
  const fields = [];
  const form = el('form', { class: 'card submit', id: 'submit-form' }, el('h2', {}, 'Submit'));
  for (const p of params) {
    const id = `p-${p.name}`;
    const f = Array.isArray(p.enum) && p.enum.length
      ? el('select', { id, name: p.name }, p.enum.map((v) => el('option', { value: v, selected: v === p.value }, v)))
      : el('input', { id, name: p.name, value: p.value ?? '' });
    fields.push([p.name, f]);
    add(form, el('label', { for: id }, p.name), f, p.description ? el('span', { class: 'muted' }, p.description) : null);
  }
  add(form, el('button', { type: 'submit', class: 'primary' }, 'Submit'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const w = await api('POST', `/api/v1/workflows/${enc(ns)}/submit`, {
        resourceKind: kind, resourceName: name,
        submitOptions: { parameters: fields.map(([n, f]) => `${n}=${f.value}`) },
      });
      navigate(`/workflows/${enc(w.metadata.namespace)}/${enc(w.metadata.name)}`);
    } catch (e) { showError(e); }
  });
  return form;
}

// --- events and sensors

async function eventsPage(main) {
  const q = query();
  const params = new URLSearchParams({ limit: '100' });
  if (q.get('namespace')) params.set('namespace', q.get('namespace'));
  if (q.get('before')) params.set('before', q.get('before'));
  const data = await api('GET', `/api/v1/riposte/events?${params}`);
  const items = data.items || [];
  add(main, el('h1', {}, 'Events'), el('table', { class: 'list', id: 'events' },
    el('thead', {}, el('tr', {}, ['#', 'Received', 'Source', 'Type', 'Subject', 'Time', 'Processed'].map((t) => el('th', { scope: 'col' }, t)))),
    el('tbody', {}, items.map((e) => el('tr', {},
      el('td', {}, link(`/events/${e.seq}`, String(e.seq))),
      el('td', {}, fmtTime(e.receivedAt)),
      el('td', {}, `${e.namespace}/${e.eventSource}/${e.eventName}`),
      el('td', {}, (e.envelope || {}).type || ''),
      el('td', {}, (e.envelope || {}).subject || ''),
      el('td', {}, fmtTime((e.envelope || {}).time)),
      el('td', {}, e.processedAt ? fmtTime(e.processedAt) : 'not yet'))))));
  if (!items.length) add(main, el('p', { class: 'empty' }, 'No events yet.'));
  else if (items.length === 100) add(main, link(`/events?before=${items[items.length - 1].seq}`, 'Older events'));
}

function effectLink(effect) {
  const m = String(effect || '').match(/^workflows\/([^/]+)\/([^/ ]+)(.*)$/);
  return m ? [link(`/workflows/${enc(m[1])}/${enc(m[2])}`, `${m[1]}/${m[2]}`), m[3]] : String(effect || '');
}

async function eventPage(seq, main) {
  const e = await api('GET', `/api/v1/riposte/events/${enc(seq)}`);
  const env = e.envelope || {};
  add(main, el('h1', {}, `Event ${e.seq}`),
    el('dl', { class: 'summary' },
      el('dt', {}, 'Source'), el('dd', {}, `${env.source || ''} (${e.namespace}/${e.eventSource}/${e.eventName})`),
      el('dt', {}, 'Type'), el('dd', {}, env.type || ''), el('dt', {}, 'Subject'), el('dd', {}, env.subject || '—'),
      el('dt', {}, 'Id'), el('dd', {}, env.id || ''), el('dt', {}, 'Time'), el('dd', {}, fmtTime(env.time)),
      el('dt', {}, 'Received'), el('dd', {}, fmtTime(e.receivedAt)), el('dt', {}, 'Processed'), el('dd', {}, fmtTime(e.processedAt) || 'not yet')),
    el('h2', {}, 'Journey'));
  const sensors = e.sensors || [];
  if (!sensors.length) add(main, el('p', { class: 'empty' }, 'No sensor of this namespace listened to this event source.'));
  for (const s of sensors) add(main, decisionView(s));
  add(main, el('h2', {}, 'Envelope'), el('pre', { id: 'envelope' }, pretty(env)));
  // Try a sensor against this event, without submitting anything.
  const list = await api('GET', `/api/v1/sensors/${enc(e.namespace)}`).catch(() => ({ items: [] }));
  const sel = el('select', { id: 'test-sensor' }, (list.items || []).map((s) => el('option', { value: s.metadata.name }, s.metadata.name)));
  const out = el('div', { id: 'test-result' });
  const form = el('form', { class: 'card' }, el('h2', {}, 'Test a sensor against this event'), el('label', { for: 'test-sensor' }, 'Sensor'), sel, el('button', { type: 'submit' }, 'Test (nothing is submitted)'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const r = await api('POST', `/api/v1/sensors/${enc(e.namespace)}/${enc(sel.value)}/test`, { event: Number(e.seq) });
      add(clear(out), dryRunView(r));
    } catch (err) { showError(err); }
  });
  if ((list.items || []).length) add(main, form);
}

function decisionView(s) {
  return el('section', { class: 'card decision', 'data-sensor': s.sensor },
    el('h3', {}, `Sensor ${s.sensor}`, el('span', { class: 'muted' }, ` at ${fmtTime(s.at)}`)),
    el('ul', {}, (s.dependencies || []).map((d) => el('li', { class: d.matched ? 'matched' : 'unmatched' },
      `${d.name}: ${d.matched ? 'matched' : 'not matched'}`, (d.reasons || []).length ? el('ul', {}, d.reasons.map((r) => el('li', {}, r))) : null))),
    el('ul', {}, (s.triggers || []).map((t) => el('li', {},
      `trigger ${t.trigger}: `, t.fired ? 'fired' : (t.deduplicated ? 'deduplicated' : (t.waiting ? `waiting (${t.waiting.conditions || 'all'}; have ${(t.waiting.have || []).join(', ') || 'nothing'})` : 'not fired')),
      t.effect ? [' → ', effectLink(t.effect)] : null, t.existing ? ' (already existed)' : null, t.error ? el('span', { class: 'error-text' }, ` ${t.error}`) : null))));
}

function dryRunView(r) {
  return el('div', { class: 'dry-run' },
    el('ul', {}, (r.dependencies || []).map((d) => el('li', { class: d.matched ? 'matched' : 'unmatched' }, `dependency ${d.name}: ${d.matched ? 'matched' : 'not matched'}`,
      (d.reasons || []).length ? el('ul', {}, d.reasons.map((x) => el('li', {}, x))) : null))),
    (r.triggers || []).map((t) => el('div', {}, el('p', {}, `trigger ${t.name} (${t.type || 'unsupported type'}): ${t.fires ? 'fires' : 'does not fire'}`),
      (t.parameters || []).length ? el('ul', {}, t.parameters.map((p) => el('li', {}, p))) : null,
      t.resource ? el('pre', {}, pretty(t.resource)) : null)));
}

async function sensorsPage(main) {
  const ns = query().get('namespace') || defaultNs('default');
  const data = await api('GET', `/api/v1/sensors/${enc(ns)}`);
  const tbody = el('tbody', {});
  add(main, el('h1', {}, 'Sensors'), el('table', { class: 'list', id: 'sensors' },
    el('thead', {}, el('tr', {}, ['Name', 'Dependencies', 'Triggers', 'Last firings'].map((t) => el('th', { scope: 'col' }, t)))), tbody));
  for (const s of data.items || []) {
    const last = el('td', {}, '…');
    add(tbody, el('tr', {},
      el('td', {}, link(`/sensors/${enc(ns)}/${enc(s.metadata.name)}`, s.metadata.name)),
      el('td', {}, ((s.spec || {}).dependencies || []).map((d) => `${d.name} (${d.eventSourceName}/${d.eventName})`).join(', ')),
      el('td', {}, ((s.spec || {}).triggers || []).map((t) => (t.template || {}).name).join(', ')),
      last));
    api('GET', `/api/v1/workflows/${enc(ns)}?listOptions.limit=3&listOptions.labelSelector=${enc(`events.argoproj.io/sensor=${s.metadata.name}`)}`)
      .then((l) => add(clear(last), (l.items || []).length ? (l.items || []).map((w) => el('div', {}, link(`/workflows/${enc(w.metadata.namespace)}/${enc(w.metadata.name)}`, w.metadata.name), ' ', fmtTime(w.metadata.creationTimestamp))) : 'none yet'))
      .catch(() => add(clear(last), '—'));
  }
  if (!(data.items || []).length) add(main, el('p', { class: 'empty' }, `No sensors in ${ns}.`));
}

async function sensorPage(ns, name, main) {
  const s = await api('GET', `/api/v1/sensors/${enc(ns)}/${enc(name)}`);
  s.kind = s.kind || 'Sensor';
  s.apiVersion = s.apiVersion || 'argoproj.io/v1alpha1';
  add(main, el('h1', {}, el('span', { class: 'muted' }, 'Sensor '), name));
  const seq = el('input', { id: 'test-event', inputmode: 'numeric', placeholder: 'event number' });
  const data = el('textarea', { id: 'test-data', rows: 6, placeholder: '{"output": "...", "output_fields": {...}} — a payload or a CloudEvents envelope' });
  const out = el('div', { id: 'test-result' });
  const form = el('form', { class: 'card' }, el('h2', {}, 'Test against an event'),
    el('label', { for: 'test-event' }, 'Stored event'), seq, el('label', { for: 'test-data' }, 'or a payload'), data,
    el('button', { type: 'submit' }, 'Test (nothing is submitted)'), out);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      let body;
      if (seq.value.trim()) body = { event: Number(seq.value.trim()) };
      else {
        try { body = { data: JSON.parse(data.value) }; } catch (e) { throw new ApiError(400, `the payload is not JSON: ${e.message}`); }
      }
      add(clear(out), dryRunView(await api('POST', `/api/v1/sensors/${enc(ns)}/${enc(name)}/test`, body)));
    } catch (e) { showError(e); }
  });
  add(main, form);
  const lint = await api('POST', '/api/v1/riposte/lint', { object: s, namespace: ns });
  add(main, el('h2', {}, 'Definition'), yamlWithDiagnostics(lint));
}

// --- audit

async function auditPage(main) {
  const q = query();
  const f = {
    workflow: q.get('workflow') || '', actor: q.get('actor') || '', since: q.get('since') || '', until: q.get('until') || '',
  };
  const inputs = {
    workflow: el('input', { id: 'a-workflow', value: f.workflow, placeholder: 'namespace/name' }),
    actor: el('input', { id: 'a-actor', value: f.actor, placeholder: 'identity' }),
    since: el('input', { id: 'a-since', value: f.since, placeholder: '2026-12-04T00:00:00Z' }),
    until: el('input', { id: 'a-until', value: f.until, placeholder: '2026-12-04T23:59:59Z' }),
  };
  const form = el('form', { class: 'filters', role: 'search' },
    Object.entries(inputs).map(([k, i]) => [el('label', { for: i.id }, k[0].toUpperCase() + k.slice(1)), i]),
    el('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    setQuery(Object.fromEntries(Object.entries(inputs).map(([k, i]) => [k, i.value.trim()])));
  });
  const status = el('p', { id: 'chain-status', class: 'muted' }, 'Verifying the hash chain…');
  const tbody = el('tbody', { id: 'audit-rows' });
  const more = el('button', { type: 'button', hidden: true }, 'Older');
  add(main, el('h1', {}, 'Audit log'), status, form, el('table', { class: 'list' },
    el('thead', {}, el('tr', {}, ['#', 'At', 'Actor', 'Action', 'Object', 'Source', 'Details'].map((t) => el('th', { scope: 'col' }, t)))), tbody), more);
  api('GET', '/api/v1/riposte/audit/verify').then((v) => {
    status.className = v.ok ? 'ok-text' : 'error-text';
    status.dataset.ok = String(v.ok);
    status.textContent = v.ok ? `Chain verified: ${v.rows} rows, no row edited or deleted.` : `Chain broken: ${v.problems.join('; ')}`;
  }).catch((e) => { status.textContent = `Verification failed: ${e.message}`; });
  let before = '';
  const load = async () => {
    const params = new URLSearchParams({ limit: '200' });
    for (const [k, v] of Object.entries(f)) if (v) params.set(k, v);
    if (before) params.set('before', before);
    const data = await api('GET', `/api/v1/riposte/audit?${params}`);
    for (const r of data.items || []) {
      const m = String(r.object || '').match(/^workflows\/([^/]+)\/([^/]+)$/);
      add(tbody, el('tr', { 'data-action': r.action, 'data-actor': r.actor },
        el('td', {}, String(r.seq)), el('td', {}, fmtTime(r.at)), el('td', {}, r.actor), el('td', {}, r.action),
        el('td', {}, m ? link(`/workflows/${enc(m[1])}/${enc(m[2])}`, r.object) : r.object), el('td', {}, r.source),
        el('td', {}, el('code', { class: 'details' }, JSON.stringify(r.details)))));
    }
    before = data.before ? String(data.before) : '';
    more.hidden = !before;
    if (!tbody.firstChild) add(tbody, el('tr', {}, el('td', { colspan: 7 }, 'No rows match.')));
  };
  more.addEventListener('click', () => load().catch(showError));
  await load();
}

// ---------------------------------------------------------------------------------------
// Start

async function start() {
  if (location.pathname !== '/login') {
    try {
      await loadMe();
    } catch (e) {
      if (e.status !== 401) showError(e);
      if (e.status === 401) return; // signedOut() went to the sign-in page
    }
    pendingApprovals().then((items) => updateApprovalsCount(items.length)).catch(() => {});
  }
  await render();
}

start();
