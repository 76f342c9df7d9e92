// ssehub.js: the browser client of ssehub. An ES module with no dependencies and
// no build step: `import { subscribe, send } from '/ssehub.js'`.
// Documented in static/README.md; the wire contract is protocol/README.md.
//
//   subscribe(channelOrUrl, options) -> Subscription   (wraps EventSource)
//   send(channel, name, contents, options) -> Promise<id>  (POST, throws SsehubError)
//   listClients(channel, options) -> Promise<client[]>     (presence list)
//
// The subscription mirrors the success / timeout / failure handlers of the
// Comet client ssehub descends from, and adds what a long-lived page needs:
// resume across reloads (last id per channel in sessionStorage), no reconnect
// loop after a failure frame, silent reconnection after a timeout frame, and
// exponential backoff with jitter while the server is unreachable.

const CHANNEL_RE = /^[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,127}$/;
const ID_RE = /^([0-9a-f]{8})-([1-9][0-9]{0,19})$/;
const STORAGE_PREFIX = 'ssehub:lastEventId:';

/** Failure codes worth retrying later (with backoff); every other code is final. */
export const TRANSIENT_FAILURES = Object.freeze(['store_unavailable', 'too_many_subscribers']);

/** An error answer of the API (`error.schema.json`), or a request that got no answer. */
export class SsehubError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the request got no answer at all
   * @param {string} code the contract's error code (`schema_violation`, ...),
   *   `network_error` when there was no answer, `http_error` for a non-JSON answer
   * @param {string} message human-readable text
   * @param {Array<{pointer: string, message: string}>} details
   */
  constructor(status, code, message, details = []) {
    super(message);
    this.name = 'SsehubError';
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The path of a channel, relative to `base` (default: this page's origin). */
export function channelUrl(channel, base = '') {
  // Valid names need no escaping; anything else is encoded so the server can
  // answer `invalid_channel` for it instead of the browser mangling the path.
  const segment = CHANNEL_RE.test(channel) ? channel : encodeURIComponent(channel);
  return base.replace(/\/+$/, '') + '/channels/' + segment;
}

// ---------------------------------------------------------------------------------------------
// Remembered positions (sessionStorage: per tab, survives reloads, gone with the tab)
// ---------------------------------------------------------------------------------------------

function storageOf(option) {
  if (option === false || option === null) return null;
  if (option) return option;
  try {
    return globalThis.sessionStorage || null;
  } catch {
    return null; // storage disabled (privacy mode, sandboxed frame)
  }
}

/** The last id a subscription stored under `key` (a channel name by default), or null. */
export function storedLastEventId(key, storage) {
  const store = storageOf(storage);
  try {
    return store ? store.getItem(STORAGE_PREFIX + key) : null;
  } catch {
    return null;
  }
}

/** Forgets the stored position for `key`: the next subscription starts live. */
export function forgetLastEventId(key, storage) {
  const store = storageOf(storage);
  try {
    if (store) store.removeItem(STORAGE_PREFIX + key);
  } catch {
    /* storage disabled */
  }
}

function storeLastEventId(store, key, id) {
  try {
    if (store) store.setItem(STORAGE_PREFIX + key, id);
  } catch {
    /* storage full or disabled: resume across reloads is lost, nothing else */
  }
}

/** True when `id` is the same epoch as `last` and not newer (an already seen message). */
function alreadySeen(last, id) {
  const a = ID_RE.exec(last || '');
  const b = ID_RE.exec(id || '');
  if (!a || !b || a[1] !== b[1]) return false; // other epoch: ids do not compare
  // seq can exceed Number's exact range: compare by length, then as strings.
  const [x, y] = [b[2], a[2]];
  return x.length < y.length || (x.length === y.length && x <= y);
}

// ---------------------------------------------------------------------------------------------
// subscribe
// ---------------------------------------------------------------------------------------------

/**
 * Opens a subscription.
 *
 * @param {string} target a channel name (`"chat"`) or the URL of an events endpoint
 *   (`"/channels/chat/events"`, `"https://hub.example/channels/chat/events"`)
 * @param {object} [options]
 * @param {string} [options.token] a registered client's private token (`?token=`)
 * @param {string} [options.lastEventId] resume after this id (default: the id stored for
 *   this channel by an earlier page of this tab; `""` starts live)
 * @param {number} [options.timeout] seconds before the server recycles an idle stream
 * @param {string} [options.base] the server's origin when it is not this page's
 * @param {boolean} [options.withCredentials] send cookies cross-origin (CORS must allow it)
 * @param {string} [options.storageKey] key of the stored position (default: the channel)
 * @param {Storage|false} [options.storage] where positions are kept (default sessionStorage)
 * @param {{initial?: number, max?: number, min?: number}} [options.backoff] reconnect
 *   delays in ms (defaults 3000, 60000, 250)
 * @param {function(object, Subscription)} [options.onMessage] each message envelope
 * @param {function(object, Subscription)} [options.onTimeout] a timeout frame's data; the
 *   library reconnects and resumes by itself
 * @param {function(object, Subscription)} [options.onFailure] a failure frame's data
 *   `{code, message, retrying}`; the stream is closed unless `retrying`
 * @param {function(object, Subscription)} [options.onGap] a gap frame's data
 * @param {function(Subscription)} [options.onOpen] each time a stream opens
 * @param {function(string, Subscription)} [options.onState] `connecting`, `open`,
 *   `reconnecting`, `failed` or `closed`
 * @returns {Subscription}
 */
export function subscribe(target, options = {}) {
  return new Subscription(target, options);
}

/** An open subscription: see [`subscribe`](#subscribe). */
export class Subscription {
  constructor(target, options) {
    this.options = options;
    const isUrl = target.includes('/');
    const match = isUrl ? /\/channels\/([^/?#]+)\/events/.exec(target) : null;
    /** The channel name (null when the URL names none). */
    this.channel = isUrl ? (match ? decodeURIComponent(match[1]) : null) : target;
    this.baseUrl = isUrl ? target : channelUrl(target, options.base || '') + '/events';
    this.storage = storageOf(options.storage);
    this.storageKey = options.storageKey || this.channel || this.baseUrl;
    this.backoff = { initial: 3000, max: 60000, min: 250, ...(options.backoff || {}) };
    /** The id of the last message delivered to onMessage (or the starting position). */
    this.lastEventId =
      options.lastEventId !== undefined ? options.lastEventId || null : storedLastEventId(this.storageKey, this.storage);
    /** Counters, handy for status displays and tests. */
    this.stats = { opens: 0, messages: 0, duplicates: 0, timeouts: 0, failures: 0, gaps: 0, reconnects: 0 };
    this.state = 'idle';
    this.source = null; // the current EventSource
    this.closed = false;
    this.attempt = 0; // reconnect attempts since the last healthy stream
    this.timer = null;
    this.openedAt = 0;
    this.sawTimeout = false;
    this.afterGap = false;
    this.onOnline = () => {
      // Back from a network drop (laptop lid, Wi-Fi): do not wait out the backoff.
      if (this.timer !== null) this.reconnect();
    };
    if (typeof addEventListener === 'function') addEventListener('online', this.onOnline);
    this.open();
  }

  /** The URL the next stream opens: token, timeout and the resume position in the query. */
  url() {
    const url = new URL(this.baseUrl, globalThis.location ? location.href : undefined);
    const { token, timeout } = this.options;
    if (token) url.searchParams.set('token', token);
    if (timeout) url.searchParams.set('timeout', String(timeout));
    // A first connection resumes from here; EventSource's own reconnections add
    // Last-Event-ID, which the server prefers to this parameter.
    if (this.lastEventId) url.searchParams.set('lastEventId', this.lastEventId);
    return url.toString();
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.call('onState', state);
  }

  call(handler, ...args) {
    const fn = this.options[handler];
    if (typeof fn !== 'function') return;
    try {
      fn(...args, this);
    } catch (error) {
      // A throwing handler must not break the stream; report it like an uncaught error.
      setTimeout(() => {
        throw error;
      });
    }
  }

  open() {
    this.timer = null;
    if (this.closed) return;
    this.sawTimeout = false;
    this.setState(this.stats.opens === 0 && this.attempt === 0 ? 'connecting' : 'reconnecting');
    const es = new EventSource(this.url(), { withCredentials: !!this.options.withCredentials });
    this.source = es;
    const mine = (fn) => (event) => {
      if (this.source === es && !this.closed) fn(event);
    };

    es.addEventListener(
      'open',
      mine(() => {
        this.openedAt = Date.now();
        this.stats.opens += 1;
        this.setState('open');
        this.call('onOpen');
      }),
    );

    es.addEventListener(
      'message',
      mine((event) => {
        let envelope;
        try {
          envelope = JSON.parse(event.data);
        } catch {
          return; // not ssehub's envelope: ignore rather than break the page
        }
        const id = envelope.id || event.lastEventId;
        this.attempt = 0; // a message proves the stream healthy
        if (!this.afterGap && alreadySeen(this.lastEventId, id)) {
          this.stats.duplicates += 1; // never hand the page the same message twice
          return;
        }
        this.afterGap = false;
        this.lastEventId = id;
        storeLastEventId(this.storage, this.storageKey, id);
        this.stats.messages += 1;
        this.call('onMessage', envelope);
      }),
    );

    es.addEventListener(
      'timeout',
      mine((event) => {
        // A normal end: EventSource reconnects after `retry` ms with Last-Event-ID.
        this.sawTimeout = true;
        this.stats.timeouts += 1;
        this.call('onTimeout', parse(event.data));
      }),
    );

    es.addEventListener(
      'gap',
      mine((event) => {
        // The server goes on from what it still has (`resume_from`), which may sort
        // before our last id (`unknown_id`): take the next message whatever its id.
        this.afterGap = true;
        this.stats.gaps += 1;
        this.call('onGap', parse(event.data));
      }),
    );

    es.addEventListener(
      'failure',
      mine((event) => {
        const data = parse(event.data);
        const failure = {
          code: typeof data.code === 'string' ? data.code : 'internal',
          message: typeof data.message === 'string' ? data.message : '',
        };
        // The stream is over: stop EventSource before it reconnects and fails again.
        es.close();
        this.source = null;
        this.stats.failures += 1;
        if (TRANSIENT_FAILURES.includes(failure.code)) {
          this.call('onFailure', { ...failure, retrying: true });
          this.scheduleReconnect();
        } else {
          this.call('onFailure', { ...failure, retrying: false });
          this.stop('failed');
        }
      }),
    );

    es.addEventListener(
      'error',
      mine(() => {
        if (this.sawTimeout && es.readyState === EventSource.CONNECTING) {
          // The end that follows a timeout frame: EventSource is already reconnecting
          // (after the server's `retry:` delay) and resumes with Last-Event-ID.
          this.sawTimeout = false;
          this.setState('reconnecting');
          return;
        }
        // Anything else (server gone, network drop, shutdown, a non-200 answer that
        // leaves the EventSource CLOSED): take over from EventSource, whose fixed
        // delay would bring every browser back at the same moment.
        es.close();
        this.source = null;
        if (this.openedAt && Date.now() - this.openedAt > 10000) this.attempt = 0;
        this.scheduleReconnect();
      }),
    );
  }

  /** Reconnects after an exponential delay with jitter, resuming from the last id. */
  scheduleReconnect() {
    if (this.closed || this.timer !== null) return;
    const { initial, max, min } = this.backoff;
    const cap = Math.min(max, initial * 2 ** Math.min(this.attempt, 20));
    // "Full jitter": anywhere between min and the cap, so browsers cut off together
    // (a server restart) come back spread over the whole window, not all at once.
    const delay = Math.round(min + Math.random() * Math.max(0, cap - min));
    this.attempt += 1;
    this.stats.reconnects += 1;
    this.nextDelay = delay;
    this.setState('reconnecting');
    this.timer = setTimeout(() => this.open(), delay);
  }

  /** Drops the current stream (if any) and opens a new one now, from the last id. */
  reconnect() {
    if (this.closed) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.source) this.source.close();
    this.source = null;
    this.open();
  }

  stop(state) {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (this.source) this.source.close();
    this.source = null;
    if (typeof removeEventListener === 'function') removeEventListener('online', this.onOnline);
    this.setState(state);
  }

  /** Closes the stream for good. The stored position stays for the next page. */
  close() {
    if (!this.closed) this.stop('closed');
  }
}

function parse(data) {
  try {
    const value = JSON.parse(data);
    return value && typeof value === 'object' ? value : {};
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------------------------
// send and presence
// ---------------------------------------------------------------------------------------------

async function request(method, url, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new SsehubError(0, 'network_error', error && error.message ? error.message : String(error));
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  if (response.ok) return json;
  const error = json && json.error;
  if (error && typeof error.code === 'string') {
    throw new SsehubError(response.status, error.code, error.message || '', Array.isArray(error.details) ? error.details : []);
  }
  throw new SsehubError(response.status, 'http_error', text || response.statusText);
}

/**
 * Sends a message. Resolves to its id; rejects with an SsehubError.
 *
 * @param {string} channel
 * @param {string} name the message name, e.g. `chat.message` (`client.*` is reserved)
 * @param {*} contents any JSON value
 * @param {object} [options]
 * @param {string} [options.token] a publisher key, or a client's private token (the
 *   server then sets `from` on the envelope)
 * @param {string} [options.to] the public token of the only client to deliver to
 * @param {string} [options.base] the server's origin when it is not this page's
 * @returns {Promise<string>}
 */
export async function send(channel, name, contents, { token, to, base = '' } = {}) {
  const body = { name, contents: contents === undefined ? null : contents };
  if (to) body.to = to;
  const answer = await request('POST', channelUrl(channel, base) + '/messages', { token, body });
  return answer.id;
}

/**
 * The presence list of a channel: `[{public_token, display_name, connected, ...}]`, every
 * client, ordered by public token. The server answers a page at a time; this follows each
 * page's `next` until the last.
 *
 * @param {string} channel
 * @param {{token?: string, base?: string}} [options]
 * @returns {Promise<object[]>}
 */
export async function listClients(channel, { token, base = '' } = {}) {
  const clients = [];
  let after = null;
  do {
    const page = '/clients?limit=1000' + (after === null ? '' : '&after=' + encodeURIComponent(after));
    const answer = await request('GET', channelUrl(channel, base) + page, { token });
    clients.push(...answer.clients);
    after = answer.next ?? null;
  } while (after !== null);
  return clients;
}
