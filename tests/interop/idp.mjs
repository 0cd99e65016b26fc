// Starts the OpenID-certified `oidc-provider` on an ephemeral loopback port for latchkey's
// interop tests, and prints one JSON line: {"issuer": "...", "port": N}. With
// `LATCHKEY_IDP_PORT=N` in the environment it listens on port N instead (a test that starts
// its client first, offline, and the provider later on the port the client was given).
//
// Native clients share the loopback redirect URIs (any port, RFC 8252 §7.3):
//   basic-client   client_secret_basic, secret `s3cr3t+/:%&= ~!` (must be form-encoded)
//   post-client    client_secret_post,  secret `post-secret`
//   public-client  none (PKCE required)
//   jwt-client     private_key_jwt (RFC 7523) with the keys of tests/vectors/keys
//   par-client     none, its authorization requests pushed first (RFC 9126) or refused
//   es256-client, eddsa-client  public clients whose ID tokens are signed with ES256 and
//                  EdDSA (Ed25519); everyone else's with RS256
//   device-client  none, no redirect URI: the device authorization grant only (and refresh)
//   web-backend    client_secret_basic, secret `web-backend-secret`, for the web backend
//                  example (examples/web-backend): its access tokens live 5 seconds, so that
//                  its tests see them expire
//   cli-rotation   none (PKCE required), authorization code and refresh grants: its access
//                  tokens live 10 seconds, so that the command's tests (`latchkey token
//                  --fresh`) see them come within a refresh margin soon after a login
// Everyone else's access tokens live an hour.
// The development login and consent pages accept any user; the consent page's cancel
// button yields `error=access_denied`. Refresh tokens are issued to every client that has
// the grant and rotate on every refresh; the revocation endpoint (RFC 7009) is on; pages on
// loopback origins may call the userinfo endpoint (CORS). The process ends when its
// standard input closes, so a test that dies takes it along.
//
// Device authorization grant (RFC 8628): basic-client, post-client, public-client, jwt-client and
// device-client have `urn:ietf:params:oauth:grant-type:device_code` (es256-client and
// eddsa-client do not: their requests get 400 `invalid_request`). `POST /device/auth`
// (authenticated as at the token endpoint) answers `device_code`, `user_code` (`XXXX-XXXX`,
// consonants), `verification_uri` (`/device`), `verification_uri_complete`
// (`/device?user_code=…`) and `expires_in` 600, with no `interval` (so 5 s, the RFC's
// default); the token endpoint answers `authorization_pending` until the user has finished,
// never `slow_down`. The user's pages are oidc-provider's defaults: the code input page (a
// form with a hidden `xsrf` and `user_code`; the complete URI's page posts both by script),
// the confirmation page ("Continue", or "[ Abort ]", which posts `abort=yes`), then the
// development login and consent pages, then "Sign-in Success". Aborting there, or
// cancelling login or consent, shows the code input page with "The Sign-in request was
// interrupted", and the next poll gets `access_denied`. A device code is spent by the poll
// that gets tokens or `access_denied`; polling with it again gets `invalid_grant` and
// revokes every token of the grant (as a replayed authorization code does). Refresh tokens
// come with every device grant, `offline_access` or not.
//
// Key rotation: `POST /__test/rotate` switches to a second provider instance with the same
// issuer and clients but new signing keys (new `kid`s) and answers 204; from then on its
// key set (`/jwks`) lists only the new keys. A login is self-contained, so one that starts
// after the switch runs entirely on the new keys. (Both instances keep their state in
// oidc-provider's in-memory adapter, which is one per process: sessions, grants and
// device codes outlive the switch.)
//
// Token endpoint hooks, for tests of several processes sharing one login:
//   `GET /__test/grants` answers what the token endpoint (`POST /token`, both instances) was
//   asked, by grant type: {"refresh_token": {"requests": n, "ok": n, "error": n,
//   "dropped": n, "abandoned": n}, "authorization_code": {...}, ...}, with only the grant
//   types seen. Each request is counted once in `requests` when its body has arrived, and
//   once more, when it ends, in exactly one of `ok` (answered 2xx), `error` (answered
//   otherwise: `invalid_grant` for a rotated-out refresh token, say), `dropped` (its client
//   went away while it was held back, see below: oidc-provider never saw it) or `abandoned`
//   (its client went away while oidc-provider worked on it). A request without a
//   `grant_type` counts under "none".
//   `POST /__test/delay-token?ms=N` answers 204; from then on every token request is held
//   back N milliseconds (0: no longer) before oidc-provider sees it, so that concurrent
//   clients overlap. The delay in force when a request arrives is the one it gets. A client
//   that disconnects (or dies) while its request is held back has it dropped at once,
//   unprocessed: no refresh token rotates for a dead client.
import http from 'node:http';
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const server = http.createServer();
const wantedPort = Number(process.env.LATCHKEY_IDP_PORT ?? 0);
if (!Number.isSafeInteger(wantedPort) || wantedPort < 0 || wantedPort > 65535) {
  throw new Error(`LATCHKEY_IDP_PORT is not a port: ${process.env.LATCHKEY_IDP_PORT}`);
}
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(wantedPort, '127.0.0.1', resolve);
});
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const DEVICE_CODE = 'urn:ietf:params:oauth:grant-type:device_code';

const native = {
  application_type: 'native',
  redirect_uris: ['http://127.0.0.1/callback', 'http://[::1]/callback'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
};
/** `native`, also allowed the device authorization grant (RFC 8628). */
const nativeWithDevice = { ...native, grant_types: [...native.grant_types, DEVICE_CODE] };

/**
 * The public halves of the test keys in `tests/vectors/keys` (RSA, P-256, Ed25519): the
 * key set of `jwt-client`, whose client assertions any of them may sign. The `kid`s are
 * those of the JWK files, which name them in their assertions.
 */
const clientKeys = [
  ['rsa2048.pkcs8.pem', 'rsa-1'],
  ['p256.pkcs8.pem', 'ec-1'],
  ['ed25519.pkcs8.pem', 'ed-1'],
].map(([file, kid]) => {
  const pem = readFileSync(new URL(`../vectors/keys/${file}`, import.meta.url));
  return { ...createPublicKey(pem).export({ format: 'jwk' }), kid, use: 'sig' };
});

/** Private signing keys as JWKs: RSA (RS256), P-256 (ES256), Ed25519 (EdDSA). */
function signingKeys(prefix) {
  const jwk = (type, options) => generateKeyPairSync(type, options).privateKey.export({ format: 'jwk' });
  return [
    { ...jwk('rsa', { modulusLength: 2048 }), kid: `${prefix}-rsa`, use: 'sig', alg: 'RS256' },
    { ...jwk('ec', { namedCurve: 'P-256' }), kid: `${prefix}-ec`, use: 'sig', alg: 'ES256' },
    { ...jwk('ed25519'), kid: `${prefix}-ed`, use: 'sig', alg: 'EdDSA' },
  ];
}

const configuration = (keys) => ({
  clients: [
    { client_id: 'basic-client', client_secret: 's3cr3t+/:%&= ~!', token_endpoint_auth_method: 'client_secret_basic', ...nativeWithDevice },
    { client_id: 'post-client', client_secret: 'post-secret', token_endpoint_auth_method: 'client_secret_post', ...nativeWithDevice },
    { client_id: 'public-client', token_endpoint_auth_method: 'none', ...nativeWithDevice },
    // A public client whose authorization requests must be pushed first (RFC 9126).
    { client_id: 'par-client', token_endpoint_auth_method: 'none', require_pushed_authorization_requests: true, ...native },
    // No shared secret: client assertions signed with a key of `clientKeys` (RFC 7523).
    { client_id: 'jwt-client', token_endpoint_auth_method: 'private_key_jwt', jwks: { keys: clientKeys }, ...nativeWithDevice },
    // An input-constrained device's client: the device grant only, no redirect URI.
    {
      client_id: 'device-client',
      token_endpoint_auth_method: 'none',
      application_type: 'native',
      redirect_uris: [],
      grant_types: [DEVICE_CODE, 'refresh_token'],
      response_types: [],
    },
    { client_id: 'es256-client', token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'ES256', ...native },
    { client_id: 'eddsa-client', token_endpoint_auth_method: 'none', id_token_signed_response_alg: 'EdDSA', ...native },
    // A backend's confidential client. Registered as native only so that its loopback
    // redirect URI matches any port (RFC 8252 §7.3): its tests pick the port of the
    // backend's public URL at random. Its access tokens are short-lived (`ttl` below).
    { client_id: 'web-backend', client_secret: 'web-backend-secret', token_endpoint_auth_method: 'client_secret_basic', ...native },
    // The command's refresh tests: a public client whose access tokens are short-lived.
    { client_id: 'cli-rotation', token_endpoint_auth_method: 'none', ...native },
  ],
  ttl: {
    // oidc-provider's default (an hour) for everyone but the short-lived clients.
    AccessToken: function accessTokenTTL(ctx, token, client) {
      if (client?.clientId === 'web-backend') return 5;
      if (client?.clientId === 'cli-rotation') return 10;
      return token.resourceServer?.accessTokenTTL || 60 * 60;
    },
  },
  jwks: { keys },
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256', 'EdDSA'] },
  cookies: { keys: ['latchkey-interop-tests-only'] },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  // Whenever the client has the grant, whatever the scope: device grants too.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Every refresh rotates the refresh token; reusing a rotated-out one revokes the grant.
  rotateRefreshToken: true,
  features: {
    revocation: { enabled: true },
    // RFC 8628 with oidc-provider's default pages and codes (`base-20`, `****-****`).
    deviceFlow: { enabled: true },
    // RFC 9449, with a nonce required in every proof: each client's first proof is
    // answered `use_dpop_nonce`, which latchkey must answer once with the nonce.
    dPoP: {
      enabled: true,
      nonceSecret: Buffer.alloc(32, 'latchkey-interop-tests-only'),
      requireNonce: () => true,
    },
    // RFC 7662: what a token is bound to (`cnf.jkt`), for the DPoP tests.
    introspection: { enabled: true },
  },
  // The Docker Desktop extension example's UI (served on a loopback port in its test) calls
  // the userinfo endpoint from the page, as a UI calls an API with CORS.
  clientBasedCORS: (ctx, origin) => /^http:\/\/127\.0\.0\.1:\d+$/.test(origin),
});

const instances = ['a', 'b'].map((prefix) => {
  const provider = new Provider(issuer, configuration(signingKeys(prefix)));
  // Quiet: the tests read stdout.
  provider.on('server_error', (ctx, error) => process.stderr.write(`oidc-provider: ${error}\n`));
  return provider.callback();
});
let current = 0;

/** What the token endpoint was asked, by grant type (`GET /__test/grants`). */
const grants = {};
/** How long each token request is held back, in milliseconds (`POST /__test/delay-token`). */
let tokenDelay = 0;

/** The counters of `grantType`, created at zero. */
function grantCounts(grantType) {
  grants[grantType] ??= { requests: 0, ok: 0, error: 0, dropped: 0, abandoned: 0 };
  return grants[grantType];
}

/**
 * A token request: its body is read here (to learn its grant type) and handed to
 * oidc-provider as `req.body`, which its body parser takes when the stream is consumed.
 * Each request ends in exactly one of the counters (see the header).
 */
async function tokenRequest(req, res) {
  let gone = false;
  let wake = () => {};
  res.on('close', () => {
    gone = !res.writableFinished;
    wake();
  });
  const chunks = [];
  try {
    for await (const chunk of req) chunks.push(chunk);
  } catch {
    return; // The client went away before its request had arrived: not a request.
  }
  const body = Buffer.concat(chunks);
  const grantType = new URLSearchParams(body.toString('latin1')).get('grant_type') ?? 'none';
  const counts = grantCounts(grantType);
  counts.requests += 1;
  const delay = tokenDelay;
  if (delay > 0 && !gone) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, delay);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
  if (gone) {
    counts.dropped += 1;
    res.destroy();
    return;
  }
  res.on('close', () => {
    if (!res.writableFinished) counts.abandoned += 1;
    else if (res.statusCode >= 200 && res.statusCode < 300) counts.ok += 1;
    else counts.error += 1;
  });
  req.body = body;
  instances[current](req, res);
}

server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (req.method === 'POST' && url.pathname === '/__test/rotate') {
    current = 1;
    res.writeHead(204).end();
    return;
  }
  if (req.method === 'GET' && url.pathname === '/__test/grants') {
    const body = JSON.stringify(grants);
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  if (req.method === 'POST' && url.pathname === '/__test/delay-token') {
    const ms = Number(url.searchParams.get('ms'));
    if (!Number.isSafeInteger(ms) || ms < 0) {
      res.writeHead(400).end('ms takes a whole number of milliseconds');
      return;
    }
    tokenDelay = ms;
    res.writeHead(204).end();
    return;
  }
  if (req.method === 'POST' && url.pathname === '/token') {
    tokenRequest(req, res);
    return;
  }
  instances[current](req, res);
});

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
