//! [`ProviderRecord`]: what a later run needs to refresh or revoke stored tokens.

use latchkey::oidc::Algorithm;
use latchkey::{AssertionAudience, ClientAuth, Provider, ProviderBuilder};
use serde_json::{Value, json};

/// The settings of a provider registration that are not secret: enough to refresh or revoke
/// the tokens it issued in a later run, given the client secret again when the client has
/// one. [`FileStore::save_provider`](super::FileStore::save_provider) keeps it next to the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The issuer identifier, when known.
    pub issuer: Option<String>,
    /// The authorization endpoint.
    pub authorization_endpoint: String,
    /// The token endpoint.
    pub token_endpoint: String,
    /// The revocation endpoint (RFC 7009), when known.
    pub revocation_endpoint: Option<String>,
    /// The client id.
    pub client_id: String,
    /// How the client authenticates; anything but [`ClientAuth::None`] needs the secret.
    pub client_auth: ClientAuth,
    /// What a `private_key_jwt` client's assertions name as their audience. Records
    /// written before it was kept say [`AssertionAudience::Issuer`].
    pub assertion_audience: AssertionAudience,
    /// The scopes requested at login.
    pub scopes: Vec<String>,
    /// The APIs tokens were asked for (RFC 8707); refreshes ask for the same.
    pub resources: Vec<String>,
    /// Whether ID tokens were verified at login; refreshed ones are then verified too.
    /// Records written before verification existed say `false`.
    pub verify_id_token: bool,
    /// The key set URI (`jwks_uri`), when known.
    pub jwks_uri: Option<String>,
    /// The UserInfo endpoint, when known.
    pub userinfo_endpoint: Option<String>,
    /// The ID token signing algorithms accepted, by name; empty for the default.
    pub id_token_algorithms: Vec<String>,
    /// Whether the issuer is a `{tenantid}` template.
    pub tenant_issuer: bool,
}

impl ProviderRecord {
    /// The record of `provider`'s settings (its client secret left out).
    pub fn of(provider: &Provider) -> ProviderRecord {
        ProviderRecord {
            issuer: provider.issuer().map(str::to_owned),
            authorization_endpoint: provider.authorization_endpoint().to_owned(),
            token_endpoint: provider.token_endpoint().to_string(),
            revocation_endpoint: provider.revocation_endpoint().map(ToString::to_string),
            client_id: provider.client_id().to_owned(),
            client_auth: provider.client_auth(),
            assertion_audience: provider.assertion_audience(),
            scopes: provider.scopes().to_vec(),
            resources: provider.resources().to_vec(),
            verify_id_token: provider.id_token_policy().is_some(),
            jwks_uri: provider.jwks_uri().map(ToString::to_string),
            userinfo_endpoint: provider.userinfo_endpoint().map(ToString::to_string),
            id_token_algorithms: provider.id_token_policy().map_or_else(Vec::new, |policy| {
                policy
                    .algorithms()
                    .iter()
                    .map(|algorithm| algorithm.name().to_owned())
                    .collect()
            }),
            tenant_issuer: provider.tenant_issuer(),
        }
    }

    /// A provider description with these settings. Add the client secret when
    /// [`client_auth`](ProviderRecord::client_auth) needs one, then build: building
    /// validates every endpoint again, so a tampered file cannot point requests anywhere
    /// the configuration rules forbid (S6).
    pub fn builder(&self) -> ProviderBuilder {
        let mut builder = Provider::builder(
            &self.authorization_endpoint,
            &self.token_endpoint,
            &self.client_id,
        )
        .client_auth(self.client_auth)
        .assertion_audience(self.assertion_audience)
        .scopes(self.scopes.iter().cloned());
        for resource in &self.resources {
            builder = builder.resource(resource);
        }
        if let Some(issuer) = &self.issuer {
            builder = builder.issuer(issuer);
        }
        if let Some(endpoint) = &self.revocation_endpoint {
            builder = builder.revocation_endpoint(endpoint);
        }
        if let Some(uri) = &self.jwks_uri {
            builder = builder.jwks_uri(uri);
        }
        if let Some(endpoint) = &self.userinfo_endpoint {
            builder = builder.userinfo_endpoint(endpoint);
        }
        if !self.id_token_algorithms.is_empty() {
            builder = builder.id_token_algorithms(
                self.id_token_algorithms
                    .iter()
                    .filter_map(|name| Algorithm::from_name(name)),
            );
        }
        builder
            .tenant_issuer(self.tenant_issuer)
            .verify_id_token(self.verify_id_token)
            .crypto(crate::crypto::ring())
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "issuer": self.issuer,
            "authorization_endpoint": self.authorization_endpoint,
            "token_endpoint": self.token_endpoint,
            "revocation_endpoint": self.revocation_endpoint,
            "client_id": self.client_id,
            "token_endpoint_auth_method": self.client_auth.name(),
            "assertion_audience": self.assertion_audience.name(),
            "scopes": self.scopes,
            "resources": self.resources,
            "verify_id_token": self.verify_id_token,
            "jwks_uri": self.jwks_uri,
            "userinfo_endpoint": self.userinfo_endpoint,
            "id_token_algorithms": self.id_token_algorithms,
            "tenant_issuer": self.tenant_issuer,
        })
    }

    pub(super) fn from_json(value: &Value) -> Result<ProviderRecord, String> {
        let text = |name: &str| match value.get(name) {
            Some(Value::String(text)) => Ok(Some(text.clone())),
            None | Some(Value::Null) => Ok(None),
            Some(_) => Err(format!("{name} is not a string")),
        };
        let required = |name: &str| text(name)?.ok_or_else(|| format!("{name} is missing"));
        let method = required("token_endpoint_auth_method")?;
        let client_auth = ClientAuth::from_name(&method)
            .ok_or("token_endpoint_auth_method is not one latchkey knows")?;
        let assertion_audience = match text("assertion_audience")? {
            None => AssertionAudience::Issuer,
            Some(name) => AssertionAudience::from_name(&name)
                .ok_or("assertion_audience is neither issuer nor endpoint")?,
        };
        let list = |name: &str| match value.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| format!("an item of {name} is not a string")),
            Some(_) => Err(format!("{name} is not a list")),
        };
        let flag = |name: &str| match value.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(_) => Err(format!("{name} is not a boolean")),
        };
        Ok(ProviderRecord {
            issuer: text("issuer")?,
            authorization_endpoint: required("authorization_endpoint")?,
            token_endpoint: required("token_endpoint")?,
            revocation_endpoint: text("revocation_endpoint")?,
            client_id: required("client_id")?,
            client_auth,
            assertion_audience,
            scopes: list("scopes")?,
            resources: list("resources")?,
            verify_id_token: flag("verify_id_token")?,
            jwks_uri: text("jwks_uri")?,
            userinfo_endpoint: text("userinfo_endpoint")?,
            id_token_algorithms: list("id_token_algorithms")?,
            tenant_issuer: flag("tenant_issuer")?,
        })
    }
}
