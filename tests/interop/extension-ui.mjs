// Runs the Docker Desktop extension's UI (examples/docker-extension/ui/) in headless Chromium
// the way Docker Desktop does, with a `window.ddClient` stand-in as strict as Docker's, and
// plays one scenario against the extension's backend and an identity provider:
//
//   node extension-ui.mjs <scenario> --ui DIR --socket PATH [--host-binary PATH]
//                         [--screenshots DIR]
//
// The stand-in:
// - The page is loaded from file://…/index.html: an opaque origin, not http, so a UI that
//   fetched the backend or kept cookies fails here as it would in Docker Desktop.
//   `ddClient` is injected before the page's scripts run, in the UI's page only.
// - `extension.vm.service.get/post/put/patch/delete/head/request` go to the backend's Unix
//   socket (HTTP/1.1, as Docker Desktop forwards them), and resolve with the parsed JSON
//   body; a non-2xx answer rejects with a plain object `{name: 'ServiceError', statusCode,
//   message: <the body's text>}` (Docker's `ServiceError` interface), not an `Error`.
// - `host.openExternal(url)` throws unless `url` is an absolute http: or https: URL; else
//   it opens a new page in the same browser (the user's browser), where the user plays the
//   scenario's part at the provider: signs in at oidc-provider's development pages and
//   approves or cancels, follows the development IdP's redirect to Docker Desktop's deep
//   link, or does nothing.
// - `extension.host.cli.exec(cmd, args, options)` runs only `latchkey-callback` (the host
//   binary the extension ships: `--host-binary`); anything else rejects (or, streaming,
//   calls `onError`). With `options.stream` it returns `{close()}` at once and reports
//   `onOutput({stdout} | {stderr})` (one call per line with `splitOutputLines`, the line
//   break removed), `onError(error)` and `onClose(exitCode)`; without, a promise of
//   `{cmd, code, stdout, stderr, killed, signal, lines(), parseJsonLines(),
//   parseJsonObject()}` that rejects with that object for a non-zero exit. Reloading the
//   tab kills its host processes, as Docker Desktop does when it tears a UI down.
// - `host.platform`/`host.arch` are Node's; `desktopUI.toast.success/warning/error` are
//   recorded.
//
// Scenarios (oidc-provider with a loopback redirect unless said otherwise):
//   login       sign in (after a forged redirect to the host binary, which must not end
//               the login), call the API, log out
//   deep-link   the development IdP, Docker Desktop's extension-tab redirect: log in, the
//               browser ends at the deep link, the tab is opened again with its query
//   cancel      log in, open the sign-in page again, cancel: the host binary must stop
//   offline     the provider is down: the page says so with Try now; once the test has
//               started it, Try now leads to Log in
//   denied      the user cancels at the consent page: the failure is shown in words
//   port-busy   the redirect URI's fixed port is taken: the host binary's error in words
//   misconfigured  settings that cannot work: the page says so, and offers no Log in
//   no-backend  nothing answers on --socket: Docker Desktop's own failure, in words, and
//               the page keeps trying
//   screenshots signed out (light), waiting (dark), signed in with an API answer (light
//               and dark), 2400×1600 PNGs (1200×800 CSS pixels at scale 2) in --screenshots
//   strict      checks the stand-in itself refuses what Docker Desktop refuses
//
// Output: zero or more pause lines, `{"pause": NAME, …}`, each answered by one line on
// standard input when the test has done its part ("signed_in": it reads the token file;
// "unreachable": it starts the provider), then one JSON object: what the scenario saw:
// `steps` (per step: the texts of the page's parts, its visible buttons, the whole text and
// HTML), `service` (every backend call with its answer's body), `opened`, `refused_open`,
// `execs` (each host process: arguments, output lines, whether the UI closed it, how it
// ended), `toasts`, `console`, `page_errors`, `storage`, `screenshots`, and per-scenario
// findings. Any failure, or 90 s in all, ends the script with a message on stderr and exit
// code 1. Chromium and the end of the script are chromium.mjs's.
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { pathToFileURL } from 'node:url';

import { launchChromium, run, sleep } from './chromium.mjs';

const USAGE =
  'usage: node extension-ui.mjs <scenario> --ui DIR --socket PATH [--host-binary PATH] [--screenshots DIR]';
/** The host binaries the extension ships (metadata.json `host.binaries`). */
const HOST_BINARY = 'latchkey-callback';
/** How long one step may wait for the page. */
const STEP_MS = 30_000;

// ----- the command line -----

const SCENARIOS = {
  login,
  'deep-link': deepLink,
  cancel,
  offline,
  denied,
  'port-busy': portBusy,
  misconfigured,
  'no-backend': noBackend,
  screenshots,
  strict,
};

function usage(problem) {
  process.stderr.write(`extension-ui.mjs: ${problem}\n${USAGE}\nscenarios: ${Object.keys(SCENARIOS).join(', ')}\n`);
  process.exit(2);
}

const [scenario, ...rest] = process.argv.slice(2);
const options = {};
for (let i = 0; i < rest.length; i += 2) {
  const [name, value] = [rest[i], rest[i + 1]];
  if (!['--ui', '--socket', '--host-binary', '--screenshots'].includes(name) || value === undefined) {
    usage(`unexpected ${name}`);
  }
  options[name.slice(2)] = value;
}
if (!SCENARIOS[scenario]) usage(`no scenario ${scenario ?? '(none)'}`);
if (!options.ui || !options.socket) usage('--ui and --socket are required');
if (scenario === 'screenshots' && !options.screenshots) usage('screenshots needs --screenshots');

// ----- what the script saw -----

const seen = {
  scenario,
  steps: {},
  service: [],
  opened: [],
  refused_open: [],
  execs: [],
  toasts: [],
  console: [],
  page_errors: [],
  storage: null,
  screenshots: [],
};

/** The running host processes, by id. */
const processes = new Map();
/** The user's browser pages' work, awaited before the script ends. */
const browsing = [];

let context;
let page;

// ----- the test's side: pause lines and answers -----

const answers = [];
const waiters = [];
let stdinClosed = false;
const stdin = readline.createInterface({ input: process.stdin });
stdin.on('line', (line) => (waiters.length ? waiters.shift()(line) : answers.push(line)));
stdin.on('close', () => {
  stdinClosed = true;
  while (waiters.length) waiters.shift()(null);
});

/** Tells the test the scenario reached `name` and waits for its answer line. */
async function pause(name, extra = {}) {
  process.stdout.write(`${JSON.stringify({ pause: name, ...extra })}\n`);
  const line = answers.length
    ? answers.shift()
    : stdinClosed
      ? null
      : await new Promise((resolve) => waiters.push(resolve));
  if (line === null) throw new Error(`standard input closed while paused at ${name}`);
}

// ----- Docker Desktop's side: the backend, the host, the user's browser -----

/** One request to the backend's socket, as Docker Desktop forwards the UI's. */
function callBackend(method, urlPath, body) {
  return new Promise((resolve, reject) => {
    const headers = {};
    if (body !== null && body !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(body);
    }
    const request = http.request({ socketPath: options.socket, method, path: urlPath, headers }, (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (text += chunk));
      response.on('end', () => resolve({ status: response.statusCode, text }));
      response.on('error', reject);
    });
    request.setTimeout(STEP_MS, () => request.destroy(new Error(`the backend did not answer ${method} ${urlPath}`)));
    request.on('error', reject);
    request.end(body ?? undefined);
  });
}

async function service(method, urlPath, body) {
  const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD'];
  if (!METHODS.includes(method) || typeof urlPath !== 'string' || !urlPath.startsWith('/')) {
    throw new Error(`not a request Docker Desktop forwards: ${method} ${urlPath}`);
  }
  const entry = { method, path: urlPath, request: body ?? null };
  seen.service.push(entry);
  try {
    const answer = await callBackend(method, urlPath, body);
    Object.assign(entry, { status: answer.status, body: answer.text });
    return answer;
  } catch (error) {
    entry.failure = String(error?.message ?? error);
    throw error;
  }
}

/** Hands an event of host process `id` to the page's stream handlers, in order. */
function deliver(record, event) {
  record.delivery = record.delivery
    .then(() =>
      page.evaluate(([id, event]) => window.__latchkeyStandInEvent?.(id, event), [record.id, event]),
    )
    .catch(() => {}); // The page is gone: Docker Desktop drops the output too.
}

/** `extension.host.cli.exec`, Node's side. */
async function exec(cmd, args, { stream, split }, id) {
  const record = {
    id,
    cmd,
    args,
    stream,
    split,
    pid: null,
    stdout_lines: [],
    stderr: '',
    closed_by_ui: false,
    exited: false,
    exit_code: null,
    signal: null,
    delivery: Promise.resolve(),
  };
  Object.defineProperty(record, 'delivery', { enumerable: false, writable: true });
  seen.execs.push(record);
  if (cmd !== HOST_BINARY) {
    record.refused = true;
    throw new Error(`${cmd} is not a binary this extension ships (metadata.json host.binaries: ${HOST_BINARY})`);
  }
  if (!options['host-binary']) throw new Error('the test gave no --host-binary');
  if (!Array.isArray(args) || args.some((arg) => typeof arg !== 'string')) {
    record.refused = true;
    throw new Error('exec takes its arguments as an array of strings');
  }
  const child = spawn(options['host-binary'], args, { stdio: ['ignore', 'pipe', 'pipe'] });
  record.pid = child.pid ?? null;
  processes.set(id, { child, record });
  const exited = new Promise((resolve) => {
    child.on('error', (error) => {
      record.exited = true;
      record.spawn_error = String(error.message);
      if (stream) deliver(record, { type: 'error', error: { message: String(error.message) } });
      resolve();
    });
    child.on('close', (code, signal) => {
      Object.assign(record, { exited: true, exit_code: code, signal });
      processes.delete(id);
      if (stream) {
        const number = code ?? 128 + (os.constants.signals[signal] ?? 0);
        deliver(record, { type: 'close', code: number });
      }
      resolve();
    });
  });
  let stdout = '';
  let stderr = '';
  let partial = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stdout.on('data', (chunk) => {
    stdout += chunk;
    partial += chunk;
    const lines = partial.split('\n');
    partial = lines.pop();
    record.stdout_lines.push(...lines);
    if (!stream) return;
    if (split) for (const line of lines) deliver(record, { type: 'output', data: { stdout: line } });
    else deliver(record, { type: 'output', data: { stdout: chunk } });
  });
  child.stdout.on('end', () => {
    if (partial) {
      record.stdout_lines.push(partial);
      if (stream && split) deliver(record, { type: 'output', data: { stdout: partial } });
    }
  });
  let stderrPartial = '';
  child.stderr.on('data', (chunk) => {
    stderr += chunk;
    record.stderr += chunk;
    if (!stream) return;
    if (!split) {
      deliver(record, { type: 'output', data: { stderr: chunk } });
      return;
    }
    stderrPartial += chunk;
    const lines = stderrPartial.split('\n');
    stderrPartial = lines.pop();
    for (const line of lines) deliver(record, { type: 'output', data: { stderr: line } });
  });
  if (stream) return { pid: record.pid };
  // Without a stream: the whole output once it has ended (a stuck command is killed).
  const timer = setTimeout(() => child.kill('SIGKILL'), STEP_MS);
  await exited;
  clearTimeout(timer);
  return { cmd: [cmd, ...args].join(' '), code: record.exit_code, signal: record.signal, killed: record.signal !== null, stdout, stderr };
}

function closeProcess(id) {
  const running = processes.get(id);
  if (!running) return;
  running.record.closed_by_ui = true;
  running.child.kill('SIGTERM');
}

function killAll() {
  for (const { child } of processes.values()) child.kill('SIGKILL');
}

/** What the user does in their browser with the page `openExternal` opened, per scenario. */
let user = idle;

/** The user looks at the sign-in page and does nothing. */
async function idle(tab, url) {
  await tab.goto(url, { waitUntil: 'domcontentloaded' });
}

/** Signs in at oidc-provider's development pages; approves, or cancels consent (`deny`). */
async function signIn(tab, url, { deny = false, gate = null } = {}) {
  await tab.goto(url, { waitUntil: 'domcontentloaded' });
  await gate;
  await tab.locator('input[name="login"]').fill('alice');
  await tab.locator('input[name="password"]').fill('any password');
  await tab.locator('button[type="submit"]', { hasText: 'Sign-in' }).click();
  const approve = tab.locator('button[type="submit"]', { hasText: 'Continue' });
  await approve.waitFor({ state: 'visible' });
  // The browser leaves for the host binary, which sends it on to Docker Desktop's landing
  // (docker-desktop://…), which a browser without Docker Desktop cannot open.
  if (deny) await tab.locator('a', { hasText: 'Cancel' }).click();
  else await approve.click();
}

/** A gate: `open()` lets whoever awaits `promise` through. */
function gate() {
  let open;
  const promise = new Promise((resolve) => (open = resolve));
  return { promise, open };
}

async function openExternal(url) {
  seen.opened.push(url);
  const tab = await context.newPage();
  const work = user(tab, url);
  browsing.push(work);
  work.catch(() => {}); // Awaited at the end of the scenario.
}

// ----- the page -----

/** The stand-in for the `ddClient` Docker Desktop injects; runs in the page. */
function standIn({ platform, arch }) {
  if (window.location.protocol !== 'file:') return; // The UI's page only.
  const bridge = (...args) => window.__latchkeyStandIn(...args);
  const serviceError = (statusCode, message) => ({ name: 'ServiceError', statusCode, message });
  const call = async (method, url, data) => {
    const body = data === undefined || data === null ? null : JSON.stringify(data);
    const { status, text } = await bridge('service', method, url, body);
    if (status < 200 || status > 299) throw serviceError(status, text);
    if (!text) return undefined;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  };
  const streams = new Map();
  let lastId = 0;
  Object.defineProperty(window, '__latchkeyStandInEvent', {
    value: (id, event) => {
      const handlers = streams.get(id);
      if (!handlers) return;
      // A handler's exception is the page's: reported as an uncaught error, as in Docker.
      const invoke = (name, value) => {
        try {
          handlers[name]?.(value);
        } catch (error) {
          setTimeout(() => {
            throw error;
          });
        }
      };
      if (event.type === 'output') invoke('onOutput', event.data);
      else if (event.type === 'error') invoke('onError', event.error);
      else if (event.type === 'close') {
        streams.delete(id);
        invoke('onClose', event.code);
      }
    },
  });
  const withHelpers = (result) => ({
    ...result,
    lines: () => result.stdout.split('\n').filter((line) => line !== ''),
    parseJsonLines: () => result.stdout.split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line)),
    parseJsonObject: () => JSON.parse(result.stdout),
  });
  const exec = (cmd, args, options) => {
    const stream = options?.stream;
    if (stream) {
      const id = ++lastId;
      streams.set(id, stream);
      bridge('exec', cmd, args, { stream: true, split: Boolean(stream.splitOutputLines) }, id).catch(
        (error) => window.__latchkeyStandInEvent(id, { type: 'error', error: { message: String(error?.message ?? error) } }),
      );
      return Object.freeze({ close: () => void bridge('close', id) });
    }
    return bridge('exec', cmd, args, { stream: false, split: false }, ++lastId).then((result) => {
      if (result.code !== 0) throw withHelpers(result);
      return withHelpers(result);
    });
  };
  const openExternal = (url) => {
    let protocol = null;
    try {
      protocol = new URL(String(url)).protocol;
    } catch {
      // Not an absolute URL.
    }
    if (protocol !== 'http:' && protocol !== 'https:') {
      void bridge('refused-open', String(url));
      throw new Error(`openExternal opens http: and https: URLs only, not ${url}`);
    }
    void bridge('open', String(url));
  };
  const toast = (kind) => (message) => void bridge('toast', kind, String(message));
  const freeze = (object) => Object.freeze(object);
  window.ddClient = freeze({
    extension: freeze({
      vm: freeze({
        service: freeze({
          get: (url) => call('GET', url),
          post: (url, data) => call('POST', url, data),
          put: (url, data) => call('PUT', url, data),
          patch: (url, data) => call('PATCH', url, data),
          delete: (url) => call('DELETE', url),
          head: (url) => call('HEAD', url),
          request: (config) => call(String(config?.method ?? 'GET').toUpperCase(), config?.url, config?.data),
        }),
      }),
      host: freeze({ cli: freeze({ exec }) }),
    }),
    host: freeze({ openExternal, platform, arch, hostname: 'stand-in' }),
    desktopUI: freeze({
      toast: freeze({ success: toast('success'), warning: toast('warning'), error: toast('error') }),
    }),
  });
}

/** The UI's `index.html` as a file URL, with `query`. */
function uiUrl(query = '') {
  return `${pathToFileURL(path.resolve(options.ui, 'index.html')).href}${query}`;
}

/** Opens the extension's tab (again: its host processes die with the old page). */
async function openTab(query = '') {
  killAll();
  await page.goto(uiUrl(query), { waitUntil: 'domcontentloaded' });
}

async function setUpPage() {
  await page.exposeBinding('__latchkeyStandIn', async (_source, op, ...args) => {
    switch (op) {
      case 'service':
        return service(...args);
      case 'exec':
        return exec(...args);
      case 'close':
        return closeProcess(args[0]);
      case 'open':
        return openExternal(args[0]);
      case 'refused-open':
        seen.refused_open.push(args[0]);
        return undefined;
      case 'toast':
        seen.toasts.push({ kind: args[0], message: args[1] });
        return undefined;
      default:
        throw new Error(`no such stand-in operation ${op}`);
    }
  });
  await page.addInitScript(standIn, { platform: os.platform(), arch: os.arch() });
  page.on('console', (message) => seen.console.push({ type: message.type(), text: message.text() }));
  page.on('pageerror', (error) => seen.page_errors.push(String(error?.stack ?? error)));
}

/** Waits until `selector` is visible with text matching `pattern`. */
async function waitText(selector, pattern, timeout = STEP_MS) {
  await page.locator(selector).filter({ hasText: pattern }).first().waitFor({ state: 'visible', timeout });
}

async function waitVisible(selector, timeout = STEP_MS) {
  await page.locator(selector).waitFor({ state: 'visible', timeout });
}

/** Waits until `condition()` holds, checking every 50 ms. */
async function until(what, condition, timeout = STEP_MS) {
  const deadline = Date.now() + timeout;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`waited ${timeout / 1000} s for ${what}`);
    await sleep(50);
  }
}

/** Records what the page shows as step `name`. */
async function snapshot(name) {
  seen.steps[name] = await page.evaluate(() => {
    const text = (id) => {
      const element = document.getElementById(id);
      return element && !element.hidden ? element.innerText : null;
    };
    return {
      provider: text('provider'),
      status: text('status'),
      details: text('details'),
      note: text('note'),
      error: text('error'),
      result: text('result-card'),
      buttons: [...document.querySelectorAll('button')]
        .filter((button) => !button.hidden)
        .map((button) => ({ label: button.textContent.trim(), disabled: button.disabled })),
      text: document.body.innerText,
      html: document.documentElement.outerHTML,
      location: window.location.href,
      search: window.location.search,
    };
  });
}

/** What the page could have stored. */
async function storage() {
  return page.evaluate(async () => {
    const attempt = async (read) => {
      try {
        return await read();
      } catch (error) {
        return `unavailable: ${error?.name ?? error}`;
      }
    };
    return {
      local_storage: await attempt(() => window.localStorage.length),
      session_storage: await attempt(() => window.sessionStorage.length),
      cookies: await attempt(() => document.cookie),
      indexed_db: await attempt(async () => (await window.indexedDB.databases()).map((db) => db.name)),
      cache_storage: await attempt(() => window.caches.keys()),
    };
  });
}

/** The record of the host process the UI started last. */
function lastExec() {
  const record = seen.execs.at(-1);
  if (!record) throw new Error('the UI started no host process');
  return record;
}

/** The URI the host process said it listens on. */
async function listeningUri(record) {
  let uri = null;
  await until('the host binary to say where it listens', () => {
    for (const line of record.stdout_lines) {
      try {
        uri = JSON.parse(line).listening ?? uri;
      } catch {
        // Not JSON.
      }
    }
    return uri !== null;
  });
  return uri;
}

/** Whether anything still accepts connections at `uri`'s port. */
function accepting(uri) {
  const { hostname, port } = new URL(uri);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port) });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function logInAndWait() {
  await waitVisible('#login');
  await page.locator('#login').click();
  await waitText('#status', /^Waiting for you to sign in in your browser…/);
}

async function callTheApi() {
  await page.locator('#call').click();
  await waitText('#result-summary', /answered HTTP \d+/);
}

async function logOut() {
  await page.locator('#logout').click();
  await waitText('#result-summary', /^Signed out/);
  await waitText('#status', /^Not signed in\.$/);
  await waitVisible('#login');
}

// ----- the scenarios -----

async function login() {
  await openTab();
  await waitVisible('#login');
  await snapshot('signed_out');
  const signInGate = gate();
  user = (tab, url) => signIn(tab, url, { gate: signInGate.promise });
  await logInAndWait();
  await snapshot('waiting');

  // Someone on this machine guesses the port and sends a forged redirect first.
  const helper = lastExec();
  const uri = await listeningUri(helper);
  seen.forged = await new Promise((resolve, reject) => {
    http
      .get(`${uri}?code=forged&state=forged`, (response) => {
        response.resume();
        resolve({ status: response.statusCode, location: response.headers.location ?? null });
      })
      .on('error', reject);
  });
  await until('the forged callback to reach the backend', () =>
    seen.service.some((entry) => entry.path === '/callback' && entry.status),
  );
  await sleep(1_500); // A poll or two: the login must still be waiting.
  await snapshot('after_forged');

  signInGate.open();
  await waitText('#status', /^Signed in/, 45_000);
  await Promise.all(browsing);
  await snapshot('signed_in');
  await pause('signed_in');

  await callTheApi();
  await snapshot('api');
  await logOut();
  await snapshot('signed_out_again');
  await until('the host binary to stop', () => helper.exited, 10_000);
  seen.helper_accepting_after = await accepting(uri);
}

async function deepLink() {
  await openTab();
  await waitVisible('#login');
  await snapshot('signed_out');
  let found;
  const deepLinkSeen = new Promise((resolve) => (found = resolve));
  // The development IdP approves at once and redirects to Docker Desktop's deep link,
  // which only Docker Desktop could open: the browser stops there.
  user = async (tab, url) => {
    tab.on('response', (response) => {
      const location = response.headers().location;
      if (location?.startsWith('docker-desktop:')) found(location);
    });
    tab.on('requestfailed', (request) => {
      if (request.url().startsWith('docker-desktop:')) found(request.url());
    });
    await tab.goto(url, { waitUntil: 'domcontentloaded' }).catch(() => {});
  };
  await logInAndWait();
  await snapshot('waiting');
  seen.deep_link = await Promise.race([
    deepLinkSeen,
    sleep(STEP_MS).then(() => {
      throw new Error('the browser never reached the deep link');
    }),
  ]);
  // Docker Desktop opens the extension's tab with the deep link's query.
  await openTab(seen.deep_link.slice(seen.deep_link.indexOf('?')));
  await waitText('#status', /^Signed in/, 45_000);
  await snapshot('signed_in');
  await pause('signed_in');
  if (await page.locator('#call').isVisible()) {
    await callTheApi();
    await snapshot('api');
  }
  await logOut();
  await snapshot('signed_out_again');
}

async function cancel() {
  await openTab();
  user = idle;
  await logInAndWait();
  await snapshot('waiting');
  const helper = lastExec();
  const uri = await listeningUri(helper);
  await page.locator('#reopen').click();
  await until('the sign-in page to open again', () => seen.opened.length === 2);
  await page.locator('#cancel').click();
  await waitText('#status', /^Not signed in\.$/);
  await waitVisible('#login');
  await snapshot('cancelled');
  await until('the host binary to stop', () => helper.exited, 10_000);
  seen.helper_accepting_after = await accepting(uri);
  await Promise.all(browsing);
}

async function offline() {
  await openTab();
  // Each attempt of the backend is "connecting" for a moment: the step is taken again
  // should a poll have landed in one.
  await until('a snapshot of the unreachable provider', async () => {
    await waitText('#provider', /^Can't reach /);
    await waitVisible('#retry');
    await snapshot('unreachable');
    return /^Can't reach /.test(seen.steps.unreachable.provider ?? '');
  });
  await pause('unreachable');
  // The provider is up now. Try now, unless the backend's own next attempt was quicker.
  seen.pressed_try_now = await page
    .locator('#retry')
    .click({ timeout: 5_000 })
    .then(
      () => true,
      () => false,
    );
  await waitText('#provider', /^Connected to /);
  await waitVisible('#login');
  await snapshot('recovered');
}

async function denied() {
  await openTab();
  user = (tab, url) => signIn(tab, url, { deny: true });
  await logInAndWait();
  const helper = lastExec();
  await waitText('#error', /The last sign-in failed/, 45_000);
  await waitVisible('#login');
  await Promise.all(browsing);
  await snapshot('denied');
  await until('the host binary to stop', () => helper.exited, 10_000);
}

async function portBusy() {
  await openTab();
  await waitVisible('#login');
  await page.locator('#login').click();
  await waitText('#error', /./);
  await waitVisible('#login');
  await page.locator('#login:not([disabled])').waitFor();
  await snapshot('port_busy');
  await until('the host binary to stop', () => lastExec().exited, 10_000);
}

async function misconfigured() {
  await openTab();
  await waitText('#provider', /^The extension's settings cannot work/);
  await snapshot('misconfigured');
}

async function noBackend() {
  await openTab();
  await waitText('#error', /./);
  const failed = () => seen.service.filter((entry) => entry.path === '/status' && entry.failure);
  const first = failed().length;
  await until('the page to try again', () => failed().length > first, 15_000);
  await snapshot('no_backend');
}

/** Saves the page as `name`.png, as Docker's marketplace wants screenshots: 2400×1600. */
async function screenshot(cdp, name, scheme) {
  await page.emulateMedia({ colorScheme: scheme });
  await page.mouse.move(1, 1);
  await page.evaluate(() => {
    document.activeElement?.blur();
    return new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
  });
  const { data } = await cdp.send('Page.captureScreenshot', { format: 'png' });
  const file = path.join(options.screenshots, `${name}.png`);
  await fs.writeFile(file, Buffer.from(data, 'base64'));
  seen.screenshots.push(file);
}

async function screenshots() {
  const cdp = await context.newCDPSession(page);
  await cdp.send('Emulation.setDeviceMetricsOverride', {
    width: 1200,
    height: 800,
    deviceScaleFactor: 2,
    mobile: false,
  });
  await fs.mkdir(options.screenshots, { recursive: true });
  await openTab();
  await waitVisible('#login');
  await waitText('#provider', /^Connected to /);
  await screenshot(cdp, 'signed-out-light', 'light');
  const signInGate = gate();
  user = (tab, url) => signIn(tab, url, { gate: signInGate.promise });
  await logInAndWait();
  await screenshot(cdp, 'waiting-dark', 'dark');
  signInGate.open();
  await waitText('#status', /^Signed in/, 45_000);
  await Promise.all(browsing);
  await callTheApi();
  await snapshot('signed_in');
  await screenshot(cdp, 'signed-in-light', 'light');
  await screenshot(cdp, 'signed-in-dark', 'dark');
}

async function strict() {
  await openTab();
  await waitText('#provider', /^Connected to /);
  seen.checks = await page.evaluate(async () => {
    const outcome = async (attempt) => {
      try {
        const value = await attempt();
        return { ok: true, value: value === undefined ? null : JSON.parse(JSON.stringify(value)) };
      } catch (error) {
        return {
          ok: false,
          is_error: error instanceof Error,
          name: error?.name ?? null,
          message: String(error?.message ?? error),
          status_code: error?.statusCode ?? null,
          code: error?.code ?? null,
        };
      }
    };
    const dd = window.ddClient;
    const streamed = (cmd) =>
      new Promise((resolve) => {
        dd.extension.host.cli.exec(cmd, [], {
          stream: {
            onOutput: () => resolve({ event: 'output' }),
            onError: (error) => resolve({ event: 'error', message: String(error?.message ?? error) }),
            onClose: (code) => resolve({ event: 'close', code }),
          },
        });
        setTimeout(() => resolve({ event: 'nothing' }), 10_000);
      });
    return {
      origin: window.location.origin,
      protocol: window.location.protocol,
      platform: dd.host.platform,
      open_deep_link: await outcome(() => dd.host.openExternal('docker-desktop://dashboard/open')),
      open_javascript: await outcome(() => dd.host.openExternal('javascript:void(0)')),
      open_file: await outcome(() => dd.host.openExternal('file:///etc/passwd')),
      open_relative: await outcome(() => dd.host.openExternal('/callback')),
      exec_other: await outcome(() => dd.extension.host.cli.exec('sh', ['-c', 'id'])),
      exec_path: await outcome(() => dd.extension.host.cli.exec('/usr/bin/latchkey-callback', ['--help'])),
      exec_other_streamed: await streamed('sh'),
      exec_helper_help: await outcome(() => dd.extension.host.cli.exec('latchkey-callback', ['--help'])),
      exec_helper_bad: await outcome(() => dd.extension.host.cli.exec('latchkey-callback', ['--bogus'])),
      not_found: await outcome(() => dd.extension.vm.service.get('/no-such-endpoint')),
      wrong_method: await outcome(() => dd.extension.vm.service.delete('/status')),
      request_status: await outcome(async () => (await dd.extension.vm.service.request({ url: '/status', method: 'GET', headers: {}, data: null })).provider.state),
      fetch: await outcome(() => fetch('http://127.0.0.1:9/status').then((response) => response.status)),
    };
  });
}

// ----- the script -----

async function main() {
  ({ context, page } = await launchChromium({ stepMs: STEP_MS }));
  await setUpPage();
  await SCENARIOS[scenario]();
  await Promise.all(browsing);
  seen.storage = await storage();
  // Let the last host-process events reach the page before the report.
  await Promise.all(seen.execs.map((record) => record.delivery));
  process.stdout.write(`${JSON.stringify(seen)}\n`);
}

run(main, { overallMs: 90_000, onFinish: killAll });
