// What latchkey's browser scripts (browser.mjs, device.mjs, extension-ui.mjs) share: headless
// Chromium, driven by playwright-core, and the life of a script that drives it.
//
//   import { launchChromium, run, sleep } from './chromium.mjs';
//
//   async function main() {
//     const { context, page } = await launchChromium();
//     ...                                   // print the script's one JSON line
//   }
//   run(main, { overallMs: 30_000 });
//
// `launchChromium` starts `$LATCHKEY_CHROMIUM` or /usr/bin/chromium (never anything
// downloaded: no `playwright install`) with a fresh profile directory, the flags in `FLAGS`,
// and no host name resolving (`HERMETIC`: every address the tests use is an IP literal).
// `run` calls `main` once, and then ends the script: exit code 0 when it resolves; when it
// rejects, or when `overallMs` have passed, exit code 1 and a message on stderr, prefixed
// with the script's name, naming the page the browser was on and its text. Either way the
// browser is closed and its profile removed first.
//
// The module keeps one browser per script: the context and page `launchChromium` returns
// are the ones `run` closes and describes.
import { constants } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

/** Every one of these is on the browser's command line (`chromiumVersion` can check it). */
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
/**
 * Keeps the tests off the Internet: no host name resolves (oidc-provider's pages import a
 * web font from fonts.googleapis.com). Every address the tests use is an IP literal.
 */
const HERMETIC = '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE [::1]';

/** The script that runs, for messages: `browser.mjs`, … */
const SCRIPT = path.basename(process.argv[1] ?? 'chromium.mjs');
const executablePath = process.env.LATCHKEY_CHROMIUM ?? '/usr/bin/chromium';

let profile;
let context;
let page;
let cleanup;
let finishing = false;

/** A promise that resolves after `ms`; it keeps nothing alive. */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/**
 * Starts headless Chromium with a fresh profile (removed when the script ends) and returns
 * its `context`, whose actions time out after `stepMs`, and its first `page`.
 */
export async function launchChromium({ stepMs = 20_000 } = {}) {
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
  context.setDefaultTimeout(stepMs);
  page = context.pages()[0] ?? (await context.newPage());
  return { context, page };
}

/**
 * Chromium's version, read at chrome://version on `page`. With `checkFlags`, it also makes
 * sure that `FLAGS` and the fresh profile are really in effect, whatever playwright added or
 * dropped (playwright passes `--user-data-dir` itself, for the profile we give it).
 */
export async function chromiumVersion(page, { checkFlags = false } = {}) {
  await page.goto('chrome://version', { waitUntil: 'domcontentloaded' });
  const version = (await page.locator('#version').innerText()).trim();
  if (checkFlags) {
    const commandLine = (await page.locator('#command_line').innerText()).split(/\s+/);
    const wanted = [...FLAGS, `--user-data-dir=${profile}`];
    const missing = wanted.filter((flag) => !commandLine.includes(flag));
    if (missing.length) {
      throw new Error(`Chromium runs without ${missing.join(' ')}: ${commandLine.join(' ')}`);
    }
  }
  return version;
}

/**
 * Runs the script's `main` and ends the script (see the top of this file): at most
 * `overallMs` in all; `onFinish` is called just before the browser is closed.
 */
export function run(main, { overallMs = 30_000, onFinish } = {}) {
  cleanup = onFinish;
  const overall = setTimeout(
    () => finish(1, `gave up after ${overallMs / 1000} s (the page was ${currentUrl()})`),
    overallMs,
  );
  main().then(
    () => {
      clearTimeout(overall);
      return finish(0);
    },
    async (error) => finish(1, `${error?.stack ?? error}\n${await pageState()}`),
  );
}

/** Closes the browser, removes the profile and exits; only the first call counts. */
async function finish(code, message) {
  if (finishing) return;
  finishing = true;
  if (message) process.stderr.write(`${SCRIPT}: ${message}\n`);
  try {
    cleanup?.();
  } catch {
    // Exiting anyway.
  }
  if (context) {
    // A browser that will not close must not keep us alive: bounded.
    await Promise.race([context.close().catch(() => {}), sleep(5_000)]);
  }
  if (profile) await fs.rm(profile, { recursive: true, force: true }).catch(() => {});
  process.exit(code);
}

/** The URL of the browser's page, for failure messages. */
function currentUrl() {
  try {
    return page ? page.url() : '(no page yet)';
  } catch {
    return '(unknown)';
  }
}

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
