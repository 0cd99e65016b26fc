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
// Starting Chromium and ending the script are chromium.mjs's, shared with latchkey's other
// browser scripts.
import { chromiumVersion, launchChromium, run, sleep } from './chromium.mjs';

const USAGE = 'usage: node browser.mjs <authorization-url> <redirect-uri-prefix> [deny]';

const [authorizationUrl, prefix, mode, ...extra] = process.argv.slice(2);
if (!authorizationUrl || !prefix || (mode !== undefined && mode !== 'deny') || extra.length) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}
const deny = mode === 'deny';

async function main() {
  const { page } = await launchChromium({ stepMs: 20_000 });
  // The flags must really be in effect, whatever playwright added or dropped.
  const version = await chromiumVersion(page, { checkFlags: true });

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

run(main, { overallMs: 30_000 });
