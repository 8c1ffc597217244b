// The console: drives the public Account API on this page's own origin with fetch.
// Every value is rendered as text (textContent, attributes), never as HTML. The key the page
// is signed in with lives in sessionStorage only, and in memory.
'use strict';

const STORAGE = 'account-console-key';
const AUDIT_PAGE = 20;
const DELIVERIES_PAGE = 20;
const state = { key: null, account: null, me: null, keys: [], auditBefore: [], auditNext: null, once: null, hooks: [], deliveries: null };

const $ = (id) => document.getElementById(id);

/** An element with attributes (set as attributes or properties, never HTML) and children (text or nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'onclick') node.addEventListener('click', value);
    else if (name === 'class') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiFailure extends Error {
  constructor(code, message, status) { super(message); this.code = code; this.status = status; }
}

/** Calls the API; resolves to `data`, or rejects with the API's error. A key that is no longer valid signs the page out. */
async function api(method, path, body, key) {
  const useKey = key === undefined ? state.key : key;
  const headers = { Accept: 'application/json' };
  if (useKey) headers.Authorization = 'Bearer ' + useKey;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'omit', cache: 'no-store' });
  } catch (e) {
    throw new ApiFailure('network', 'The service could not be reached.', 0);
  }
  if (response.status === 204) return null; // a deletion: no body
  let json = null;
  try { json = await response.json(); } catch (e) { json = null; }
  if (json && json.success) return json.data;
  const error = json && json.error ? json.error : { code: 'http_' + response.status, message: 'The service answered ' + response.status + '.' };
  if (useKey && useKey === state.key && ['revoked_api_key', 'expired_api_key', 'invalid_api_key'].includes(error.code)) {
    signOut(error.message);
    const failure = new ApiFailure(error.code, error.message, response.status);
    failure.signedOut = true;
    throw failure;
  }
  throw new ApiFailure(error.code, error.message, response.status);
}

function notice(text) { $('notice').textContent = text || ''; }
function showAlert(text) {
  const alert = $('alert');
  alert.textContent = text || '';
  alert.hidden = !text;
}
/** Runs an action, showing the API's message when it is refused. */
async function attempt(action) {
  showAlert('');
  try { await action(); } catch (e) { if (!e.signedOut) showAlert(e.message); }
}

// ---- Focus ----
// When a dialog or a value shown once closes, or a table is drawn again, focus goes back to
// the control that opened it: the same node if it is still there, else the same action in
// the same row, else another control of that row, else the heading of the panel shown.

/** What is focused now, described so that it can be found again after a re-render. */
function opener() {
  const node = document.activeElement;
  if (!node || node === document.body) return null;
  const row = node.closest('tr[data-id]');
  return { node, row: row ? row.dataset.id : null, action: node.dataset ? node.dataset.action || null : null };
}

function focusable(node) {
  return !!node && node !== document.body && node.isConnected && !node.disabled && node.getClientRects().length > 0 && !node.closest('[inert]');
}

function restoreFocus(from) {
  const candidates = [];
  if (from) {
    candidates.push(from.node);
    const row = from.row ? [...document.querySelectorAll('tr[data-id]')].find((r) => r.dataset.id === from.row) : null;
    if (row) {
      if (from.action) candidates.push(row.querySelector('[data-action="' + from.action + '"]'));
      candidates.push(...row.querySelectorAll('button'));
    }
  }
  candidates.push(document.querySelector('.panel:not([hidden]) h2'), $('signin-key'));
  const target = candidates.find(focusable);
  if (target) target.focus();
}

/** Runs `render` (which replaces nodes) and puts focus back where it was, if it was in them. */
function keepingFocus(render) {
  const from = opener();
  render();
  if (from && !from.node.isConnected) restoreFocus(from);
}

function when(value) {
  if (!value) return el('span', { class: 'inactive' }, 'never');
  return el('time', { datetime: value }, value.replace('T', ' ').replace('Z', ' UTC'));
}

// ---- Plans ----

async function loadPlans() {
  try {
    const plans = await api('GET', '/v1/plans', undefined, null);
    for (const select of document.querySelectorAll('.plan-select')) {
      const chosen = select.value;
      select.replaceChildren(...plans.map((p) => el('option', { value: p.id }, p.name + ' (' + p.included_requests_per_month.toLocaleString('en') + ' requests a month)')));
      select.value = chosen;
    }
  } catch (e) { /* the built-in choices stay */ }
}

// ---- Signing up, in and out ----

/** Shows a new key (`what` 'key') or signing secret ('secret') this once, with its warning. */
function showOnce(title, key, continueLabel, what) {
  const secret = what === 'secret';
  // From a dialog, focus goes back to what opened the dialog.
  state.onceFrom = $('key-dialog').open ? state.dialogFrom : opener();
  state.once = key;
  state.onceWhat = secret ? 'secret' : 'key';
  $('once-title').textContent = title;
  $('once-label').textContent = secret ? 'Signing secret' : 'New API key';
  $('once-warning').textContent = 'Copy this ' + state.onceWhat + ' now: it will not be shown again.';
  $('once-copy').textContent = secret ? 'Copy secret' : 'Copy key';
  $('once-key').value = key;
  $('once-continue').textContent = continueLabel || '';
  $('once-continue').hidden = !continueLabel;
  $('shown-once').hidden = false;
  $('once-key').focus();
  $('once-key').select();
}
function hideOnce(restore) {
  const wasShown = !$('shown-once').hidden;
  state.once = null;
  $('once-key').value = '';
  $('shown-once').hidden = true;
  if (wasShown && restore) restoreFocus(state.onceFrom);
}

async function signIn(key, quiet) {
  const account = await api('GET', '/v1/account', undefined, key);
  const keys = await api('GET', '/v1/account/api-keys', undefined, key);
  state.key = key;
  sessionStorage.setItem(STORAGE, key);
  state.account = account;
  setKeys(keys);
  $('signed-out').hidden = true;
  $('signed-in').hidden = false;
  $('who').hidden = false;
  $('signin-key').value = '';
  renderAccount();
  showPanel('account-panel');
  // The sign-in form is gone: the focus goes to the panel shown.
  if (!focusable(document.activeElement)) restoreFocus(null);
  if (!quiet) notice('Signed in to ' + account.name + '.');
}

function signOut(message) {
  state.key = null;
  state.account = null;
  state.me = null;
  state.keys = [];
  sessionStorage.removeItem(STORAGE);
  hideOnce();
  $('signed-in').hidden = true;
  $('who').hidden = true;
  $('signed-out').hidden = false;
  $('who-text').textContent = '';
  for (const body of document.querySelectorAll('tbody')) body.replaceChildren();
  $('account-facts').replaceChildren();
  const dialog = $('key-dialog');
  if (dialog.open) dialog.close();
  state.hooks = [];
  state.deliveries = null;
  $('deliveries').hidden = true;
  notice(message ? '' : 'Signed out.');
  showAlert(message ? 'Signed out: ' + message : '');
  if (!focusable(document.activeElement)) $('signin-key').focus();
}

// ---- Account ----

function renderAccount() {
  const a = state.account;
  const me = state.me;
  $('who-text').textContent = a.name + ' · ' + (me ? me.name + ' (' + me.key_prefix + ', ' + me.scopes.join(' + ') + ')' : 'signed in');
  const facts = [
    ['Organization id', el('code', {}, a.org_id)], ['Name', a.name], ['Email', a.email],
    ['Plan', a.plan.name + ' — ' + a.plan.included_requests_per_month.toLocaleString('en') + ' requests a month included, ' +
      (a.plan.over_limit === 'block' ? 'blocked' : 'billed') + ' beyond; $' + (a.plan.base_price_cents / 100).toFixed(2) + ' a month'],
    ['Status', a.closed_at ? 'closed' : (a.is_active ? 'active' : 'deactivated by an operator')], ['Created', when(a.created_at)],
  ];
  $('account-facts').replaceChildren(...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  $('account-name').value = a.name;
  $('account-email').value = a.email;
  $('account-plan').value = a.plan.id;
  $('close-confirm').value = '';
  applyRights();
}

/** Disables what the signed-in key may not do (rather than letting the API refuse it). */
function applyRights() {
  const me = state.me;
  const write = !!me && me.scopes.includes('write');
  const live = !!me && me.environment === 'live';
  const reason = !me ? 'the signed-in key is not in the list' : !write ? 'the signed-in key lacks the write scope' : '';
  for (const control of document.querySelectorAll('.needs-write')) {
    control.disabled = !write;
    if (reason) control.title = reason; else control.removeAttribute('title');
  }
  const accountWrites = write && live;
  for (const id of ['account-name', 'account-email', 'account-plan', 'close-confirm']) $(id).disabled = !accountWrites;
  $('account-form').querySelector('button').disabled = !accountWrites;
  $('close-button').disabled = !accountWrites || !me.scopes.includes('read') || $('close-confirm').value !== state.account.org_id;
  if (write && !live) $('account-form').querySelector('button').title = 'a test key cannot change the account';
  for (const id of ['create-name', 'create-environment', 'create-read', 'create-write', 'create-expires', 'create-ips']) $(id).disabled = !write;
  if (me && me.environment === 'test') $('create-environment').value = 'test';
  const hookWrites = hookRights().write;
  const hookReason = !me ? reason : !live ? 'a test key cannot manage webhooks' : reason;
  for (const control of $('webhook-form').querySelectorAll('input, button')) {
    control.disabled = !hookWrites;
    if (hookWrites) control.removeAttribute('title'); else control.title = hookReason;
  }
}

/** What the signed-in key may do with webhooks: every route needs a live key. */
function hookRights() {
  const me = state.me;
  const live = !!me && me.environment === 'live';
  return { read: live && me.scopes.includes('read'), write: live && me.scopes.includes('write') };
}

async function saveAccount(event) {
  event.preventDefault();
  await attempt(async () => {
    const a = state.account;
    const change = {};
    const name = $('account-name').value.trim();
    const email = $('account-email').value.trim();
    const plan = $('account-plan').value;
    if (name !== a.name) change.name = name;
    if (email !== a.email) change.email = email;
    if (plan !== a.plan.id) change.plan_id = plan;
    if (Object.keys(change).length === 0) { notice('Nothing to change.'); return; }
    state.account = await api('PATCH', '/v1/account', change);
    renderAccount();
    notice('Account saved.');
  });
}

async function closeAccount(event) {
  event.preventDefault();
  await attempt(async () => {
    await api('DELETE', '/v1/account', { confirm: $('close-confirm').value });
    signOut('the account is closed and every key revoked.');
  });
}

// ---- Keys ----

function setKeys(keys) {
  state.keys = keys;
  // The list never holds a secret: the signed-in key is the one whose prefix it starts with.
  state.me = keys.find((k) => state.key && k.is_active && state.key.startsWith(k.key_prefix.replace(/\.\.\.$/, ''))) || null;
}

async function refreshKeys() {
  setKeys(await api('GET', '/v1/account/api-keys'));
  renderKeys();
  renderAccount();
}

function renderKeys() {
  const me = state.me;
  const write = !!me && me.scopes.includes('write');
  const rows = state.keys.map((k) => {
    const mine = me && me.id === k.id;
    const canManage = write && (me.environment === 'live' || k.environment === 'test');
    const canRoll = canManage && k.is_active && k.scopes.every((s) => me.scopes.includes(s));
    const actions = el('td', {},
      el('button', { type: 'button', 'aria-label': 'Rename ' + k.name, 'data-action': 'rename', disabled: !canManage, onclick: () => renameKey(k) }, 'Rename'),
      el('button', { type: 'button', 'aria-label': 'Edit allowlist of ' + k.name, 'data-action': 'allowlist', disabled: !canManage, onclick: () => editAllowlist(k) }, 'Allowlist'),
      el('button', { type: 'button', 'aria-label': 'Roll ' + k.name, 'data-action': 'roll', disabled: !canRoll, onclick: () => rollKey(k) }, 'Roll'),
      el('button', { type: 'button', 'aria-label': 'Revoke ' + k.name, 'data-action': 'revoke', disabled: !canManage || !k.is_active, onclick: () => revokeKey(k) }, 'Revoke'));
    return el('tr', { 'data-id': k.id, class: mine ? 'current' : (k.is_active ? '' : 'inactive') },
      el('th', { scope: 'row' }, k.name, mine ? el('span', { class: 'badge' }, 'this session') : null),
      el('td', {}, el('code', {}, k.key_prefix)),
      el('td', {}, k.environment),
      el('td', {}, k.scopes.join(', ')),
      el('td', {}, when(k.created_at)),
      el('td', {}, when(k.last_used_at)),
      el('td', {}, k.expires_at ? when(k.expires_at) : 'never'),
      el('td', {}, k.allowed_ips && k.allowed_ips.length ? k.allowed_ips.join(', ') : 'anywhere'),
      el('td', {}, k.is_active ? 'yes' : 'no'),
      actions);
  });
  keepingFocus(() => $('keys-table').querySelector('tbody').replaceChildren(...rows));
}

function addresses(text) {
  return text.split(/[\s,]+/).map((s) => s.trim()).filter((s) => s.length > 0);
}

async function createKey(event) {
  event.preventDefault();
  await attempt(async () => {
    const body = { environment: $('create-environment').value, scopes: [] };
    const name = $('create-name').value.trim();
    if (name) body.name = name;
    if ($('create-read').checked) body.scopes.push('read');
    if ($('create-write').checked) body.scopes.push('write');
    const days = $('create-expires').value.trim();
    if (days) body.expires_in_days = Number(days);
    const ips = addresses($('create-ips').value);
    if (ips.length) body.allowed_ips = ips;
    const created = await api('POST', '/v1/account/api-keys', body);
    $('create-form').reset();
    applyRights();
    await refreshKeys();
    showOnce('New key “' + created.name + '”', created.key, null, 'key');
    notice('Key “' + created.name + '” created.');
  });
}

/** The one dialog every key action uses: a question, maybe one field, a confirming button. */
function ask({ title, text, label, value, confirm, danger, run }) {
  const dialog = $('key-dialog');
  $('dialog-title').textContent = title;
  $('dialog-text').textContent = text || '';
  $('dialog-field').hidden = !label;
  $('dialog-label').textContent = label || '';
  $('dialog-input').value = value || '';
  $('dialog-confirm').textContent = confirm;
  $('dialog-confirm').className = danger ? 'danger' : '';
  $('dialog-alert').hidden = true;
  state.dialogRun = run;
  state.dialogFrom = opener();
  dialog.showModal();
  if (label) { $('dialog-input').focus(); $('dialog-input').select(); } else $('dialog-confirm').focus();
}

async function dialogSubmit(event) {
  event.preventDefault();
  const run = state.dialogRun;
  if (!run) return;
  const button = $('dialog-confirm');
  button.disabled = true;
  try {
    await run($('dialog-input').value);
    if ($('key-dialog').open) $('key-dialog').close();
  } catch (e) {
    if (e.signedOut) return;
    $('dialog-alert').textContent = e.message;
    $('dialog-alert').hidden = false;
  } finally {
    button.disabled = false;
  }
}

function renameKey(k) {
  ask({ title: 'Rename “' + k.name + '”', label: 'New name', value: k.name, confirm: 'Save name',
    run: async (value) => {
      const changed = await api('PATCH', '/v1/account/api-keys/' + encodeURIComponent(k.id), { name: value.trim() });
      await refreshKeys();
      notice('Key renamed to “' + changed.name + '”.');
    } });
}

function editAllowlist(k) {
  ask({ title: 'Allowlist of “' + k.name + '”', text: 'Addresses or CIDR blocks, separated by commas; empty: anywhere.',
    label: 'Allowed addresses', value: (k.allowed_ips || []).join(', '), confirm: 'Save allowlist',
    run: async (value) => {
      const ips = addresses(value);
      await api('PATCH', '/v1/account/api-keys/' + encodeURIComponent(k.id), { allowed_ips: ips.length ? ips : null });
      await refreshKeys();
      notice('Allowlist of “' + k.name + '” saved.');
    } });
}

function rollKey(k) {
  const mine = state.me && state.me.id === k.id;
  ask({ title: 'Roll “' + k.name + '”', text: 'A new key replaces this one, which keeps working for the grace period.' + (mine ? ' This is the key this page is signed in with.' : ''),
    label: 'Grace period in hours (0–168)', value: '24', confirm: 'Roll key',
    run: async (value) => {
      const hours = value.trim() === '' ? 24 : Number(value);
      const rolled = await api('POST', '/v1/account/api-keys/' + encodeURIComponent(k.id) + '/roll', { expires_in_hours: hours });
      await refreshKeys();
      showOnce('New key for “' + rolled.name + '”', rolled.key, mine ? 'Continue with the new key' : null, 'key');
      notice('Key “' + k.name + '” rolled.');
    } });
}

function revokeKey(k) {
  const mine = state.me && state.me.id === k.id;
  ask({ title: 'Revoke “' + k.name + '”', text: 'Requests with this key are refused from now on. This cannot be undone.' + (mine ? ' It is the key this page is signed in with: you will be signed out.' : ''),
    confirm: 'Revoke key', danger: true,
    run: async () => {
      await api('DELETE', '/v1/account/api-keys/' + encodeURIComponent(k.id));
      if (mine) { signOut('the key this page was signed in with is revoked.'); return; }
      await refreshKeys();
      notice('Key “' + k.name + '” revoked.');
    } });
}

// ---- Usage ----

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

function chart(daily) {
  const width = 720, height = 220, left = 40, bottom = 24, top = 10;
  const max = Math.max(1, ...daily.map((d) => d.valid + d.refused));
  const step = (width - left) / daily.length;
  const bar = Math.max(1, step * 0.75);
  const y = (n) => (height - bottom) - (n / max) * (height - bottom - top);
  const total = daily.reduce((s, d) => s + d.valid + d.refused, 0);
  const root = svg('svg', { viewBox: '0 0 ' + width + ' ' + height, role: 'img', 'aria-label': 'Daily valid and refused uses, ' + daily[0].date + ' to ' + daily[daily.length - 1].date + ': ' + total + ' in all' });
  root.append(svg('line', { class: 'axis', x1: left, y1: height - bottom, x2: width, y2: height - bottom }));
  root.append(svg('text', { x: left - 4, y: top + 8, 'text-anchor': 'end' }, String(max)));
  root.append(svg('text', { x: left - 4, y: height - bottom, 'text-anchor': 'end' }, '0'));
  daily.forEach((d, i) => {
    const x = left + i * step + (step - bar) / 2;
    const group = svg('g', {}, svg('title', {}, d.date + ': ' + d.valid + ' valid, ' + d.refused + ' refused'));
    group.append(svg('rect', { class: 'bar-valid', x, y: y(d.valid), width: bar, height: (height - bottom) - y(d.valid) }));
    group.append(svg('rect', { class: 'bar-refused', x, y: y(d.valid + d.refused), width: bar, height: y(d.valid) - y(d.valid + d.refused) }));
    root.append(group);
  });
  const labels = [0, daily.length - 1];
  for (const i of labels) {
    root.append(svg('text', { x: left + i * step + step / 2, y: height - 8, 'text-anchor': i === 0 ? 'start' : 'end' }, daily[i].date));
  }
  return root;
}

async function loadUsage() {
  await attempt(async () => {
    // Only the latest answer is drawn, whatever order the answers come back in.
    const asked = state.usageAsked = (state.usageAsked || 0) + 1;
    const usage = await api('GET', '/v1/account/usage?days=' + encodeURIComponent($('usage-days').value));
    if (asked !== state.usageAsked) return;
    const m = usage.month_to_date;
    const meter = $('month-meter');
    meter.max = Math.max(1, m.included);
    meter.value = Math.min(m.valid, Math.max(1, m.included));
    meter.high = Math.max(1, m.included) * 0.9;
    $('month-text').textContent = m.valid.toLocaleString('en') + ' of ' + m.included.toLocaleString('en') + ' included requests since ' + m.period_start +
      (m.blocked ? ' — blocked: verifications answer quota_exceeded' : m.valid > m.included ? ' — over the limit (' + m.over_limit + ')' : '');
    const facts = [['Valid', usage.total.valid], ['Refused', usage.total.refused], ['Account API', usage.total.account_api], ['From', usage.from], ['To', usage.to]];
    $('usage-totals').replaceChildren(...facts.map(([k, v]) => el('div', {}, el('dt', {}, k), el('dd', {}, String(v)))));
    $('usage-chart').replaceChildren(chart(usage.daily));
    const reasons = {};
    for (const k of usage.keys) for (const [reason, n] of Object.entries(k.refused_by_reason)) reasons[reason] = (reasons[reason] || 0) + n;
    const rows = Object.entries(reasons).sort((a, b) => b[1] - a[1]).map(([reason, n]) => el('tr', {}, el('td', {}, reason), el('td', {}, String(n))));
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 2 }, 'No refusals in the period.')));
    $('refusals-table').querySelector('tbody').replaceChildren(...rows);
  });
}

// ---- Audit log ----

async function loadAudit(before) {
  await attempt(async () => {
    const query = '?limit=' + AUDIT_PAGE + (before ? '&before=' + encodeURIComponent(before) : '');
    const page = await api('GET', '/v1/account/audit-log' + query);
    const rows = page.events.map((e) => el('tr', {},
      el('td', {}, e.id), el('td', {}, when(e.created_at)), el('td', {}, e.action), el('td', {}, el('code', {}, e.target_id)),
      el('td', {}, e.actor_key_id ? el('code', {}, e.actor_key_id) : '—'), el('td', {}, e.client_ip || '—'),
      el('td', {}, Object.keys(e.details || {}).length ? JSON.stringify(e.details) : '')));
    if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 7 }, 'No events.')));
    $('audit-table').querySelector('tbody').replaceChildren(...rows);
    state.auditNext = page.has_more && page.events.length ? page.events[page.events.length - 1].id : null;
    $('audit-older').disabled = !state.auditNext;
    $('audit-newest').disabled = !before;
  });
}

// ---- Webhooks ----

const hookPath = (h) => '/v1/account/webhooks/' + encodeURIComponent(h.id);

/** Lists the endpoints; a deployment without webhooks, or a key that may not see them, gets the API's message in the section. */
async function loadWebhooks() {
  const status = $('webhooks-status');
  let hooks;
  try {
    hooks = await api('GET', '/v1/account/webhooks');
  } catch (e) {
    if (e.signedOut || !['webhooks_not_configured', 'environment_escalation', 'insufficient_scope'].includes(e.code)) throw e;
    state.hooks = [];
    renderWebhooks();
    status.textContent = e.message;
    status.hidden = false;
    // Nothing to manage on a deployment without webhooks; a key that may not is shown what it may not do.
    $('webhooks-body').hidden = e.code === 'webhooks_not_configured';
    $('deliveries').hidden = true;
    return;
  }
  status.textContent = '';
  status.hidden = true;
  $('webhooks-body').hidden = false;
  state.hooks = hooks;
  renderWebhooks();
  const shown = state.deliveries && hooks.find((h) => h.id === state.deliveries.hook.id);
  if (state.deliveries && !shown) { state.deliveries = null; $('deliveries').hidden = true; }
  if (shown) state.deliveries.hook = shown;
}

function renderWebhooks() {
  const can = hookRights();
  const rows = state.hooks.map((h) => el('tr', { 'data-id': h.id, class: h.enabled ? '' : 'inactive' },
    el('th', { scope: 'row' }, el('code', {}, h.url)),
    el('td', {}, h.events.join(', ')),
    el('td', {}, h.description || '—'),
    el('td', {}, h.enabled ? 'yes' : h.disabled_reason ? 'no: ' + h.disabled_reason : 'no'),
    el('td', {}, when(h.created_at)),
    el('td', {},
      el('button', { type: 'button', 'aria-label': (h.enabled ? 'Disable ' : 'Enable ') + h.url, 'data-action': 'toggle', disabled: !can.write, onclick: () => toggleWebhook(h) }, h.enabled ? 'Disable' : 'Enable'),
      el('button', { type: 'button', 'aria-label': 'Send a test event to ' + h.url, 'data-action': 'test', disabled: !can.write, onclick: () => testWebhook(h) }, 'Send test'),
      el('button', { type: 'button', 'aria-label': 'Deliveries to ' + h.url, 'data-action': 'deliveries', disabled: !can.read, onclick: () => showDeliveries(h) }, 'Deliveries'),
      el('button', { type: 'button', 'aria-label': 'Rotate the secret of ' + h.url, 'data-action': 'rotate', disabled: !can.write, onclick: () => rotateWebhook(h) }, 'Rotate'),
      el('button', { type: 'button', 'aria-label': 'Delete ' + h.url, 'data-action': 'delete', disabled: !can.write, onclick: () => deleteWebhook(h) }, 'Delete'))));
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 6 }, 'No endpoints yet.')));
  keepingFocus(() => $('webhooks-table').querySelector('tbody').replaceChildren(...rows));
}

async function addWebhook(event) {
  event.preventDefault();
  await attempt(async () => {
    const body = { url: $('webhook-url').value.trim(), events: [...$('webhook-events').querySelectorAll('input:checked')].map((i) => i.value) };
    const description = $('webhook-description').value.trim();
    if (description) body.description = description;
    const created = await api('POST', '/v1/account/webhooks', body);
    $('webhook-form').reset();
    await loadWebhooks();
    showOnce('Signing secret of ' + created.url, created.secret, null, 'secret');
    notice('Endpoint ' + created.url + ' added.');
  });
}

function toggleWebhook(h) {
  attempt(async () => {
    const changed = await api('PATCH', hookPath(h), { enabled: !h.enabled });
    await loadWebhooks();
    notice('Endpoint ' + changed.url + (changed.enabled ? ' enabled.' : ' disabled.'));
  });
}

function testWebhook(h) {
  attempt(async () => {
    const sent = await api('POST', hookPath(h) + '/test');
    notice('Test event ' + sent.event_id + ' sent to ' + h.url + '.');
    await showDeliveries(h, sent.event_id);
  });
}

function rotateWebhook(h) {
  ask({ title: 'Rotate the secret of ' + h.url, text: 'A new signing secret replaces this one; the previous one keeps signing beside it for 24 hours.',
    confirm: 'Rotate secret',
    run: async () => {
      const rotated = await api('POST', hookPath(h) + '/rotate-secret');
      await loadWebhooks();
      showOnce('New signing secret of ' + rotated.url, rotated.secret, null, 'secret');
      notice('Secret of ' + rotated.url + ' rotated.');
    } });
}

function deleteWebhook(h) {
  ask({ title: 'Delete ' + h.url, text: 'The endpoint, its secret and its deliveries are deleted. This cannot be undone.',
    confirm: 'Delete endpoint', danger: true,
    run: async () => {
      await api('DELETE', hookPath(h));
      await loadWebhooks();
      notice('Endpoint ' + h.url + ' deleted.');
    } });
}

/** Shows an endpoint's deliveries; after a test, asks again for a while until its event is listed. */
async function showDeliveries(h, waitFor) {
  state.deliveries = { hook: h, before: null, next: null };
  $('deliveries-title').textContent = 'Deliveries to ' + h.url;
  $('deliveries').hidden = false;
  $('deliveries').scrollIntoView({ block: 'nearest' });
  const watched = state.deliveries;
  let page = await loadDeliveries(null);
  for (let tries = 0; waitFor && tries < 30 && !page.attempts.some((a) => a.event_id === waitFor); tries++) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    if (state.deliveries !== watched || watched.before) return;
    page = await loadDeliveries(null);
  }
}

async function loadDeliveries(before) {
  const shown = state.deliveries;
  if (!shown) return { attempts: [], has_more: false };
  const query = '?limit=' + DELIVERIES_PAGE + (before ? '&before=' + encodeURIComponent(before) : '');
  const page = await api('GET', hookPath(shown.hook) + '/deliveries' + query);
  if (state.deliveries !== shown) return page;
  const rows = page.attempts.map((a) => el('tr', {},
    el('td', {}, el('code', {}, a.event_id)), el('td', {}, a.event_type), el('td', {}, String(a.attempt)),
    el('td', {}, when(a.attempted_at)), el('td', {}, a.status_code !== null && a.status_code !== undefined ? String(a.status_code) : a.error || '—'),
    el('td', {}, a.duration_ms + ' ms')));
  if (rows.length === 0) rows.push(el('tr', {}, el('td', { colspan: 6 }, 'No deliveries yet.')));
  keepingFocus(() => $('deliveries-table').querySelector('tbody').replaceChildren(...rows));
  shown.before = before || null;
  shown.next = page.has_more && page.attempts.length ? page.attempts[page.attempts.length - 1].id : null;
  $('deliveries-older').disabled = !shown.next;
  $('deliveries-newest').disabled = !before;
  return page;
}

// ---- Panels ----

function showPanel(id) {
  for (const button of document.querySelectorAll('.tabs button')) {
    if (button.dataset.panel === id) button.setAttribute('aria-current', 'page'); else button.removeAttribute('aria-current');
  }
  for (const panel of document.querySelectorAll('.panel')) panel.hidden = panel.id !== id;
  notice('');
  if (!state.key) return;
  if (id === 'keys-panel') attempt(refreshKeys);
  if (id === 'usage-panel') loadUsage();
  if (id === 'audit-panel') loadAudit(null);
  if (id === 'webhooks-panel') attempt(loadWebhooks);
  if (id === 'account-panel') attempt(async () => { state.account = await api('GET', '/v1/account'); renderAccount(); });
}

// ---- Wiring ----

function start() {
  $('signup-form').addEventListener('submit', (event) => {
    event.preventDefault();
    attempt(async () => {
      const body = { name: $('signup-name').value, email: $('signup-email').value, plan_id: $('signup-plan').value };
      const created = await api('POST', '/v1/signup', body, null);
      $('signup-form').reset();
      showOnce('The first key of ' + created.account.name, created.api_key.key, 'Continue to the console', 'key');
      notice('Organization ' + created.account.name + ' created.');
    });
  });
  $('signin-form').addEventListener('submit', (event) => {
    event.preventDefault();
    attempt(() => signIn($('signin-key').value.trim()));
  });
  $('sign-out').addEventListener('click', () => signOut(null));
  $('once-copy').addEventListener('click', async () => {
    const what = state.onceWhat || 'key';
    try { await navigator.clipboard.writeText($('once-key').value); notice(what === 'secret' ? 'Secret copied.' : 'Key copied.'); } catch (e) {
      $('once-key').select();
      notice('Select the ' + what + ' and copy it (the browser refused to copy).');
    }
  });
  $('once-continue').addEventListener('click', () => {
    const key = state.once;
    hideOnce(false);
    attempt(async () => { await signIn(key); restoreFocus(null); });
  });
  $('once-done').addEventListener('click', () => hideOnce(true));
  $('account-form').addEventListener('submit', saveAccount);
  $('close-form').addEventListener('submit', closeAccount);
  $('close-confirm').addEventListener('input', applyRights);
  $('create-form').addEventListener('submit', createKey);
  $('dialog-form').addEventListener('submit', dialogSubmit);
  $('dialog-cancel').addEventListener('click', () => $('key-dialog').close());
  $('key-dialog').addEventListener('close', () => {
    state.dialogRun = null;
    $('dialog-input').value = '';
    // A value shown once after the dialog takes the focus; else what opened the dialog does.
    if (!$('shown-once').hidden) { $('once-key').focus(); $('once-key').select(); } else restoreFocus(state.dialogFrom);
  });
  $('webhook-form').addEventListener('submit', addWebhook);
  $('deliveries-refresh').addEventListener('click', () => attempt(() => loadDeliveries(state.deliveries && state.deliveries.before)));
  $('deliveries-older').addEventListener('click', () => attempt(() => loadDeliveries(state.deliveries && state.deliveries.next)));
  $('deliveries-newest').addEventListener('click', () => attempt(() => loadDeliveries(null)));
  $('usage-days').addEventListener('change', loadUsage);
  $('audit-older').addEventListener('click', () => {
    if (!state.auditNext) return;
    state.auditBefore.push(state.auditNext);
    loadAudit(state.auditNext);
  });
  $('audit-newest').addEventListener('click', () => { state.auditBefore = []; loadAudit(null); });
  for (const button of document.querySelectorAll('.tabs button')) button.addEventListener('click', () => showPanel(button.dataset.panel));
  loadPlans();
  const kept = sessionStorage.getItem(STORAGE);
  if (kept) attempt(() => signIn(kept, true).catch((e) => { sessionStorage.removeItem(STORAGE); throw e; }));
}

start();
