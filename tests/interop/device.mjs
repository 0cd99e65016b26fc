// Plays the user of a device login (RFC 8628 §3.3) in a real browser for latchkey's tests:
// headless Chromium, driven by playwright-core, at `oidc-provider`'s device pages.
//
//   node device.mjs <verification-uri> <user-code> [approve|abort|cancel] [login]
//
// It opens the verification URI: the plain `verification_uri`, whose page asks for the
// code (it types it and presses "Continue"), or `verification_uri_complete`, whose page
// posts the code by itself. On the confirmation page it checks that the code shown is
// <user-code> (case and punctuation ignored, as the provider compares codes), then:
//   approve (the default)  presses "Continue", signs in as <login> (default `alice`; any
//                          login and password are accepted) and approves the consent page,
//                          until the provider's "Sign-in Success" page;
//   abort                  presses "[ Abort ]" on the confirmation page;
//   cancel                 presses "Continue", signs in, and presses the consent page's
//                          "[ Cancel ]" link.
// A denial ends on the code input page again, with "The Sign-in request was interrupted";
// the device's next poll then gets `access_denied`. It prints one JSON line:
//
//   {"outcome": "approved" | "denied", "confirmed_code": "XXXX-XXXX", "final_url": "...",
//    "page_text": "...", "chromium": "..."}
//
// Chromium is `$LATCHKEY_CHROMIUM` or /usr/bin/chromium, started with a fresh profile that
// is removed afterwards, with no host name resolving (every address is an IP literal).
// Any failure (a code the provider refuses, another code on the confirmation page, an
// unexpected page), or 30 s in all, ends the script with a message on stderr (the page it
// was on and its text) and a non-zero exit code. Nothing is ever downloaded. Starting
// Chromium and ending the script are chromium.mjs's, shared with latchkey's other browser
// scripts.
import { chromiumVersion, launchChromium, run, sleep } from './chromium.mjs';

const USAGE = 'usage: node device.mjs <verification-uri> <user-code> [approve|abort|cancel] [login]';
const STEP_MS = 15_000;
const MODES = new Set(['approve', 'abort', 'cancel']);

const [verificationUri, userCode, mode = 'approve', login = 'alice', ...extra] = process.argv.slice(2);
if (!verificationUri || !userCode?.trim() || !MODES.has(mode) || !login.trim() || extra.length) {
  process.stderr.write(`${USAGE}\n`);
  process.exit(2);
}

/** A user code as oidc-provider compares them (lib/helpers/user_codes.js `normalize`). */
const normalize = (code) => code.toUpperCase().replace(/\W/g, '');

async function main() {
  const { page } = await launchChromium({ stepMs: STEP_MS });
  const version = await chromiumVersion(page);

  // Every page the tab loads; a click that submits a form waits for the next one.
  let loads = 0;
  page.on('domcontentloaded', () => {
    loads += 1;
  });
  async function submit(locator) {
    const before = loads;
    await locator.click();
    const until = Date.now() + STEP_MS;
    while (loads === before) {
      if (Date.now() > until) throw new Error('the click loaded no page');
      await sleep(25);
    }
  }

  // The pages of the flow, told apart by what only each of them has.
  const message = page.locator('p.red');
  const codeInput = page.locator('form#op\\.deviceInputForm input[name="user_code"]');
  const confirmForm = page.locator('form#op\\.deviceConfirmForm');
  const loginInput = page.locator('form input[name="login"]');
  const consent = page.locator('form:has(input[name="prompt"][value="consent"])');
  const success = page.locator('h1', { hasText: 'Sign-in Success' });
  const known = message.or(codeInput).or(confirmForm).or(loginInput).or(consent).or(success);

  await page.goto(verificationUri, { waitUntil: 'domcontentloaded' });
  let typed = false;
  let confirmedCode = '';
  let outcome;
  for (let step = 0; step < 8 && !outcome; step += 1) {
    // The complete URI's page has none of these: its script posts the code at once.
    await known.first().waitFor({ state: 'attached' });
    if (await success.count()) {
      outcome = 'approved';
    } else if (await message.count()) {
      const said = (await message.first().innerText()).trim();
      if (!typed || mode === 'approve' || !said.includes('interrupted')) {
        throw new Error(`the provider says: ${said}`);
      }
      outcome = 'denied';
    } else if (await codeInput.count()) {
      if (typed) throw new Error('the provider asks for the code again');
      typed = true;
      await codeInput.fill(userCode);
      await submit(page.locator('button[type="submit"][form="op.deviceInputForm"]'));
    } else if (await confirmForm.count()) {
      typed = true;
      confirmedCode = (await page.locator('code').first().innerText()).trim();
      if (normalize(confirmedCode) !== normalize(userCode)) {
        throw new Error(`the confirmation page shows ${confirmedCode}, not ${userCode}`);
      }
      await submit(mode === 'abort'
        ? page.locator('button[name="abort"][form="op.deviceConfirmForm"]')
        : page.locator('button[type="submit"][form="op.deviceConfirmForm"]:not([name])'));
    } else if (await loginInput.count()) {
      await loginInput.fill(login);
      await page.locator('input[name="password"]').fill('any password');
      await submit(page.locator('button[type="submit"]', { hasText: 'Sign-in' }));
    } else if (await consent.count()) {
      await submit(mode === 'cancel'
        ? page.locator('a', { hasText: 'Cancel' })
        : consent.locator('button[type="submit"]'));
    }
  }
  if (!outcome) throw new Error('too many pages');
  const wanted = mode === 'approve' ? 'approved' : 'denied';
  if (outcome !== wanted) throw new Error(`the login was ${outcome}, not ${wanted}`);
  const result = {
    outcome,
    confirmed_code: confirmedCode,
    final_url: page.url(),
    page_text: (await page.locator('body').innerText()).trim(),
    chromium: version,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

run(main, { overallMs: 30_000 });
