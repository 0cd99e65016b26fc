//! Provider descriptions for well-known identity providers: endpoints, issuer, revocation
//! endpoint and the parameters their quirks need. Each returns a [`ProviderBuilder`] to
//! finish with the client's settings (secret, scopes) and [`build`](ProviderBuilder::build).
//!
//! Every function says what to register at the provider. The redirect URI latchkey sends is
//! the one in [`ConfigBuilder::redirect_uri`](crate::ConfigBuilder::redirect_uri);
//! register exactly that unless the provider says loopback ports are free.
//!
//! When a provider publishes its metadata, [`Discovery`](crate::Discovery) finds the same
//! things from its issuer alone.
//!
//! ```
//! use latchkey::presets;
//! use secrecy::SecretString;
//!
//! let google = presets::google("1234.apps.googleusercontent.com")
//!     .client_secret(SecretString::from("GOCSPX-…"))
//!     .scopes(["openid", "email"])
//!     .build()?;
//! assert_eq!(google.issuer(), Some("https://accounts.google.com"));
//! # Ok::<(), latchkey::ConfigError>(())
//! ```

use crate::config::{Provider, ProviderBuilder};

/// Google. Register an OAuth client of type **Desktop app** (Google Cloud console, "APIs &
/// Services", "Credentials"); desktop clients take any loopback redirect
/// (`http://127.0.0.1:PORT/…`) without registering it. Google gives desktop clients a
/// secret it requires alongside PKCE, so set it with
/// [`client_secret`](ProviderBuilder::client_secret). Asks for a refresh token
/// (`access_type=offline`); add `.param("prompt", "consent")` to get one again from a
/// user who consented before. Google may grant more scopes than asked (it adds `openid`);
/// the difference is reported, not fatal.
pub fn google(client_id: impl Into<String>) -> ProviderBuilder {
    Provider::builder(
        "https://accounts.google.com/o/oauth2/v2/auth",
        "https://oauth2.googleapis.com/token",
        client_id,
    )
    .issuer("https://accounts.google.com")
    .revocation_endpoint("https://oauth2.googleapis.com/revoke")
    .param("access_type", "offline")
}

/// GitHub. Register an **OAuth App** (Settings, "Developer settings", "OAuth Apps") with
/// the callback URL `http://127.0.0.1/callback`; GitHub lets a loopback redirect use any
/// port. OAuth Apps authenticate with their client secret (PKCE is sent too). GitHub has no
/// issuer and no RFC 7009 revocation endpoint; its errors come with HTTP 200 and its scopes
/// are comma-separated, both of which latchkey reads.
pub fn github(client_id: impl Into<String>) -> ProviderBuilder {
    Provider::builder(
        "https://github.com/login/oauth/authorize",
        "https://github.com/login/oauth/access_token",
        client_id,
    )
}

/// Microsoft Entra ID, for `tenant`: a tenant id or domain, or `organizations`, `common`
/// or `consumers` for multi-tenant apps. Register an app ("App registrations") with the
/// platform **Mobile and desktop applications** and the redirect URI `http://localhost`
/// followed by your path (Entra ignores the port of a `localhost` redirect); it is a public
/// client, so no secret. Ask for `offline_access` to get a refresh token. No issuer is set:
/// Entra's names the tenant by id, whatever was passed here, and its authorization
/// responses carry none.
pub fn entra(tenant: &str, client_id: impl Into<String>) -> ProviderBuilder {
    let base = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0");
    Provider::builder(
        format!("{base}/authorize"),
        format!("{base}/token"),
        client_id,
    )
}

/// Okta, at `domain` (such as `dev-123456.okta.com`), through the org's `default`
/// authorization server. Register an **OIDC Native Application** with the exact sign-in
/// redirect URI, port included (Okta compares it exactly), for example
/// `http://localhost:8080/callback`, and the Refresh Token grant if you want one; ask for
/// `openid` and `offline_access`.
pub fn okta(domain: &str, client_id: impl Into<String>) -> ProviderBuilder {
    let base = format!("https://{domain}/oauth2/default");
    Provider::builder(
        format!("{base}/v1/authorize"),
        format!("{base}/v1/token"),
        client_id,
    )
    .revocation_endpoint(format!("{base}/v1/revoke"))
    .issuer(base)
}

/// Auth0, at `domain` (such as `example.us.auth0.com`, or your custom domain). Register a
/// **Native** application and put the redirect URI, such as
/// `http://127.0.0.1:8080/callback`, in "Allowed Callback URLs"; for a refresh token ask
/// for `offline_access` and allow offline access on the API.
pub fn auth0(domain: &str, client_id: impl Into<String>) -> ProviderBuilder {
    Provider::builder(
        format!("https://{domain}/authorize"),
        format!("https://{domain}/oauth/token"),
        client_id,
    )
    .revocation_endpoint(format!("https://{domain}/oauth/revoke"))
    // Auth0's issuer ends with a slash.
    .issuer(format!("https://{domain}/"))
}

/// Keycloak at `base_url` (such as `https://sso.example.com`; add `/auth` for versions
/// before 17), realm `realm`. Create a client with "Client authentication" off (a public
/// client) and the standard flow on, and a valid redirect URI such as
/// `http://127.0.0.1:8080/callback`. Keycloak sends `iss` (RFC 9207) naming the hostname it
/// is configured with, which must be this `base_url`.
pub fn keycloak(base_url: &str, realm: &str, client_id: impl Into<String>) -> ProviderBuilder {
    let base = format!("{}/realms/{realm}", base_url.trim_end_matches('/'));
    Provider::builder(
        format!("{base}/protocol/openid-connect/auth"),
        format!("{base}/protocol/openid-connect/token"),
        client_id,
    )
    .revocation_endpoint(format!("{base}/protocol/openid-connect/revoke"))
    .issuer(base)
}

/// GitLab.com; [`gitlab_at`] for a self-managed instance. Register an application (user
/// or group settings, "Applications") with the redirect URI, such as
/// `http://127.0.0.1:8080/callback`; untick "Confidential" for a public client (PKCE
/// only), or keep it and set the secret. Refresh tokens come with every grant.
pub fn gitlab(client_id: impl Into<String>) -> ProviderBuilder {
    gitlab_at("https://gitlab.com", client_id)
}

/// A self-managed GitLab at `base_url`; see [`gitlab`].
pub fn gitlab_at(base_url: &str, client_id: impl Into<String>) -> ProviderBuilder {
    let base = base_url.trim_end_matches('/');
    Provider::builder(
        format!("{base}/oauth/authorize"),
        format!("{base}/oauth/token"),
        client_id,
    )
    .revocation_endpoint(format!("{base}/oauth/revoke"))
    .issuer(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (authorization endpoint prefix, token endpoint, issuer, revocation endpoint).
    fn described(builder: ProviderBuilder) -> (String, String, Option<String>, Option<String>) {
        let provider = builder.build().expect("a valid preset");
        let authorize = provider
            .inner()
            .authorize_prefix
            .split('?')
            .next()
            .unwrap_or_default()
            .to_owned();
        (
            authorize,
            provider.token_endpoint().to_string(),
            provider.issuer().map(str::to_owned),
            provider.revocation_endpoint().map(ToString::to_string),
        )
    }

    fn owned(
        values: (&str, &str, Option<&str>, Option<&str>),
    ) -> (String, String, Option<String>, Option<String>) {
        (
            values.0.to_owned(),
            values.1.to_owned(),
            values.2.map(str::to_owned),
            values.3.map(str::to_owned),
        )
    }

    #[test]
    fn every_preset_builds_with_its_providers_endpoints() {
        let cases = [
            (
                google("id"),
                (
                    "https://accounts.google.com/o/oauth2/v2/auth",
                    "https://oauth2.googleapis.com/token",
                    Some("https://accounts.google.com"),
                    Some("https://oauth2.googleapis.com/revoke"),
                ),
            ),
            (
                github("id"),
                (
                    "https://github.com/login/oauth/authorize",
                    "https://github.com/login/oauth/access_token",
                    None,
                    None,
                ),
            ),
            (
                entra("contoso.onmicrosoft.com", "id"),
                (
                    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
                    "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
                    None,
                    None,
                ),
            ),
            (
                okta("dev-1.okta.com", "id"),
                (
                    "https://dev-1.okta.com/oauth2/default/v1/authorize",
                    "https://dev-1.okta.com/oauth2/default/v1/token",
                    Some("https://dev-1.okta.com/oauth2/default"),
                    Some("https://dev-1.okta.com/oauth2/default/v1/revoke"),
                ),
            ),
            (
                auth0("example.us.auth0.com", "id"),
                (
                    "https://example.us.auth0.com/authorize",
                    "https://example.us.auth0.com/oauth/token",
                    Some("https://example.us.auth0.com/"),
                    Some("https://example.us.auth0.com/oauth/revoke"),
                ),
            ),
            (
                keycloak("https://sso.example.com/", "dev", "id"),
                (
                    "https://sso.example.com/realms/dev/protocol/openid-connect/auth",
                    "https://sso.example.com/realms/dev/protocol/openid-connect/token",
                    Some("https://sso.example.com/realms/dev"),
                    Some("https://sso.example.com/realms/dev/protocol/openid-connect/revoke"),
                ),
            ),
            (
                gitlab("id"),
                (
                    "https://gitlab.com/oauth/authorize",
                    "https://gitlab.com/oauth/token",
                    Some("https://gitlab.com"),
                    Some("https://gitlab.com/oauth/revoke"),
                ),
            ),
        ];
        for (builder, expected) in cases {
            assert_eq!(described(builder), owned(expected));
        }
    }

    #[test]
    fn google_asks_for_a_refresh_token() {
        let provider = google("id").build().expect("valid");
        assert!(
            provider
                .inner()
                .authorize_prefix
                .contains("&access_type=offline"),
            "{}",
            provider.inner().authorize_prefix
        );
    }

    #[test]
    fn a_bad_domain_is_a_configuration_error() {
        assert!(okta("dev 1.okta.com", "id").build().is_err());
        assert!(
            keycloak("ftp://sso.example.com", "dev", "id")
                .build()
                .is_err()
        );
    }
}
