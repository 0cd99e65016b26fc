// Plays the user in a real browser for latchkey's end-to-end tests: headless Chromium,
// driven by playwright-core, signs in at `oidc-provider`'s development pages.
//
//   node browser.mjs <authorization-url> <redirect-uri-prefix> [deny]
//
// It opens the authorization URL, fills the login form (any login and password), then
// approves the consent page, or with `deny` presses its cancel link, and waits for the
// browser's request to latchkey's callback (the first URL that starts with the prefix).
// It prints one JSON line:
//
//   {"status": 303, "location": "...", "final_url": "...", "page_text": "...",
//    "request_headers": {...}, "location_failure": "...", "chromium": "..."}
//
// `status` and `location` are those of latchkey's answer to the callback; `page_text` is
// the visible text of the page the browser ends on when latchkey answered with a page
// (empty after a redirect); `request_headers` are the headers Chromium sent to the
// callback; `location_failure` is how Chromium failed to follow the redirect, if it did
// (a 303 to an unregistered scheme such as docker-desktop:// ends in net::ERR_ABORTED).
//
// Chromium is `$LATCHKEY_CHROMIUM` or /usr/bin/chromium, started with a fresh profile that
// is removed afterwards. Any failure, or 30 s in all, ends the script with a message on
// stderr and a non-zero exit code. Nothing is ever downloaded (no `playwright install`).
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

const USAGE = 'usage: node browser.mjs <authorization-url> <redirect-uri-prefix> [deny]';
const OVERALL_MS = 30_000;
// Every one of these must be on the browser's command line (checked at chrome://version);
// playwright adds --user-data-dir itself, for the fresh profile directory we give it.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// Keeps the test off the Internet: no host name resolves (oidc-provider's pages import a
// web font from fonts.googleapis.com). Every address the test uses is an IP literal.
const HERMETIC = '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE [::1]';

const [authorizationUrl, prefix, mode, ...extra] = process.argv.slice(2);
if (!authorizationUrl || !prefix || (mode !== undefined && mode !== 'deny') || extra.length) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const deny = mode === 'deny';
const executablePath = process.env.LATCHKEY_CHROMIUM ?? '/usr/bin/chromium';

let profile;
let context;
let finishing = false;

/** Closes the browser, removes the profile and exits; only the first call counts. */
async function finish(code, message) {
  if (finishing) return;
  finishing = true;
  if (message) process.stderr.write(`browser.mjs: ${message}\n`);
  if (context) {
    // A browser that will not close must not keep us alive: bounded.
    await Promise.race([context.close().catch(() => {}), sleep(5_000)]);
  }
  if (profile) await fs.rm(profile, { recursive: true, force: true }).catch(() => {});
  process.exit(code);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

const overall = setTimeout(
  () => finish(1, `gave up after ${OVERALL_MS / 1000} s (the page was ${currentUrl()})`),
  OVERALL_MS,
);

let page;
function currentUrl() {
  try {
    return page ? page.url() : '(no page yet)';
  } catch {
    return '(unknown)';
  }
}

async function main() {
  try {
    await fs.access(executablePath, constants.X_OK);
  } catch {
    throw new Error(
      `no Chromium at ${executablePath} (Debian: apt-get install -y chromium; ` +
        'or set LATCHKEY_CHROMIUM to a Chromium binary)',
    );
  }
  profile = await fs.mkdtemp(path.join(os.tmpdir(), 'latchkey-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: [...FLAGS, HERMETIC],
    timeout: 20_000,
  });
  context.setDefaultTimeout(20_000);
  page = context.pages()[0] ?? (await context.newPage());

  // The flags must really be in effect, whatever playwright added or dropped.
  await page.goto('chrome://version', { waitUntil: 'domcontentloaded' });
  const commandLine = (await page.locator('#command_line').innerText()).split(/\s+/);
  const version = (await page.locator('#version').innerText()).trim();
  const wanted = [...FLAGS, `--user-data-dir=${profile}`];
  const missing = wanted.filter((flag) => !commandLine.includes(flag));
  if (missing.length) {
    throw new Error(`Chromium runs without ${missing.join(' ')}: ${commandLine.join(' ')}`);
  }

  // Every attempt to follow latchkey's redirect, and how it failed (if it did).
  const failures = new Map();
  page.on('requestfailed', (request) => failures.set(request.url(), request.failure()?.errorText));
  const callback = page.waitForResponse((response) => response.url().startsWith(prefix), {
    timeout: 25_000,
  });
  callback.catch(() => {}); // Reported where it is awaited.

  await page.goto(authorizationUrl, { waitUntil: 'domcontentloaded' });
  await page.locator('input[name="login"]').fill('alice');
  await page.locator('input[name="password"]').fill('any password');
  await page.locator('button[type="submit"]', { hasText: 'Sign-in' }).click();

  // The consent page: "Continue" approves, the layout's "[ Cancel ]" link aborts.
  const approve = page.locator('button[type="submit"]', { hasText: 'Continue' });
  await approve.waitFor({ state: 'visible' });
  if (deny) {
    await page.locator('a', { hasText: 'Cancel' }).click();
  } else {
    await approve.click();
  }

  const response = await callback;
  const status = response.status();
  const location = (await response.headerValue('location')) ?? null;
  const requestHeaders = await response.request().allHeaders();
  let pageText = '';
  let locationFailure = null;
  if (status >= 300 && status < 400) {
    // The browser leaves for `location`; a scheme nothing handles fails (net::ERR_ABORTED)
    // without an error page or a navigation. Wait a little to see how it ends.
    const until = Date.now() + 3_000;
    while (location && !failures.has(location) && Date.now() < until) await sleep(50);
    locationFailure = (location && failures.get(location)) ?? null;
  } else {
    await page.waitForURL((url) => url.href.startsWith(prefix), { waitUntil: 'domcontentloaded' });
    pageText = await page.locator('body').innerText();
  }
  const result = {
    status,
    location,
    final_url: page.url(),
    page_text: pageText,
    request_headers: requestHeaders,
    location_failure: locationFailure,
    chromium: version,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main().then(
  () => {
    clearTimeout(overall);
    return finish(0);
  },
  async (error) => finish(1, `${error?.stack ?? error}\n${await pageState()}`),
);

/** Where the browser is and what it shows, for failure messages. */
async function pageState() {
  let text = '';
  try {
    text = await Promise.race([page.locator('body').innerText({ timeout: 2_000 }), sleep(2_500)]);
  } catch {
    // No page, or no body: the URL says enough.
  }
  return `the page was ${currentUrl()}:\n${(text ?? '').slice(0, 2_000)}`;
}
