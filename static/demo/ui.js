// Helpers shared by the demo pages (not part of the client library).
// Everything here builds the page with textContent and DOM nodes: no data ever
// goes through innerHTML, so a name like `<img src=x onerror=...>` shows as text.

import { SsehubError } from '/ssehub.js';

export const $ = (id) => document.getElementById(id);

/** el('div', 'class names', child, ...) where a child is a Node or text (null skipped). */
export function el(tag, className, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const params = new URLSearchParams(location.search);

/** The demo channel of this page: `?channel=` (must start with `demo-`), else `fallback`. */
export function pageChannel(fallback) {
  const asked = params.get('channel');
  return asked && /^demo-[A-Za-z0-9_.:-]{1,100}$/.test(asked) ? asked : fallback;
}

/** `?timeout=SECONDS`: a short stream timeout, to watch streams being recycled. */
export function pageTimeout() {
  const t = Number(params.get('timeout'));
  return Number.isInteger(t) && t > 0 ? t : undefined;
}

/** Local wall-clock time of an RFC 3339 timestamp. */
export function clock(iso) {
  const date = iso ? new Date(iso) : new Date();
  return Number.isNaN(date.getTime()) ? '' : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** A stable hue per name, for avatars. */
export function hue(text) {
  let h = 0;
  for (const ch of String(text)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

/** A round avatar with the first letter of `name`. */
export function avatar(name) {
  const letter = (Array.from(String(name || '?').trim())[0] || '?').toUpperCase();
  const node = el('span', 'avatar', letter);
  node.style.background = `hsl(${hue(name)} 55% 46%)`;
  node.setAttribute('aria-hidden', 'true');
  return node;
}

// ---------------------------------------------------------------------------------------------
// sessionStorage: the demo login and the rendered transcript survive a reload of this tab
// ---------------------------------------------------------------------------------------------

function readJson(key) {
  try {
    const text = sessionStorage.getItem(key);
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

function writeJson(key, value) {
  try {
    if (value === null) sessionStorage.removeItem(key);
    else sessionStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage disabled or full */
  }
}

export const loadSession = (channel) => readJson('ssehub-demo:session:' + channel);
export const saveSession = (channel, session) => writeJson('ssehub-demo:session:' + channel, session);

/** Items already shown (kept so that a reload shows the same page before resuming). */
export class Transcript {
  constructor(key, limit = 200) {
    this.key = 'ssehub-demo:transcript:' + key;
    this.limit = limit;
    this.items = readJson(this.key) || [];
  }

  has(id) {
    return this.items.some((item) => item.id === id);
  }

  add(item) {
    this.items.push(item);
    if (this.items.length > this.limit) this.items.splice(0, this.items.length - this.limit);
    writeJson(this.key, this.items);
  }

  clear() {
    this.items = [];
    writeJson(this.key, null);
  }
}

// ---------------------------------------------------------------------------------------------
// The demo backend (src/demo.rs): what your own backend would do after its login
// ---------------------------------------------------------------------------------------------

async function post(path, body) {
  let response;
  try {
    response = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (error) {
    throw new SsehubError(0, 'network_error', error.message || String(error));
  }
  const json = await response.json().catch(() => null);
  if (response.ok) return json;
  if (response.status === 404 && path.startsWith('/demo/') && (!json || json.error?.code === 'not_found')) {
    throw new SsehubError(
      404,
      'demo_disabled',
      'The demo routes are off: this server has a publisher key. Restart it with --demo (or SSEHUB_DEMO=1) to try the demos.',
    );
  }
  const error = json && json.error;
  throw new SsehubError(response.status, error?.code || 'http_error', error?.message || response.statusText, error?.details || []);
}

/** Registers a client named `name` on `channel`: `{public_token, private_token, display_name}`. */
export const demoLogin = (channel, name) => post('/demo/login', { channel, name });

/** Removes the client (its streams end, presence says it left). */
export const demoLogout = (channel, session) =>
  post('/demo/logout', { channel, private_token: session.private_token }).catch(() => {});

/** Posts a guestbook comment through the demo backend. */
export const demoComment = (channel, name, text) => post('/demo/feed', { channel, name, text });

/** A readable sentence for an error thrown by the library or the demo backend. */
export function describe(error) {
  if (error instanceof SsehubError) {
    if (error.code === 'client_exists') return 'That name is in use right now. Pick another one, or wait until it times out.';
    if (error.code === 'network_error') return 'The server cannot be reached. Is it running?';
    const detail = error.details && error.details.length ? ' (' + error.details.map((d) => d.message).join('; ') + ')' : '';
    return error.message + detail + ' [' + error.code + ']';
  }
  return String(error && error.message ? error.message : error);
}

// ---------------------------------------------------------------------------------------------
// Page chrome
// ---------------------------------------------------------------------------------------------

const STATE_TEXT = {
  idle: 'not connected',
  connecting: 'connecting…',
  open: 'live',
  reconnecting: 'reconnecting…',
  failed: 'stopped',
  closed: 'closed',
};

/** Shows a subscription state in the `#conn` badge. */
export function showState(state, detail) {
  const badge = $('conn');
  if (!badge) return;
  badge.dataset.state = state;
  badge.querySelector('.conn-text').textContent = detail || STATE_TEXT[state] || state;
}

/** Shows (or hides, with null) a message in a `.notice` element. */
export function notice(id, text, kind = 'err') {
  const node = $(id);
  if (!node) return;
  node.textContent = text || '';
  node.className = 'notice ' + kind;
  node.hidden = !text;
}

/** Keeps a scrolled list pinned to the bottom while the reader is at the bottom. */
export function stickToBottom(container, append) {
  const atBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 40;
  append();
  if (atBottom) container.scrollTop = container.scrollHeight;
}

/**
 * Wires a demo page's login form (#login-form, #name, #join, #login-error) and
 * its #leave button to the demo backend. `onLogin(session)` runs after a
 * successful login (the session is already saved for this tab); `onLeave()`
 * resets the page, then the backend is told (`getSession()` is the session
 * being left).
 */
export function wireLogin(channel, { getSession, onLogin, onLeave }) {
  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = $('name').value.trim();
    if (!name) return;
    $('join').disabled = true;
    notice('login-error', null);
    try {
      const session = await demoLogin(channel, name);
      saveSession(channel, session);
      onLogin(session);
    } catch (error) {
      notice('login-error', describe(error));
    } finally {
      $('join').disabled = false;
    }
  });
  $('leave').addEventListener('click', () => {
    const old = getSession();
    onLeave();
    if (old) demoLogout(channel, old);
  });
}
