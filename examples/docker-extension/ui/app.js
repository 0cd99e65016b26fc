// The extension's UI: plain JavaScript, no build step.
//
// Docker Desktop injects `window.ddClient`. Everything this page does goes through it:
//
// - `extension.vm.service.get/post` reach the backend's API on its Unix socket (see
//   backend/src/api.rs). The backend keeps the tokens and calls the API for the page
//   (`POST /api`): no token ever reaches this page, and it stores nothing (no
//   localStorage, no cookies).
// - `extension.host.cli.exec` runs the host binary `latchkey-callback` on the user's
//   machine, for a loopback redirect URI: it listens on a free loopback port, says where
//   (`{"listening": URI}`), and passes on every browser redirect it receives
//   (`{"callback": "?code=…&state=…"}`), which this page forwards to `POST /callback`.
// - `host.openExternal` opens the provider's sign-in page in the user's browser.
//
// With an application redirect URI (Docker Desktop's extension-tab deep link) there is no
// host binary: the provider sends the browser to the deep link, Docker Desktop opens this
// tab with the callback's query in `location.search`, and the page forwards that.
//
// The page shows `GET /status`, polled every second while something is pending (a login,
// the provider being reached) and every five seconds otherwise, not at all while hidden.
'use strict';

const HOST_BINARY = 'latchkey-callback';
const FAST_POLL_MS = 1000;
const SLOW_POLL_MS = 5000;
/** How long the host binary may take to say where it listens. */
const LISTEN_TIMEOUT_MS = 20000;
/** The query parameters of an authorization response (RFC 6749 §4.1.2, RFC 9207). */
const CALLBACK_PARAMS = ['code', 'state', 'error', 'error_description', 'error_uri', 'iss', 'session_state'];

const $ = (id) => document.getElementById(id);
const el = {
  main: document.querySelector('main'),
  provider: $('provider'),
  retry: $('retry'),
  status: $('status'),
  hint: $('hint'),
  details: $('details'),
  expiry: $('expiry'),
  renewal: $('renewal'),
  scope: $('scope'),
  note: $('note'),
  error: $('error'),
  login: $('login'),
  reopen: $('reopen'),
  cancel: $('cancel'),
  call: $('call'),
  logout: $('logout'),
  resultCard: $('result-card'),
  resultSummary: $('result-summary'),
  result: $('result'),
};

const dd = window.ddClient;

/** What the page knows; `render` shows it. */
const app = {
  /** The last `GET /status`, and the serial of the request that fetched it. */
  status: null,
  statusSerial: 0,
  /** Serials of status requests, in the order they were sent. */
  nextSerial: 1,
  /** Why the last `GET /status` failed, in words; null when it worked. */
  backendTrouble: null,
  /**
   * The login this page is following: `{url, helper, since}`; `url` is the sign-in page
   * (unknown for a login forwarded by deep link), `helper` the host binary receiving the
   * browser's redirect (loopback redirects only), `since` the first status serial that
   * knows of it.
   */
  login: null,
  /** A button's work is under way: every button waits. */
  busy: false,
  /** Words shown as an error, and as a quiet note. */
  error: null,
  note: null,
};

// ----- words -----

/** `text` as a sentence: a capital first letter, one final full stop. */
function sentence(text) {
  const trimmed = String(text ?? '').trim().replace(/[.\s]+$/, '');
  if (!trimmed) return '';
  return `${trimmed[0].toUpperCase()}${trimmed.slice(1)}.`;
}

/** `text` without its final full stop, to go inside a sentence. */
function clause(text) {
  return String(text ?? '').trim().replace(/[.\s]+$/, '');
}

/** Seconds as `m:ss`. */
function minutes(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

/** The backend's `{error, message}` inside a ddClient `ServiceError`, if it is one. */
function errorBody(error) {
  if (!error || typeof error.message !== 'string') return null;
  try {
    const body = JSON.parse(error.message);
    if (body && typeof body === 'object' && typeof body.error === 'string') return body;
  } catch {
    // Not the backend's JSON: a proxy's page, or a transport error.
  }
  return null;
}

/** An error that already is words for a person. */
class Trouble extends Error {
  constructor(words, kind = 'trouble') {
    super(words);
    this.kind = kind;
  }
}

/**
 * Any failure as words: the backend's own `message`, else what Docker Desktop said while
 * `doing` (e.g. "reach the extension's backend"). Never a raw object.
 */
function describe(error, doing = "reach the extension's backend") {
  if (error instanceof Trouble) return error.message;
  const body = errorBody(error);
  if (body) return sentence(body.message || body.error);
  if (error && typeof error.statusCode === 'number') {
    const text = typeof error.message === 'string' ? error.message.trim().slice(0, 300) : '';
    return sentence(`The extension's backend answered HTTP ${error.statusCode}${text ? `: ${text}` : ''}`);
  }
  const message =
    typeof error === 'string' ? error : typeof error?.message === 'string' ? error.message : '';
  return sentence(`Docker Desktop could not ${doing}${message ? `: ${clause(message)}` : ''}`);
}

/** Who signed in, from the ID token's claims. */
function who(identity) {
  if (!identity) return null;
  return identity.email || identity.name || identity.preferred_username || identity.sub || null;
}

function toast(kind, message) {
  try {
    dd.desktopUI?.toast?.[kind]?.(message);
  } catch {
    // A toast is a courtesy; the page says the same.
  }
}

// ----- the host binary -----

/**
 * Starts the host binary for `redirect` (`{uri, landing}`) and returns its handle:
 * `listening` resolves with the redirect URI it listens on (or rejects with a `Trouble`
 * saying why it cannot), every `callback` line is forwarded to the backend, and `close()`
 * stops it.
 */
function startHelper(redirect) {
  const helper = { process: null, closed: false, exited: false, failure: null };
  let listened;
  let failed;
  helper.listening = new Promise((resolve, reject) => {
    listened = resolve;
    failed = reject;
  });
  helper.listening.catch(() => {}); // Awaited by the login; this only silences the rest.
  helper.close = () => {
    if (helper.closed) return;
    helper.closed = true;
    try {
      helper.process?.close();
    } catch {
      // Already gone.
    }
  };

  const fail = (trouble) => {
    if (helper.failure) return;
    helper.failure = trouble;
    failed(trouble);
    helperFailed(helper, trouble);
  };
  const handle = (line) => {
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      return; // Not one of its lines.
    }
    if (!message || typeof message !== 'object') return;
    if (typeof message.listening === 'string') listened(message.listening);
    else if (typeof message.callback === 'string') forwardCallback(message.callback, { quiet: true });
    else if (typeof message.error === 'string') fail(helperTrouble(message, redirect));
  };
  // With `splitOutputLines` each call is one line, with or without its line break; without
  // it, chunks split anywhere. Both are read the same way: whole lines, and a last piece
  // once it is a whole JSON object (a part of one never parses).
  let buffer = '';
  const onOutput = (data) => {
    if (typeof data?.stdout !== 'string') return; // stderr is for people, not for us
    buffer += data.stdout;
    const lines = buffer.split('\n');
    buffer = lines.pop();
    for (const line of lines) if (line.trim()) handle(line.trim());
    if (buffer.trim()) {
      try {
        JSON.parse(buffer);
      } catch {
        return;
      }
      const line = buffer.trim();
      buffer = '';
      handle(line);
    }
  };
  const onError = (error) =>
    fail(new Trouble(describe(error, `run ${HOST_BINARY}, which receives your browser's answer`)));
  const onClose = (code) => {
    helper.exited = true;
    if (helper.closed) return;
    fail(
      new Trouble(
        `${HOST_BINARY}, which receives your browser's answer, stopped (exit code ${code}). ` +
          'Press Log in to try again.',
      ),
    );
  };
  try {
    helper.process = dd.extension.host.cli.exec(
      HOST_BINARY,
      ['--redirect-uri', redirect.uri, '--landing', redirect.landing],
      { stream: { onOutput, onError, onClose, splitOutputLines: true } },
    );
  } catch (error) {
    fail(new Trouble(describe(error, `start ${HOST_BINARY}, which receives your browser's answer`)));
  }
  return helper;
}

/**
 * The host binary's `{"error", "message"}` line in words, with what to do: its own message
 * (which says both), or ours should it have none.
 */
function helperTrouble({ error, message }, redirect) {
  let words = sentence(message);
  if (!words) {
    // A fixed port in the settings' redirect URI, if there is one.
    const port = redirect.uri.match(/^http:\/\/(?:\[[^\]]*\]|[^/:]*):(\d+)\//)?.[1];
    const fallback = {
      port_in_use: port
        ? `Port ${port}, which the extension's settings fix in ${redirect.uri}, is in use ` +
          'by another program: close that program, or register a redirect URI without a port.'
        : 'The port for the sign-in is in use by another program: close that program.',
      cannot_listen:
        "Can't listen for your browser's answer on this computer: check that no security " +
        'software blocks local connections.',
      timeout: 'The sign-in took too long.',
    };
    words = fallback[error] ?? `${HOST_BINARY} failed (${error}).`;
  }
  const again = /\bagain\b/i.test(words) ? '' : ' Press Log in to try again.';
  return new Trouble(`${words}${again}`, error);
}

/** The host binary of the login in progress failed: that login cannot finish. */
function helperFailed(helper, trouble) {
  if (app.login?.helper !== helper) return; // Not started yet (the login reports it) or old.
  app.login = null;
  helper.close();
  app.error = trouble.message;
  toast('error', 'The sign-in stopped.');
  service('post', '/cancel', {})
    .catch(() => {})
    .finally(() => refreshStatus());
  render();
}

function closeHelper() {
  app.login?.helper?.close();
}

// ----- the backend -----

/** One `ddClient.extension.vm.service` call. */
function service(method, path, body) {
  const api = dd.extension.vm.service;
  return method === 'get' ? api.get(path) : api.post(path, body);
}

/**
 * Hands a callback's query to the backend. From the host binary (`quiet`), a refusal is a
 * note, not an error: anyone on this computer can send the helper a forged redirect, and
 * it must not end the real sign-in.
 */
async function forwardCallback(query, { quiet = false } = {}) {
  try {
    await service('post', '/callback', { url: query });
    app.note = null;
  } catch (error) {
    const kind = errorBody(error)?.error;
    if (quiet && (kind === 'callback_refused' || kind === 'no_login')) {
      app.note = 'An answer that does not belong to this sign-in reached the page and was ignored.';
    } else {
      app.error = describe(error);
    }
  }
  render();
  schedulePoll(0);
}

/** Fetches `GET /status` and shows it; answers that arrive out of order are dropped. */
async function refreshStatus() {
  const serial = app.nextSerial++;
  try {
    const status = await service('get', '/status');
    if (serial < app.statusSerial) return;
    app.backendTrouble = null;
    app.status = status;
    app.statusSerial = serial;
    follow(status, serial);
  } catch (error) {
    if (serial < app.statusSerial) return;
    app.statusSerial = serial;
    app.backendTrouble = describe(error);
  }
  render();
}

/** Ends the login the page follows once a status newer than its start says it ended. */
function follow(status, serial) {
  const login = app.login;
  if (!login || serial < login.since || status.login_in_progress) return;
  app.login = null;
  login.helper?.close();
  if (status.logged_in) {
    app.note = null;
    const name = who(status.identity);
    toast('success', name ? `Signed in as ${name}.` : 'Signed in.');
  } else if (status.last_error) {
    toast('error', 'The sign-in failed.');
  }
}

// ----- polling -----

let pollTimer = null;

function pending() {
  const status = app.status;
  return Boolean(
    app.login ||
      app.busy ||
      !status ||
      status.login_in_progress ||
      ['connecting', 'unreachable'].includes(status.provider?.state),
  );
}

/** Polls again after `delay` (by default: soon while something is pending). */
function schedulePoll(delay) {
  clearTimeout(pollTimer);
  pollTimer = null;
  if (document.hidden) return; // Again when the page is shown.
  pollTimer = setTimeout(poll, delay ?? (pending() ? FAST_POLL_MS : SLOW_POLL_MS));
}

async function poll() {
  pollTimer = null;
  await refreshStatus();
  schedulePoll();
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    clearTimeout(pollTimer);
    pollTimer = null;
  } else {
    schedulePoll(0);
  }
});
// Docker Desktop kills the host processes of a UI it tears down; a closing page does not
// wait for that.
window.addEventListener('pagehide', closeHelper);

// ----- rendering -----

function show(element, visible) {
  element.hidden = !visible;
}

function setText(element, text) {
  if (element.textContent !== text) element.textContent = text;
  show(element, Boolean(text));
}

function providerText(status) {
  const provider = status.provider ?? {};
  const issuer = provider.issuer || 'the identity provider';
  switch (provider.state) {
    case 'ready':
      return `Connected to ${issuer}.`;
    case 'connecting':
      return `Reaching ${issuer}…`;
    case 'unreachable': {
      const when = provider.retry_in > 0 ? `in ${provider.retry_in} s` : 'now';
      const what =
        provider.error === 'provider_metadata'
          ? `${issuer} answered, but not with usable metadata`
          : `Can't reach ${issuer}`;
      return `${what}: ${clause(provider.message)}. Trying again ${when}.`;
    }
    case 'misconfigured':
      return (
        `The extension's settings cannot work: ${clause(provider.message)}. ` +
        "Fix the extension's settings (its config.json), then restart the extension."
      );
    default:
      return 'The identity provider is in an unknown state.';
  }
}

function accountText(status) {
  if (status.logged_in) {
    const name = who(status.identity);
    return name ? `Signed in as ${name}.` : 'Signed in.';
  }
  if (status.login_in_progress) {
    const left = status.login?.expires_in;
    const time = typeof left === 'number' ? ` ${minutes(left)} left.` : '';
    return `Waiting for you to sign in in your browser…${time}`;
  }
  return 'Not signed in.';
}

function render() {
  const status = app.status;
  const ready = status?.provider?.state === 'ready';
  const loggedIn = Boolean(status?.logged_in);
  const waiting = Boolean(status?.login_in_progress || app.login);
  // A loopback login that this page did not start (it was opened after) cannot receive
  // its answer: the host binary that would have died with the previous page.
  const orphan =
    Boolean(status?.login_in_progress) && !app.login && status?.redirect?.kind === 'loopback';

  if (!dd) {
    setText(el.provider, 'This page runs inside Docker Desktop, as an extension.');
    setText(el.status, 'Not available outside Docker Desktop.');
    return;
  }
  if (status) {
    setText(el.provider, providerText(status));
    setText(el.status, accountText(status));
  } else {
    setText(el.provider, app.backendTrouble ? "Unknown until the extension's backend answers." : 'Checking…');
    setText(el.status, app.backendTrouble ? 'Unknown.' : 'Checking…');
  }
  show(el.hint, waiting && !loggedIn && !orphan && Boolean(app.login));

  const expiry = loggedIn && status.expires_at ? new Date(status.expires_at * 1000) : null;
  el.expiry.textContent = expiry ? expiry.toLocaleString() : 'unknown';
  el.scope.textContent = loggedIn && status.scope ? status.scope : 'not stated';
  el.renewal.textContent = status?.refresh_token
    ? 'automatic (the backend holds a refresh token)'
    : 'none: sign in again when the access token expires';
  show(el.details, loggedIn);

  const notes = [];
  if (orphan) {
    notes.push(
      'This sign-in was started before the page was opened, so its answer cannot reach the ' +
        'extension any more. Press Cancel, or Log in to start again.',
    );
  }
  if (app.note) notes.push(app.note);
  setText(el.note, notes.join(' '));

  const errors = [];
  if (app.backendTrouble) errors.push(`${clause(app.backendTrouble)}. Trying again…`);
  if (app.error) errors.push(app.error);
  if (status?.store_error?.message) errors.push(sentence(status.store_error.message));
  if (status?.last_error && !waiting && !loggedIn) {
    errors.push(`The last sign-in failed: ${sentence(status.last_error.message || status.last_error.error)}`);
  }
  setText(el.error, errors.join('\n'));

  show(el.retry, status?.provider?.state === 'unreachable');
  show(el.login, ready && !loggedIn && (!waiting || orphan));
  show(el.reopen, waiting && Boolean(app.login?.url));
  show(el.cancel, waiting);
  show(el.call, loggedIn && Boolean(status?.sample_api));
  show(el.logout, loggedIn);
  for (const button of [el.retry, el.login, el.reopen, el.cancel, el.call, el.logout]) {
    button.disabled = app.busy;
  }
  el.main.setAttribute('aria-busy', String(app.busy));
}

function showResult(summary, body) {
  el.resultSummary.textContent = summary;
  el.result.textContent = body ?? '';
  show(el.result, Boolean(body));
  show(el.resultCard, Boolean(summary));
}

// ----- actions -----

/** Runs a button's `work`: every button waits, and a failure is shown in words. */
async function act(work) {
  if (app.busy) return;
  app.busy = true;
  app.error = null;
  render();
  try {
    await work();
  } catch (error) {
    app.error = describe(error);
  } finally {
    app.busy = false;
    render();
    // The button pressed may be gone (Log in turns into Cancel): keep the focus nearby.
    if (document.activeElement === document.body || document.activeElement?.hidden) {
      [el.cancel, el.login, el.call, el.logout, el.retry].find((b) => !b.hidden)?.focus();
    }
    schedulePoll(0);
  }
}

function openBrowser(url) {
  try {
    dd.host.openExternal(url);
  } catch (error) {
    throw new Trouble(describe(error, 'open your browser'));
  }
}

async function logIn() {
  showResult('');
  app.note = null;
  closeHelper();
  app.login = null;
  const redirect = app.status?.redirect;
  let helper = null;
  let asked = {};
  if (redirect?.kind === 'loopback') {
    helper = startHelper(redirect);
    let timer;
    const late = new Promise((_, reject) => {
      timer = setTimeout(
        () => reject(new Trouble(`${HOST_BINARY} did not say where it listens in time. Press Log in to try again.`)),
        LISTEN_TIMEOUT_MS,
      );
    });
    try {
      asked = { redirect_uri: await Promise.race([helper.listening, late]) };
    } catch (error) {
      helper.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }
  let login;
  try {
    login = await service('post', '/login', asked);
  } catch (error) {
    helper?.close();
    throw error;
  }
  if (helper?.failure) {
    // It stopped meanwhile: this login could never finish.
    await service('post', '/cancel', {}).catch(() => {});
    throw helper.failure;
  }
  app.login = { url: login.authorize_url, helper, since: app.nextSerial };
  openBrowser(login.authorize_url);
}

async function cancelLogin() {
  closeHelper();
  app.login = null;
  app.note = null;
  await service('post', '/cancel', {});
  await refreshStatus();
}

async function callApi() {
  const url = app.status?.sample_api;
  showResult(`Calling ${url}…`);
  const answer = await service('post', '/api', { url, method: 'GET' });
  let body = answer.body ?? '';
  if (typeof body === 'string') {
    try {
      body = JSON.stringify(JSON.parse(body), null, 2);
    } catch {
      // Not JSON: shown as it came.
    }
  } else {
    body = JSON.stringify(body, null, 2);
  }
  showResult(`${url} answered HTTP ${answer.status}.`, body);
}

const TOKEN_WORDS = { access_token: 'access token', refresh_token: 'refresh token' };

async function logOut() {
  closeHelper();
  app.login = null;
  showResult('');
  const report = await service('post', '/logout', {});
  const words = [report.had_tokens ? 'Signed out.' : 'Signed out (no tokens were stored).'];
  const revoked = (report.revoked ?? []).map((kind) => TOKEN_WORDS[kind] ?? kind);
  if (revoked.length) words.push(`Revoked at the provider: ${revoked.join(' and ')}.`);
  for (const failure of report.failed ?? []) {
    words.push(
      `The ${TOKEN_WORDS[failure.token] ?? failure.token} could not be revoked: ${sentence(failure.message)}`,
    );
  }
  if (report.not_revoked) words.push(`Not revoked: ${sentence(report.not_revoked)}`);
  showResult(words.join(' '));
  toast('success', 'Signed out.');
  await refreshStatus();
}

async function retry() {
  await service('post', '/retry', {});
  await refreshStatus();
}

function reopen() {
  if (app.login?.url) openBrowser(app.login.url);
}

/**
 * Docker Desktop's extension-tab deep link: the provider sent the browser to
 * docker-desktop://dashboard/extension-tab?extensionId=…&code=…&state=…, which opened this
 * tab with that query. The page takes the callback out of the address at once and hands
 * it to the backend.
 */
async function forwardDeepLink() {
  const query = window.location.search;
  const params = new URLSearchParams(query);
  if (!params.has('state') && !params.has('code') && !params.has('error')) return;
  for (const name of CALLBACK_PARAMS) params.delete(name);
  const rest = params.toString();
  window.history.replaceState(null, '', `${window.location.pathname}${rest ? `?${rest}` : ''}`);
  app.login = { url: null, helper: null, since: app.nextSerial };
  await forwardCallback(query);
  if (app.error) app.login = null;
}

if (dd) {
  el.login.addEventListener('click', () => act(logIn));
  el.cancel.addEventListener('click', () => act(cancelLogin));
  el.reopen.addEventListener('click', () => act(async () => reopen()));
  el.call.addEventListener('click', () => act(callApi));
  el.logout.addEventListener('click', () => act(logOut));
  el.retry.addEventListener('click', () => act(retry));
  forwardDeepLink()
    .catch((error) => {
      app.error = describe(error);
    })
    .finally(poll);
} else {
  render();
}
