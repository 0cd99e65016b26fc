// Runs the Docker Desktop extension example's UI (examples/docker-extension/ui/) in headless
// Chromium, as Docker Desktop would, against its backend and oidc-provider:
//
//   node extension-ui.mjs <ui-dir> <backend-socket> [<deep-link-query>]
//
// The page is served from a local HTTP server. `window.ddClient` is a stand-in for the one
// Docker Desktop injects: `extension.vm.service.get/post` go to the backend's Unix socket
// (as Docker Desktop forwards them), `host.openExternal` opens a new browser page, where the
// user signs in at oidc-provider's development pages (any login) and approves. Then:
// the UI must say "Signed in", its API call must succeed, nothing may be in the page's
// storage, and logging out must say so. Prints one JSON line:
//
//   {"signed_in": "...", "api_result": "...", "access_tokens": [...], "storage": {...},
//    "signed_out": "...", "logout_result": "..."}
//
// `access_tokens` are those the backend handed to the page. With a deep-link query (Docker
// Desktop's extension-tab pattern: `?code=…&state=…`), the page is opened with it instead,
// as Docker Desktop opens the tab, and must forward it and show "Signed in"; the output then
// also has `location_search`, the page's query afterwards. Chromium is
// `$LATCHKEY_CHROMIUM` or /usr/bin/chromium, started with a fresh profile that is removed
// afterwards; nothing is downloaded. Any failure, or 60 s in all, ends the script with a
// message on stderr and a non-zero exit code. Starting Chromium and ending the script are
// chromium.mjs's, shared with latchkey's other browser scripts.
import fs from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';

import { launchChromium, run } from './chromium.mjs';

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css' };

const [uiDir, socketPath, deepLinkQuery, ...extra] = process.argv.slice(2);
if (!uiDir || !socketPath || extra.length) {
  process.stderr.write('usage: node extension-ui.mjs <ui-dir> <backend-socket> [<query>]\n');
  process.exit(2);
}

let server;

/** Serves the UI's files, and nothing outside its directory. */
async function serveUi() {
  const root = path.resolve(uiDir);
  server = http.createServer(async (request, response) => {
    const name = new URL(request.url, 'http://ui').pathname.replace(/^\/$/, '/index.html');
    const file = path.resolve(root, `.${name}`);
    try {
      if (!file.startsWith(`${root}${path.sep}`)) throw new Error('outside the UI');
      const body = await fs.readFile(file);
      response.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] ?? 'text/plain' });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}/`;
}

/** One call to the backend's socket, as Docker Desktop forwards the UI's. */
function callBackend(method, urlPath, body) {
  const payload = body === undefined ? '' : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk) => (text += chunk));
        response.on('end', () => resolve({ status: response.statusCode, text }));
      },
    );
    request.on('error', reject);
    request.end(payload);
  });
}

/** Signs in at oidc-provider's development pages and approves. */
async function signIn(page, url) {
  await page.goto(url, { waitUntil: 'domcontentloaded' });
  await page.locator('input[name="login"]').fill('alice');
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('button[type="submit"]', { hasText: 'Sign-in' }).click();
  await page.locator('button[type="submit"]', { hasText: 'Continue' }).click();
}

async function main() {
  const { context, page } = await launchChromium({ stepMs: 20_000 });
  const uiUrl = await serveUi();

  const accessTokens = [];
  const signIns = [];
  await context.exposeBinding('__ddService', async (_source, method, urlPath, body) => {
    const answer = await callBackend(method, urlPath, body);
    if (urlPath === '/token' && answer.status === 200) {
      accessTokens.push(JSON.parse(answer.text).access_token);
    }
    return answer;
  });
  await context.exposeBinding('__ddOpenExternal', async (_source, url) => {
    const page = await context.newPage();
    signIns.push(signIn(page, url));
  });
  // The stand-in for the `ddClient` Docker Desktop injects.
  await context.addInitScript(() => {
    const call = async (method, urlPath, body) => {
      const { status, text } = await window.__ddService(method, urlPath, body);
      if (status >= 200 && status < 300) return JSON.parse(text);
      throw { statusCode: status, message: text };
    };
    window.ddClient = {
      extension: {
        vm: {
          service: {
            get: (urlPath) => call('GET', urlPath),
            post: (urlPath, body) => call('POST', urlPath, body),
          },
        },
      },
      host: { openExternal: (url) => void window.__ddOpenExternal(url) },
    };
  });

  // The UI's page is the browser's first tab: the bindings and the stand-in above apply to
  // it too, from its next navigation on.
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  page.on('console', (message) => message.type() === 'error' && errors.push(message.text()));
  const status = page.locator('#status');
  const result = page.locator('#result');
  let apiResult = null;
  let locationSearch = null;
  if (deepLinkQuery) {
    await page.goto(`${uiUrl}${deepLinkQuery}`, { waitUntil: 'domcontentloaded' });
    await status.filter({ hasText: /^Signed in/ }).waitFor({ timeout: 30_000 });
    locationSearch = await page.evaluate(() => window.location.search);
  } else {
    await page.goto(uiUrl, { waitUntil: 'domcontentloaded' });
    await status.filter({ hasText: /^Not signed in/ }).waitFor();
    await page.locator('#login').click();
    await status.filter({ hasText: /^Signed in/ }).waitFor({ timeout: 30_000 });
    await Promise.all(signIns);
  }
  const signedIn = await status.innerText();

  if (!deepLinkQuery) {
    await page.locator('#call').click();
    await result.filter({ hasText: '"sub"' }).waitFor();
    apiResult = await result.innerText();
  }

  const storage = await page.evaluate(() => ({
    local_storage: window.localStorage.length,
    session_storage: window.sessionStorage.length,
    cookies: document.cookie,
  }));

  await page.locator('#logout').click();
  await status.filter({ hasText: /^Not signed in/ }).waitFor();
  await result.filter({ hasText: 'Signed out' }).waitFor();
  const output = {
    signed_in: signedIn,
    api_result: apiResult,
    location_search: locationSearch,
    access_tokens: accessTokens,
    storage,
    signed_out: await status.innerText(),
    logout_result: await result.innerText(),
    page_errors: errors,
  };
  process.stdout.write(`${JSON.stringify(output)}\n`);
}

run(main, { overallMs: 60_000, onFinish: () => server?.close() });
