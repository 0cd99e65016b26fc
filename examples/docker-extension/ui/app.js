// The extension's UI. Docker Desktop injects `window.ddClient`; its
// `extension.vm.service` calls reach the backend's Unix socket. The backend keeps the tokens:
// this page asks for an access token only to make one API call, holds it in a local
// variable for that call, and never writes it anywhere (no localStorage, no cookies).
'use strict';

const dd = window.ddClient;
const api = dd.extension.vm.service;
const POLL_MS = 1000;
const LOGIN_PATIENCE_MS = 10 * 60 * 1000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  error: $('error'),
  login: $('login'),
  call: $('call'),
  logout: $('logout'),
  result: $('result'),
};

/** The backend's error answer as a sentence. */
function describe(error) {
  const body = typeof error?.message === 'string' ? parse(error.message) : error;
  return body?.message ?? error?.message ?? String(error);
}

function parse(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { message: text };
  }
}

function showError(message) {
  ui.error.textContent = message ?? '';
  ui.error.hidden = !message;
}

function showResult(text) {
  ui.result.textContent = text ?? '';
  ui.result.hidden = !text;
}

/** Renders `GET /status`. */
function render(status) {
  if (status.logged_in) {
    const expiry = status.expires_at
      ? `, token valid until ${new Date(status.expires_at * 1000).toLocaleTimeString()}`
      : '';
    const scope = status.scope ? ` (scope: ${status.scope})` : '';
    const who = status.identity
      ? ` as ${status.identity.email || status.identity.name || status.identity.preferred_username || status.identity.sub}`
      : '';
    ui.status.textContent = `Signed in${who}${expiry}${scope}.`;
  } else if (status.login_in_progress) {
    ui.status.textContent = 'Waiting for you to sign in in your browser…';
  } else {
    ui.status.textContent = 'Not signed in.';
  }
  showError(status.last_error ? `The last sign-in failed: ${status.last_error.message}` : null);
  ui.login.hidden = status.logged_in;
  ui.logout.hidden = !status.logged_in;
  ui.call.hidden = !status.logged_in || !status.sample_api;
}

async function refresh() {
  const status = await api.get('/status');
  render(status);
  return status;
}

/** Polls the status while a login is in progress. */
async function waitForLogin() {
  const until = Date.now() + LOGIN_PATIENCE_MS;
  for (;;) {
    const status = await refresh();
    if (!status.login_in_progress || Date.now() > until) return status;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function busy(button, work) {
  button.disabled = true;
  showError(null);
  try {
    await work();
  } catch (error) {
    showError(describe(error));
  } finally {
    button.disabled = false;
  }
}

ui.login.addEventListener('click', () =>
  busy(ui.login, async () => {
    showResult(null);
    const { authorize_url: url } = await api.post('/login', {});
    dd.host.openExternal(url);
    await waitForLogin();
  }),
);

ui.call.addEventListener('click', () =>
  busy(ui.call, async () => {
    const status = await refresh();
    const { access_token: token, token_type: type } = await api.get('/token');
    const response = await fetch(status.sample_api, {
      headers: { Authorization: `${/^bearer$/i.test(type) ? 'Bearer' : type} ${token}` },
      credentials: 'omit',
      cache: 'no-store',
    });
    const text = await response.text();
    showResult(`${response.status} ${response.statusText}\n${JSON.stringify(parse(text), null, 2)}`);
  }),
);

ui.logout.addEventListener('click', () =>
  busy(ui.logout, async () => {
    const report = await api.post('/logout', {});
    await refresh();
    const revoked = report.revoked.length ? `Revoked: ${report.revoked.join(', ')}.` : '';
    const failed = report.failed.map((f) => `Could not revoke the ${f.token}: ${f.message}.`);
    const note = report.not_revoked ? `Not revoked: ${report.not_revoked}.` : '';
    showResult(['Signed out.', revoked, ...failed, note].filter(Boolean).join('\n'));
  }),
);

/**
 * Docker Desktop's newer pattern: the provider redirected to
 * docker-desktop://dashboard/extension-tab?extensionId=…&code=…&state=…, which opened this
 * tab with that query. Hand it to the backend, and take it out of the address at once.
 */
async function forwardCallback() {
  const query = window.location.search;
  const params = new URLSearchParams(query);
  if (!params.has('state') || !(params.has('code') || params.has('error'))) return;
  window.history.replaceState(null, '', window.location.pathname);
  await api.post('/callback', { url: query });
  await waitForLogin();
}

forwardCallback()
  .then(refresh)
  .catch((error) => showError(describe(error)));
