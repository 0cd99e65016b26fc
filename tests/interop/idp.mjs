// Starts the OpenID-certified `oidc-provider` on an ephemeral loopback port for latchkey's
// interop tests, and prints one JSON line: {"issuer": "...", "port": N}.
//
// Three native clients share the loopback redirect URIs (any port, RFC 8252 §7.3):
//   basic-client   client_secret_basic, secret `s3cr3t+/:%&= ~!` (must be form-encoded)
//   post-client    client_secret_post,  secret `post-secret`
//   public-client  none (PKCE required)
// The development login and consent pages accept any user; the consent page's cancel
// button yields `error=access_denied`. Refresh tokens are issued to every client that has
// the grant and rotate on every refresh; the revocation endpoint (RFC 7009) is on; pages on
// loopback origins may call the userinfo endpoint (CORS). The process ends when its
// standard input closes, so a test that dies takes it along.
import http from 'node:http';
import Provider from 'oidc-provider';

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const native = {
  application_type: 'native',
  redirect_uris: ['http://127.0.0.1/callback', 'http://[::1]/callback'],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
};

const provider = new Provider(issuer, {
  clients: [
    { client_id: 'basic-client', client_secret: 's3cr3t+/:%&= ~!', token_endpoint_auth_method: 'client_secret_basic', ...native },
    { client_id: 'post-client', client_secret: 'post-secret', token_endpoint_auth_method: 'client_secret_post', ...native },
    { client_id: 'public-client', token_endpoint_auth_method: 'none', ...native },
  ],
  cookies: { keys: ['latchkey-interop-tests-only'] },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  // Every refresh rotates the refresh token; reusing a rotated-out one revokes the grant.
  rotateRefreshToken: true,
  features: { revocation: { enabled: true } },
  // The Docker Desktop extension example's UI (served on a loopback port in its test) calls
  // the userinfo endpoint from the page, as a UI calls an API with CORS.
  clientBasedCORS: (ctx, origin) => /^http:\/\/127\.0\.0\.1:\d+$/.test(origin),
});
// Quiet: the tests read stdout.
provider.on('server_error', (ctx, error) => process.stderr.write(`oidc-provider: ${error}\n`));
server.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
