//! Provider descriptions for well-known identity providers: endpoints, issuer, revocation
//! endpoint and the parameters their quirks need. Each returns a [`ProviderBuilder`] to
//! finish with the client's settings (secret, scopes) and [`build`](ProviderBuilder::build).
//!
//! Every function says what to register at the provider. The redirect URI latchkey sends is
//! the one in [`ConfigBuilder::redirect_uri`](crate::ConfigBuilder::redirect_uri);
//! register exactly that unless the provider says loopback ports are free.
//!
//! Every preset but GitHub's (which has no ID tokens) also knows where the provider
//! publishes its signing keys, which algorithms it signs ID tokens with, and its UserInfo
//! endpoint: with `openid` in the scopes and a crypto provider, logins verify who signed
//! in out of the box ([`crate::oidc`]).
//!
//! When a provider publishes its metadata, [`Discovery`](crate::Discovery) finds the same
//! things from its issuer alone.
//!
//! What each provider's own documentation says it offers of `private_key_jwt`
//! ([`ProviderBuilder::client_key`]), DPoP ([`ProviderBuilder::dpop`]) and PAR
//! ([`ProviderBuilder::push_authorization_requests`]) for the clients these presets are
//! for; latchkey's tests exercise all three against oidc-provider only:
//!
//! | preset | `private_key_jwt` | DPoP | PAR |
//! |---|---|---|---|
//! | Google | no (desktop clients have a secret) | no | no |
//! | GitHub | no | no | no |
//! | Microsoft Entra | certificate credentials: the key [`with_certificate`](crate::keys::PrivateKey::with_certificate) (assertions then name it, `x5t#S256`) and signing `PS256`; the preset names the token endpoint as the audience | no | no |
//! | Okta | yes; the preset names the endpoint as the audience | yes | yes |
//! | Auth0 | yes | yes (on plans that include it) | yes (on plans that include it) |
//! | Keycloak | yes ("signed JWT" client authenticator) | yes (recent versions) | yes |
//! | GitLab | no | no | no |
//!
//! ```
//! # use latchkey::oidc::{Algorithm, CryptoProvider, PublicKey, SignatureError};
//! # #[derive(Debug)]
//! # struct Ring;
//! # impl CryptoProvider for Ring {
//! #     fn verify(&self, _: Algorithm, _: &PublicKey, _: &[u8], _: &[u8]) -> Result<(), SignatureError> {
//! #         Err(SignatureError::Unsupported)
//! #     }
//! # }
//! # let ring = || std::sync::Arc::new(Ring);
//! use latchkey::presets;
//! use secrecy::SecretString;
//!
//! let google = presets::google("1234.apps.googleusercontent.com")
//!     .client_secret(SecretString::from("GOCSPX-…"))
//!     .scopes(["openid", "email"])
//!     .crypto(ring()) // latchkey_io::crypto::ring() with the drivers
//!     .build()?;
//! assert_eq!(google.issuer(), Some("https://accounts.google.com"));
//! let policy = google.id_token_policy().expect("openid is requested");
//! assert_eq!(policy.jwks_uri(), "https://www.googleapis.com/oauth2/v3/certs");
//! # Ok::<(), latchkey::ConfigError>(())
//! ```

use crate::config::{AssertionAudience, Provider, ProviderBuilder};
use crate::oidc::Algorithm;

/// Google. Register an OAuth client of type **Desktop app** (Google Cloud console, "APIs &
/// Services", "Credentials"); desktop clients take any loopback redirect
/// (`http://127.0.0.1:PORT/…`) without registering it. Google gives desktop clients a
/// secret it requires alongside PKCE, so set it with
/// [`client_secret`](ProviderBuilder::client_secret). Asks for a refresh token
/// (`access_type=offline`); add `.param("prompt", "consent")` to get one again from a
/// user who consented before. Google may grant more scopes than asked (it adds `openid`);
/// the difference is reported, not fatal. Device logins need a client of the type "TVs and
/// Limited Input devices", with its own id and secret.
pub fn google(client_id: impl Into<String>) -> ProviderBuilder {
    Provider::builder(
        "https://accounts.google.com/o/oauth2/v2/auth",
        "https://oauth2.googleapis.com/token",
        client_id,
    )
    .issuer("https://accounts.google.com")
    .revocation_endpoint("https://oauth2.googleapis.com/revoke")
    .device_authorization_endpoint("https://oauth2.googleapis.com/device/code")
    .jwks_uri("https://www.googleapis.com/oauth2/v3/certs")
    .userinfo_endpoint("https://openidconnect.googleapis.com/v1/userinfo")
    .id_token_algorithms([Algorithm::RS256])
    .param("access_type", "offline")
}

/// GitHub. Register an **OAuth App** (Settings, "Developer settings", "OAuth Apps") with
/// the callback URL `http://127.0.0.1/callback`; GitHub lets a loopback redirect use any
/// port. OAuth Apps authenticate with their client secret (PKCE is sent too). GitHub has no
/// issuer and no RFC 7009 revocation endpoint; its errors come with HTTP 200 and its scopes
/// are comma-separated, both of which latchkey reads. Device logins need "Enable Device
/// Flow" ticked in the app's settings; they need no secret.
pub fn github(client_id: impl Into<String>) -> ProviderBuilder {
    Provider::builder(
        "https://github.com/login/oauth/authorize",
        "https://github.com/login/oauth/access_token",
        client_id,
    )
    .device_authorization_endpoint("https://github.com/login/device/code")
}

/// Microsoft Entra ID, for `tenant`: a tenant id or domain, or `organizations`, `common`
/// or `consumers` for multi-tenant apps. Register an app ("App registrations") with the
/// platform **Mobile and desktop applications** and the redirect URI `http://localhost`
/// followed by your path (Entra ignores the port of a `localhost` redirect); it is a public
/// client, so no secret. Ask for `offline_access` to get a refresh token.
///
/// Entra's issuer names the tenant by its id (a GUID), whatever was passed here: for a
/// tenant given by id the issuer is exact; otherwise it is the template
/// `https://login.microsoftonline.com/{tenantid}/v2.0` with the multi-tenant opt-in
/// ([`tenant_issuer`](ProviderBuilder::tenant_issuer)), so that an ID token's `iss` must
/// name its own `tid`. Its authorization responses carry no `iss`.
pub fn entra(tenant: &str, client_id: impl Into<String>) -> ProviderBuilder {
    let host = "https://login.microsoftonline.com";
    let base = format!("{host}/{tenant}/oauth2/v2.0");
    let by_id = tenant.len() == 36
        && tenant.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        });
    let issuer = match by_id {
        true => format!("{host}/{tenant}/v2.0"),
        false => format!("{host}/{{tenantid}}/v2.0"),
    };
    Provider::builder(
        format!("{base}/authorize"),
        format!("{base}/token"),
        client_id,
    )
    .issuer(issuer)
    .tenant_issuer(!by_id)
    .device_authorization_endpoint(format!("{base}/devicecode"))
    .jwks_uri(format!("{host}/{tenant}/discovery/v2.0/keys"))
    .userinfo_endpoint("https://graph.microsoft.com/oidc/userinfo")
    .id_token_algorithms([Algorithm::RS256])
    // Entra wants its token endpoint as a client assertion's audience.
    .assertion_audience(AssertionAudience::Endpoint)
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
    .device_authorization_endpoint(format!("{base}/v1/device/authorize"))
    .jwks_uri(format!("{base}/v1/keys"))
    .userinfo_endpoint(format!("{base}/v1/userinfo"))
    .id_token_algorithms([Algorithm::RS256])
    // Okta wants the endpoint's URL as a client assertion's audience.
    .assertion_audience(AssertionAudience::Endpoint)
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
    .device_authorization_endpoint(format!("https://{domain}/oauth/device/code"))
    .jwks_uri(format!("https://{domain}/.well-known/jwks.json"))
    .userinfo_endpoint(format!("https://{domain}/userinfo"))
    // RS256 by default; an application set to HS256 signs with its client secret, which
    // latchkey refuses (S46).
    .id_token_algorithms([Algorithm::RS256, Algorithm::PS256])
    // Auth0's issuer ends with a slash.
    .issuer(format!("https://{domain}/"))
}

/// Keycloak at `base_url` (such as `https://sso.example.com`; add `/auth` for versions
/// before 17), realm `realm`. Create a client with "Client authentication" off (a public
/// client) and the standard flow on, and a valid redirect URI such as
/// `http://127.0.0.1:8080/callback`. Keycloak sends `iss` (RFC 9207) naming the hostname it
/// is configured with, which must be this `base_url`. A realm signs ID tokens with RS256
/// unless set otherwise; every asymmetric algorithm it offers (but ES512) is accepted, with
/// keys from the realm's own key set.
pub fn keycloak(base_url: &str, realm: &str, client_id: impl Into<String>) -> ProviderBuilder {
    let base = format!("{}/realms/{realm}", base_url.trim_end_matches('/'));
    Provider::builder(
        format!("{base}/protocol/openid-connect/auth"),
        format!("{base}/protocol/openid-connect/token"),
        client_id,
    )
    .revocation_endpoint(format!("{base}/protocol/openid-connect/revoke"))
    .device_authorization_endpoint(format!("{base}/protocol/openid-connect/auth/device"))
    .jwks_uri(format!("{base}/protocol/openid-connect/certs"))
    .userinfo_endpoint(format!("{base}/protocol/openid-connect/userinfo"))
    .id_token_algorithms(Algorithm::ALL)
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
    .device_authorization_endpoint(format!("{base}/oauth/authorize_device"))
    .jwks_uri(format!("{base}/oauth/discovery/keys"))
    .userinfo_endpoint(format!("{base}/oauth/userinfo"))
    .id_token_algorithms([Algorithm::RS256])
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
                    Some("https://login.microsoftonline.com/{tenantid}/v2.0"),
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
    fn every_preset_knows_its_device_authorization_endpoint() {
        let cases = [
            (google("id"), "https://oauth2.googleapis.com/device/code"),
            (github("id"), "https://github.com/login/device/code"),
            (
                entra("contoso.onmicrosoft.com", "id"),
                "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode",
            ),
            (
                okta("dev-1.okta.com", "id"),
                "https://dev-1.okta.com/oauth2/default/v1/device/authorize",
            ),
            (
                auth0("example.us.auth0.com", "id"),
                "https://example.us.auth0.com/oauth/device/code",
            ),
            (
                keycloak("https://sso.example.com", "dev", "id"),
                "https://sso.example.com/realms/dev/protocol/openid-connect/auth/device",
            ),
            (gitlab("id"), "https://gitlab.com/oauth/authorize_device"),
        ];
        for (builder, expected) in cases {
            let provider = builder.build().expect("a preset without openid builds");
            assert_eq!(
                provider
                    .device_authorization_endpoint()
                    .map(ToString::to_string)
                    .as_deref(),
                Some(expected)
            );
        }
    }

    #[test]
    fn every_preset_but_github_verifies_id_tokens_with_its_own_keys() {
        let crypto: std::sync::Arc<dyn crate::oidc::CryptoProvider> =
            std::sync::Arc::new(crate::oidc::tests::Accept);
        let cases = [
            (google("id"), "https://www.googleapis.com/oauth2/v3/certs"),
            (
                entra("common", "id"),
                "https://login.microsoftonline.com/common/discovery/v2.0/keys",
            ),
            (
                okta("dev-1.okta.com", "id"),
                "https://dev-1.okta.com/oauth2/default/v1/keys",
            ),
            (
                auth0("example.us.auth0.com", "id"),
                "https://example.us.auth0.com/.well-known/jwks.json",
            ),
            (
                keycloak("https://sso.example.com", "dev", "id"),
                "https://sso.example.com/realms/dev/protocol/openid-connect/certs",
            ),
            (gitlab("id"), "https://gitlab.com/oauth/discovery/keys"),
        ];
        for (builder, jwks_uri) in cases {
            let provider = builder
                .scope("openid")
                .crypto(crypto.clone())
                .build()
                .expect("a valid preset");
            let policy = provider.id_token_policy().expect("verifies");
            assert_eq!(policy.jwks_uri(), jwks_uri);
            assert!(policy.algorithms().contains(&Algorithm::RS256));
            assert!(provider.userinfo_endpoint().is_some());
        }
        assert_eq!(
            github("id").scope("openid").build().err(),
            Some(crate::ConfigError::IdTokenVerification("an issuer")),
            "GitHub has no ID tokens"
        );
    }

    #[test]
    fn entra_pins_a_tenant_given_by_id_and_templates_the_others() {
        let crypto: std::sync::Arc<dyn crate::oidc::CryptoProvider> =
            std::sync::Arc::new(crate::oidc::tests::Accept);
        let by_id = entra("9188040d-6c67-4c5b-b112-36a304b66dad", "id")
            .build()
            .unwrap();
        assert_eq!(
            by_id.issuer(),
            Some("https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0")
        );
        for tenant in [
            "common",
            "organizations",
            "contoso.onmicrosoft.com",
            "9188040d6c674c5bb11236a304b66dad",
        ] {
            let provider = entra(tenant, "id")
                .scope("openid")
                .crypto(crypto.clone())
                .build()
                .unwrap();
            assert_eq!(
                provider.issuer(),
                Some("https://login.microsoftonline.com/{tenantid}/v2.0")
            );
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
