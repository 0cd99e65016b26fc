//! Configuration, validated once: a [`Provider`] (endpoints, client, scopes) and a [`Config`]
//! (the loopback redirect, what the browser sees at the end, lifetimes and limits).
//!
//! Everything that can be wrong with a configuration is a [`ConfigError`] at build time, so a
//! running engine never meets a malformed endpoint or redirect target.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::crypto::SignatureError;
use crate::exchange;
use crate::form;
use crate::grammar::{is_scope_token, is_vschar_text};
use crate::keys::{KeyError, PrivateKey, Signer};
use crate::oidc::{Algorithm, CryptoProvider, IdTokenPolicy};
use crate::url::{self, UrlError};

/// The default clock leeway for ID token times.
const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// The largest clock leeway accepted (S48: bounded).
const MAX_LEEWAY: Duration = Duration::from_secs(5 * 60);

/// How the client authenticates at the token endpoint (RFC 6749 §2.3). Exactly one is used
/// for every request (S33).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded client id and secret (`client_secret_basic`).
    SecretBasic,
    /// `client_id` and `client_secret` in the request body (`client_secret_post`).
    SecretPost,
    /// A client assertion signed with the client's private key (`private_key_jwt`,
    /// RFC 7523 §2.2; S63): no shared secret. Needs
    /// [`ProviderBuilder::client_key`], a [`ProviderBuilder::crypto`] provider that signs and
    /// an issuer (the assertion's audience), unless the audience is
    /// [`AssertionAudience::Endpoint`].
    PrivateKeyJwt,
    /// A public client: `client_id` in the body, no secret (`none`).
    None,
}

impl ClientAuth {
    /// The method's name in RFC 8414 metadata (`token_endpoint_auth_method`).
    pub fn name(self) -> &'static str {
        match self {
            ClientAuth::SecretBasic => "client_secret_basic",
            ClientAuth::SecretPost => "client_secret_post",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::None => "none",
        }
    }

    /// The method named `name` in RFC 8414 metadata.
    pub fn from_name(name: &str) -> Option<ClientAuth> {
        [
            ClientAuth::SecretBasic,
            ClientAuth::SecretPost,
            ClientAuth::PrivateKeyJwt,
            ClientAuth::None,
        ]
        .into_iter()
        .find(|auth| auth.name() == name)
    }
}

/// What a `private_key_jwt` client assertion names as its audience (`aud`, RFC 7523 §3):
/// providers disagree on it, and refuse an assertion that names another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The issuer identifier, the one value RFC 7523's update (draft-ietf-oauth-rfc7523bis)
    /// recommends, which no other server can be tricked into accepting: Auth0, Keycloak,
    /// oidc-provider.
    #[default]
    Issuer,
    /// The URL of the endpoint the request goes to (without its query): Okta ("the full
    /// URL of the resource you're using the JWT to authenticate to"), Microsoft Entra (its
    /// token endpoint).
    Endpoint,
}

impl AssertionAudience {
    /// `issuer` or `endpoint`, as records and command lines name it.
    pub fn name(self) -> &'static str {
        match self {
            AssertionAudience::Issuer => "issuer",
            AssertionAudience::Endpoint => "endpoint",
        }
    }

    /// The audience named `name`.
    pub fn from_name(name: &str) -> Option<AssertionAudience> {
        [AssertionAudience::Issuer, AssertionAudience::Endpoint]
            .into_iter()
            .find(|audience| audience.name() == name)
    }
}

/// An identity provider and this application's registration with it.
///
/// Cheap to clone (shared). Every flow keeps the provider it was started with, and its
/// callback and token exchange are judged only against that record (S7).
#[derive(Clone)]
pub struct Provider(Arc<ProviderInner>);

pub(crate) struct ProviderInner {
    /// The authorization URL up to (excluding) the per-flow parameters.
    pub authorize_prefix: String,
    /// How much of `authorize_prefix` is the configured authorization endpoint.
    pub authorization_endpoint_len: usize,
    pub token_endpoint: http::Uri,
    pub revocation_endpoint: Option<http::Uri>,
    /// Where device logins start (RFC 8628 §3.1).
    pub device_authorization_endpoint: Option<http::Uri>,
    /// Where authorization requests are pushed (RFC 9126), and whether they are.
    pub par_endpoint: Option<http::Uri>,
    pub push: bool,
    pub client_id: String,
    pub client_secret: Option<SecretString>,
    /// The key of `private_key_jwt`, loaded by the crypto provider.
    pub client_key: Option<Signer>,
    /// What its assertions name as their audience.
    pub assertion_audience: AssertionAudience,
    /// DPoP (RFC 9449): each login's key pair is of this algorithm.
    pub dpop: Option<Algorithm>,
    /// The crypto provider that makes DPoP keys and proofs (and verifies ID tokens).
    pub crypto: Option<Arc<dyn CryptoProvider>>,
    pub auth: ClientAuth,
    pub scopes: Vec<String>,
    /// The APIs tokens are asked for (RFC 8707), each sent as a `resource` parameter.
    pub resources: Vec<String>,
    pub issuer: Option<String>,
    pub require_iss: bool,
    /// How ID tokens are verified; `None` when they are not (no `openid` scope, or turned
    /// off).
    pub id_token: Option<IdTokenPolicy>,
    pub jwks_uri: Option<http::Uri>,
    pub userinfo_endpoint: Option<http::Uri>,
    /// The issuer may be a `{tenantid}` template (Microsoft Entra's common endpoints).
    pub tenant_issuer: bool,
    /// The `Authorization` header of `client_secret_basic`, built once. It is marked
    /// sensitive (HTTP/2 encoders never index it; `Debug` hides it).
    pub basic_authorization: Option<http::HeaderValue>,
}

impl Provider {
    /// Starts describing a provider by its two endpoints and this application's client id.
    pub fn builder(
        authorization_endpoint: impl Into<String>,
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
    ) -> ProviderBuilder {
        ProviderBuilder {
            authorization_endpoint: authorization_endpoint.into(),
            token_endpoint: token_endpoint.into(),
            client_id: client_id.into(),
            client_secret: None,
            client_key: None,
            assertion_audience: AssertionAudience::Issuer,
            dpop: None,
            auth: None,
            scopes: Vec::new(),
            resources: Vec::new(),
            params: Vec::new(),
            issuer: None,
            require_iss: false,
            revocation_endpoint: None,
            device_authorization_endpoint: None,
            par_endpoint: None,
            push: false,
            jwks_uri: None,
            userinfo_endpoint: None,
            algorithms: None,
            leeway: DEFAULT_LEEWAY,
            tenant_issuer: false,
            crypto: None,
            verify_id_token: true,
        }
    }

    pub(crate) fn inner(&self) -> &ProviderInner {
        &self.0
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }

    /// The client authentication method in use.
    pub fn client_auth(&self) -> ClientAuth {
        self.0.auth
    }

    /// What `private_key_jwt` assertions name as their audience.
    pub fn assertion_audience(&self) -> AssertionAudience {
        self.0.assertion_audience
    }

    /// The authorization endpoint, as configured (its own query included).
    pub fn authorization_endpoint(&self) -> &str {
        let inner = &self.0;
        inner
            .authorize_prefix
            .get(..inner.authorization_endpoint_len)
            .unwrap_or(&inner.authorize_prefix)
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> &http::Uri {
        &self.0.token_endpoint
    }

    /// The token revocation endpoint (RFC 7009), if known.
    pub fn revocation_endpoint(&self) -> Option<&http::Uri> {
        self.0.revocation_endpoint.as_ref()
    }

    /// The device authorization endpoint (RFC 8628), if known: without it there are no
    /// device logins.
    pub fn device_authorization_endpoint(&self) -> Option<&http::Uri> {
        self.0.device_authorization_endpoint.as_ref()
    }

    /// The requested scopes.
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    /// The algorithm of each login's DPoP key, when its tokens are DPoP-bound.
    pub fn dpop(&self) -> Option<Algorithm> {
        self.0.dpop
    }

    /// Where authorization requests are pushed (RFC 9126), when the provider has the
    /// endpoint.
    pub fn pushed_authorization_request_endpoint(&self) -> Option<&http::Uri> {
        self.0.par_endpoint.as_ref()
    }

    /// Whether every login's authorization request is pushed first (RFC 9126).
    pub fn pushes_authorization_requests(&self) -> bool {
        self.0.push
    }

    /// The crypto provider given with [`ProviderBuilder::crypto`].
    pub fn crypto(&self) -> Option<&Arc<dyn CryptoProvider>> {
        self.0.crypto.as_ref()
    }

    /// The APIs tokens are asked for (RFC 8707).
    pub fn resources(&self) -> &[String] {
        &self.0.resources
    }

    /// The issuer identifier, if configured.
    pub fn issuer(&self) -> Option<&str> {
        self.0.issuer.as_deref()
    }

    /// How this provider's ID tokens are verified, when they are: `openid` is among the
    /// scopes and verification was not turned off.
    pub fn id_token_policy(&self) -> Option<&IdTokenPolicy> {
        self.0.id_token.as_ref()
    }

    /// The UserInfo endpoint (OpenID Connect Core §5.3), if known.
    pub fn userinfo_endpoint(&self) -> Option<&http::Uri> {
        self.0.userinfo_endpoint.as_ref()
    }

    /// The key set URI (`jwks_uri`), if known, whether or not ID tokens are verified.
    pub fn jwks_uri(&self) -> Option<&http::Uri> {
        self.0.jwks_uri.as_ref()
    }

    /// Whether the issuer is a `{tenantid}` template
    /// ([`ProviderBuilder::tenant_issuer`]).
    pub fn tenant_issuer(&self) -> bool {
        self.0.tenant_issuer
    }

    /// Whether `openid` is among the requested scopes.
    pub fn requests_openid(&self) -> bool {
        self.0.scopes.iter().any(|scope| scope == "openid")
    }
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("token_endpoint", &self.0.token_endpoint)
            .field("revocation_endpoint", &self.0.revocation_endpoint)
            .field(
                "device_authorization_endpoint",
                &self.0.device_authorization_endpoint,
            )
            .field("client_id", &self.0.client_id)
            .field("client_secret", &self.0.client_secret)
            .field("auth", &self.0.auth)
            .field("scopes", &self.0.scopes)
            .field("issuer", &self.0.issuer)
            .field("require_iss", &self.0.require_iss)
            .field("id_token", &self.0.id_token)
            .finish_non_exhaustive()
    }
}

/// Builder for [`Provider`]; [`build`](ProviderBuilder::build) validates everything.
#[derive(Debug)]
pub struct ProviderBuilder {
    authorization_endpoint: String,
    token_endpoint: String,
    client_id: String,
    client_secret: Option<SecretString>,
    client_key: Option<PrivateKey>,
    assertion_audience: AssertionAudience,
    dpop: Option<Algorithm>,
    auth: Option<ClientAuth>,
    scopes: Vec<String>,
    resources: Vec<String>,
    params: Vec<(String, String)>,
    issuer: Option<String>,
    require_iss: bool,
    revocation_endpoint: Option<String>,
    device_authorization_endpoint: Option<String>,
    par_endpoint: Option<String>,
    push: bool,
    jwks_uri: Option<String>,
    userinfo_endpoint: Option<String>,
    algorithms: Option<Vec<Algorithm>>,
    leeway: Duration,
    tenant_issuer: bool,
    crypto: Option<Arc<dyn CryptoProvider>>,
    verify_id_token: bool,
}

/// Parameter names latchkey sets itself; the configuration may not set them (S4).
const RESERVED_PARAMETERS: [&str; 10] = [
    "dpop_jkt",
    "resource",
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "nonce",
];

impl ProviderBuilder {
    /// The client secret. A secret never turns PKCE off (S8): a desktop or extension
    /// "secret" ships to every user and is not confidential.
    pub fn client_secret(mut self, secret: SecretString) -> ProviderBuilder {
        self.client_secret = Some(secret);
        self
    }

    /// The client authentication method. Default: [`ClientAuth::SecretBasic`] when a secret
    /// is set, [`ClientAuth::None`] otherwise.
    pub fn client_auth(mut self, auth: ClientAuth) -> ProviderBuilder {
        self.auth = Some(auth);
        self
    }

    /// The private key of `private_key_jwt` (S63). With a key and no secret, the client
    /// authenticates with [`ClientAuth::PrivateKeyJwt`] unless told otherwise. The key is
    /// loaded by the [`crypto`](ProviderBuilder::crypto) provider when the provider is
    /// built.
    pub fn client_key(mut self, key: PrivateKey) -> ProviderBuilder {
        self.client_key = Some(key);
        self
    }

    /// What `private_key_jwt` assertions name as their audience: the issuer (the default)
    /// or the URL of the endpoint each request goes to, for the providers that want that
    /// (the Okta and Entra presets set it).
    pub fn assertion_audience(mut self, audience: AssertionAudience) -> ProviderBuilder {
        self.assertion_audience = audience;
        self
    }

    /// Binds every login's tokens to a key pair of its own (DPoP, RFC 9449; S61–S62):
    /// `ES256` (P-256) is the usual choice, `ES384` and `EdDSA` (Ed25519) the others. The
    /// [`crypto`](ProviderBuilder::crypto) provider makes the keys and signs the proofs.
    pub fn dpop(mut self, algorithm: Algorithm) -> ProviderBuilder {
        self.dpop = Some(algorithm);
        self
    }

    /// Adds one scope.
    pub fn scope(mut self, scope: impl Into<String>) -> ProviderBuilder {
        self.scopes.push(scope.into());
        self
    }

    /// Adds scopes.
    pub fn scopes<S: Into<String>>(
        mut self,
        scopes: impl IntoIterator<Item = S>,
    ) -> ProviderBuilder {
        self.scopes.extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Asks for tokens for the API at `uri` (RFC 8707; repeatable): a `resource` parameter
    /// in the authorization request, the device authorization request and every token
    /// request (code, refresh and device grants). An absolute URI without fragment.
    pub fn resource(mut self, uri: impl Into<String>) -> ProviderBuilder {
        self.resources.push(uri.into());
        self
    }

    /// Adds an extra authorization parameter, such as `access_type=offline` (Google),
    /// `prompt=consent` or `audience=…`. Names latchkey sets itself are refused.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> ProviderBuilder {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The provider's issuer identifier; a callback's `iss` must equal it exactly (S13).
    pub fn issuer(mut self, issuer: impl Into<String>) -> ProviderBuilder {
        self.issuer = Some(issuer.into());
        self
    }

    /// The provider always sends `iss` in its authorization responses (RFC 9207), so a
    /// callback without it is refused. Requires [`issuer`](ProviderBuilder::issuer).
    pub fn require_iss(mut self, required: bool) -> ProviderBuilder {
        self.require_iss = required;
        self
    }

    /// The token revocation endpoint (RFC 7009), for logging out.
    pub fn revocation_endpoint(mut self, endpoint: impl Into<String>) -> ProviderBuilder {
        self.revocation_endpoint = Some(endpoint.into());
        self
    }

    /// The device authorization endpoint (RFC 8628 §3.1), for logging in where no browser
    /// can be opened ([`Engine::start_device`](crate::Engine::start_device)).
    pub fn device_authorization_endpoint(mut self, endpoint: impl Into<String>) -> ProviderBuilder {
        self.device_authorization_endpoint = Some(endpoint.into());
        self
    }

    /// The pushed authorization request endpoint (RFC 9126,
    /// `pushed_authorization_request_endpoint` in the provider's metadata).
    pub fn pushed_authorization_request_endpoint(
        mut self,
        endpoint: impl Into<String>,
    ) -> ProviderBuilder {
        self.par_endpoint = Some(endpoint.into());
        self
    }

    /// Pushes every login's authorization parameters to the provider first (PAR, RFC
    /// 9126): the browser's URL then carries only `client_id` and a `request_uri`. Needs
    /// the endpoint; [`Discovery`](crate::Discovery) turns it on by itself when the
    /// provider's metadata says `require_pushed_authorization_requests`.
    pub fn push_authorization_requests(mut self, push: bool) -> ProviderBuilder {
        self.push = push;
        self
    }

    /// Where the provider publishes the keys that sign its ID tokens (`jwks_uri`). Needed
    /// when `openid` is requested, unless verification is turned off.
    pub fn jwks_uri(mut self, uri: impl Into<String>) -> ProviderBuilder {
        self.jwks_uri = Some(uri.into());
        self
    }

    /// The UserInfo endpoint (OpenID Connect Core §5.3), for
    /// [`userinfo_request`](crate::oidc::userinfo_request).
    pub fn userinfo_endpoint(mut self, uri: impl Into<String>) -> ProviderBuilder {
        self.userinfo_endpoint = Some(uri.into());
        self
    }

    /// The algorithms the provider signs ID tokens with; any other is refused (S46).
    /// Default: RS256, the one every OpenID provider must support. Discovery sets this
    /// from `id_token_signing_alg_values_supported`.
    pub fn id_token_algorithms(
        mut self,
        algorithms: impl IntoIterator<Item = Algorithm>,
    ) -> ProviderBuilder {
        let mut algorithms: Vec<Algorithm> = algorithms.into_iter().collect();
        algorithms.sort_unstable();
        algorithms.dedup();
        self.algorithms = Some(algorithms);
        self
    }

    /// How far `exp`, `iat`, `nbf` and `auth_time` may be off against the wall clock: the
    /// two machines' clocks differ. Default 60 s, at most 5 minutes.
    pub fn clock_leeway(mut self, leeway: Duration) -> ProviderBuilder {
        self.leeway = leeway;
        self
    }

    /// Accepts an issuer that is a template with `{tenantid}` in it, as Microsoft Entra's
    /// `common` and `organizations` endpoints publish
    /// (`https://login.microsoftonline.com/{tenantid}/v2.0`): an ID token's `iss` must then
    /// be the template with its own `tid` claim put in, and a callback's `iss` the template
    /// with any tenant id. Off by default: every other issuer is compared byte for byte.
    pub fn tenant_issuer(mut self, accept: bool) -> ProviderBuilder {
        self.tenant_issuer = accept;
        self
    }

    /// The signature verification ID tokens need (`latchkey_io::crypto::ring()` in the
    /// drivers).
    pub fn crypto(mut self, crypto: Arc<dyn CryptoProvider>) -> ProviderBuilder {
        self.crypto = Some(crypto);
        self
    }

    /// Whether ID tokens are verified when `openid` is requested. Default `true`. Turning it
    /// off means nothing in an ID token can be trusted: the tokens carry no
    /// [`Identity`](crate::oidc::Identity). Only for a provider whose ID tokens cannot be
    /// verified at all.
    pub fn verify_id_token(mut self, verify: bool) -> ProviderBuilder {
        self.verify_id_token = verify;
        self
    }

    /// Validates the description.
    pub fn build(self) -> Result<Provider, ConfigError> {
        let endpoint =
            url::parse(&self.authorization_endpoint).map_err(|reason| ConfigError::InvalidUrl {
                field: "authorization endpoint",
                reason,
            })?;
        let token_endpoint = endpoint_uri(&self.token_endpoint, "token endpoint")?;
        let revocation_endpoint = self
            .revocation_endpoint
            .as_deref()
            .map(|endpoint| endpoint_uri(endpoint, "revocation endpoint"))
            .transpose()?;
        let device_authorization_endpoint = self
            .device_authorization_endpoint
            .as_deref()
            .map(|endpoint| endpoint_uri(endpoint, "device authorization endpoint"))
            .transpose()?;
        let par_endpoint = self
            .par_endpoint
            .as_deref()
            .map(|endpoint| endpoint_uri(endpoint, "pushed authorization request endpoint"))
            .transpose()?;
        if self.push && par_endpoint.is_none() {
            return Err(ConfigError::MissingParEndpoint);
        }
        let jwks_uri = self
            .jwks_uri
            .as_deref()
            .map(|endpoint| endpoint_uri(endpoint, "jwks_uri"))
            .transpose()?;
        let userinfo_endpoint = self
            .userinfo_endpoint
            .as_deref()
            .map(|endpoint| endpoint_uri(endpoint, "userinfo endpoint"))
            .transpose()?;
        if !is_vschar_text(&self.client_id) {
            return Err(ConfigError::InvalidClientId);
        }
        let auth = self
            .auth
            .unwrap_or(match (&self.client_secret, &self.client_key) {
                (Some(_), _) => ClientAuth::SecretBasic,
                (None, Some(_)) => ClientAuth::PrivateKeyJwt,
                (None, None) => ClientAuth::None,
            });
        match (auth, &self.client_secret) {
            (ClientAuth::SecretBasic | ClientAuth::SecretPost, None) => {
                return Err(ConfigError::MissingClientSecret);
            }
            (ClientAuth::None | ClientAuth::PrivateKeyJwt, Some(_)) => {
                return Err(ConfigError::UnusedClientSecret);
            }
            _ => {}
        }
        let client_key = match (auth, self.client_key) {
            (ClientAuth::PrivateKeyJwt, None) => return Err(ConfigError::MissingClientKey),
            (ClientAuth::PrivateKeyJwt, Some(key)) => {
                if self.issuer.is_none() && self.assertion_audience == AssertionAudience::Issuer {
                    return Err(ConfigError::AssertionNeedsIssuer);
                }
                let crypto =
                    self.crypto
                        .clone()
                        .ok_or(ConfigError::ClientKey(KeyError::Provider(
                            SignatureError::Unsupported,
                        )))?;
                Some(Signer::new(key, crypto).map_err(ConfigError::ClientKey)?)
            }
            (_, Some(_)) => return Err(ConfigError::UnusedClientKey),
            (_, None) => None,
        };
        if let Some(scope) = self.scopes.iter().find(|scope| !is_scope_token(scope)) {
            return Err(ConfigError::InvalidScope(scope.clone()));
        }
        if let Some(resource) = self.resources.iter().find(|uri| !is_resource(uri)) {
            return Err(ConfigError::InvalidResource(resource.clone()));
        }
        if let Some(issuer) = &self.issuer {
            // A tenant template is checked as the issuer it becomes.
            let issuer = match self.tenant_issuer {
                true => issuer.replace("{tenantid}", "00000000-0000-0000-0000-000000000000"),
                false => issuer.clone(),
            };
            let parsed = url::parse(&issuer).map_err(|reason| ConfigError::InvalidUrl {
                field: "issuer",
                reason,
            })?;
            if parsed.query.is_some() {
                return Err(ConfigError::InvalidUrl {
                    field: "issuer",
                    reason: UrlError::Query,
                });
            }
        } else if self.require_iss {
            return Err(ConfigError::IssRequiresIssuer);
        }
        if self.leeway > MAX_LEEWAY {
            return Err(ConfigError::InvalidLimit("clock leeway"));
        }
        let max_age = match self.params.iter().find(|(name, _)| name == "max_age") {
            Some((_, value)) => Some(
                value
                    .parse::<u64>()
                    .map_err(|_| ConfigError::InvalidParameter("max_age".into()))?,
            ),
            None => None,
        };
        if let Some(algorithm) = self.dpop {
            if !matches!(
                algorithm,
                Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA
            ) {
                return Err(ConfigError::Dpop(KeyError::WeakAlgorithm(format!(
                    "{algorithm} (DPoP keys are ES256, ES384 or EdDSA)"
                ))));
            }
            if self.crypto.is_none() {
                return Err(ConfigError::Dpop(KeyError::Provider(
                    SignatureError::Unsupported,
                )));
            }
        }
        let openid = self.scopes.iter().any(|scope| scope == "openid");
        let id_token = match (
            openid && self.verify_id_token,
            &self.issuer,
            jwks_uri.clone(),
            &self.crypto,
        ) {
            (false, ..) => None,
            (true, None, ..) => return Err(ConfigError::IdTokenVerification("an issuer")),
            (true, _, None, _) => return Err(ConfigError::IdTokenVerification("a jwks_uri")),
            (true, _, _, None) => {
                return Err(ConfigError::IdTokenVerification("a crypto provider"));
            }
            (true, Some(issuer), Some(jwks_uri), Some(crypto)) => {
                let crypto = crypto.clone();
                let algorithms = self.algorithms.unwrap_or_else(|| vec![Algorithm::RS256]);
                if algorithms.is_empty() {
                    return Err(ConfigError::IdTokenVerification(
                        "a signing algorithm latchkey accepts",
                    ));
                }
                Some(IdTokenPolicy {
                    issuer: issuer.clone(),
                    client_id: self.client_id.clone(),
                    jwks_uri,
                    algorithms,
                    leeway: self.leeway,
                    tenant_issuer: self.tenant_issuer,
                    max_age,
                    crypto,
                })
            }
        };

        // S4: keep the endpoint's own query, add each parameter exactly once.
        let mut seen: Vec<String> = Vec::new();
        for pair in form::pairs(endpoint.query.unwrap_or("")) {
            let (name, _) = pair.map_err(|_| ConfigError::InvalidUrl {
                field: "authorization endpoint",
                reason: UrlError::BadCharacter,
            })?;
            seen.push(name.into_owned());
        }
        for (name, value) in &self.params {
            if name.is_empty() || name.chars().chain(value.chars()).any(char::is_control) {
                return Err(ConfigError::InvalidParameter(name.clone()));
            }
            seen.push(name.clone());
        }
        seen.extend(RESERVED_PARAMETERS.iter().map(|name| name.to_string()));
        seen.sort_unstable();
        if let Some(pair) = seen.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(ConfigError::DuplicateParameter(pair[0].clone()));
        }

        let (base, existing_query) = match self.authorization_endpoint.split_once('?') {
            Some((base, query)) => (base, query),
            None => (self.authorization_endpoint.as_str(), ""),
        };
        let mut query = form::Serializer::continuing(existing_query);
        query
            .append("response_type", "code")
            .append("client_id", &self.client_id);
        if !self.scopes.is_empty() {
            query.append("scope", &self.scopes.join(" "));
        }
        for resource in &self.resources {
            query.append("resource", resource);
        }
        for (name, value) in &self.params {
            query.append(name, value);
        }
        query.append("code_challenge_method", "S256");
        let authorize_prefix = format!("{base}?{}", query.finish());
        let authorization_endpoint_len = match existing_query {
            "" => base.len(),
            query => base.len() + 1 + query.len(),
        };

        let basic_authorization = match (auth, &self.client_secret) {
            (ClientAuth::SecretBasic, Some(secret)) => {
                Some(exchange::basic_credentials(&self.client_id, secret))
            }
            _ => None,
        };
        Ok(Provider(Arc::new(ProviderInner {
            authorize_prefix,
            authorization_endpoint_len,
            token_endpoint,
            revocation_endpoint,
            device_authorization_endpoint,
            par_endpoint,
            push: self.push,
            basic_authorization,
            client_id: self.client_id,
            client_secret: self.client_secret,
            client_key,
            assertion_audience: self.assertion_audience,
            dpop: self.dpop,
            crypto: self.crypto,
            auth,
            scopes: self.scopes,
            resources: self.resources,
            issuer: self.issuer,
            require_iss: self.require_iss,
            id_token,
            jwks_uri,
            userinfo_endpoint,
            tenant_issuer: self.tenant_issuer,
        })))
    }
}

/// A resource indicator (RFC 8707 §2): an absolute URI (a scheme, then `:`) of visible
/// ASCII, without fragment.
fn is_resource(uri: &str) -> bool {
    let scheme = uri.split(':').next().unwrap_or_default();
    is_vschar_text(uri)
        && !uri.contains([' ', '#'])
        && scheme.len() < uri.len()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// An endpoint the client POSTs to (token, revocation), validated like every endpoint.
fn endpoint_uri(endpoint: &str, field: &'static str) -> Result<http::Uri, ConfigError> {
    url::parse(endpoint).map_err(|reason| ConfigError::InvalidUrl { field, reason })?;
    endpoint
        .parse::<http::Uri>()
        .map_err(|_| ConfigError::InvalidUrl {
            field,
            reason: UrlError::Host,
        })
}

/// What the browser gets when a flow ends (S30).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing {
    /// `303 See Other` to this constant URL, e.g. `docker-desktop://dashboard/open`. The
    /// target never comes from the request and never carries code, state or tokens.
    Redirect(String),
    /// latchkey's built-in static page.
    BuiltInPage,
}

/// Limits on the browser-facing listener (S26, S27).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request head accepted; beyond it the answer is 431. Default 8 KiB.
    pub max_head_bytes: usize,
    /// Most browser connections open at once; beyond it new ones are refused. Default 64.
    pub max_connections: usize,
    /// Time a connection has to deliver its request head. Default 10 s.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head_bytes: 8 * 1024,
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// An engine's configuration: the default provider, the loopback redirect and the rules of
/// the browser-facing listener.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) provider: Provider,
    pub(crate) redirect: Redirect,
    /// A redirect to the application itself, instead of the loopback listener.
    pub(crate) app_redirect: Option<String>,
    /// `app_redirect` is a web address of the application ([`ConfigBuilder::web_redirect_uri`]).
    pub(crate) web_redirect: bool,
    /// Callbacks whose state is unknown are looked up in the flow directory.
    pub(crate) flow_directory: bool,
    pub(crate) on_success: Landing,
    pub(crate) on_failure: Landing,
    pub(crate) flow_lifetime: Duration,
    pub(crate) exchange_timeout: Duration,
    pub(crate) limits: Limits,
}

/// The loopback redirect URI, in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Redirect {
    /// As it appears in a URL authority (`127.0.0.1`, `localhost`, `[::1]`).
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Redirect {
    pub fn uri(&self) -> String {
        format!("http://{}:{}{}", self.host, self.port, self.path)
    }
}

impl Config {
    /// Starts a configuration whose flows use `provider` unless told otherwise.
    pub fn builder(provider: Provider) -> ConfigBuilder {
        ConfigBuilder {
            unparsed_redirect: false,
            config: Config {
                provider,
                redirect: Redirect {
                    host: "127.0.0.1".into(),
                    port: 0,
                    path: "/callback".into(),
                },
                app_redirect: None,
                web_redirect: false,
                flow_directory: false,
                on_success: Landing::BuiltInPage,
                on_failure: Landing::BuiltInPage,
                flow_lifetime: Duration::from_secs(600),
                exchange_timeout: Duration::from_secs(30),
                limits: Limits::default(),
            },
        }
    }

    /// The default provider.
    pub fn provider(&self) -> &Provider {
        &self.provider
    }

    /// The host of the redirect URI as it appears in the URI (`127.0.0.1`, `localhost`,
    /// `[::1]`).
    pub fn redirect_host(&self) -> &str {
        &self.redirect.host
    }

    /// The port of the redirect URI; 0 until a driver fills in the port it bound.
    pub fn redirect_port(&self) -> u16 {
        self.redirect.port
    }

    /// Whether the provider sends the browser to a loopback listener (the usual case), or
    /// to the application itself ([`ConfigBuilder::app_redirect_uri`]), which then needs
    /// no listener at all.
    pub fn listens(&self) -> bool {
        self.app_redirect.is_none()
    }

    /// The redirect URI sent in authorization and token requests: the loopback URI (with
    /// port 0 until the driver bound one), or the application's own.
    pub fn redirect_uri(&self) -> String {
        match &self.app_redirect {
            Some(uri) => uri.clone(),
            None => self.redirect.uri(),
        }
    }

    /// The same configuration with the redirect URI's port set. Drivers that bound port 0
    /// call this with the port the system chose (S21).
    pub fn with_redirect_port(mut self, port: u16) -> Config {
        self.redirect.port = port;
        self
    }

    /// The limits of the listener.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether callbacks with a `state` this engine does not hold are looked up in the
    /// flow directory ([`ConfigBuilder::flow_directory`]).
    pub fn flow_directory(&self) -> bool {
        self.flow_directory
    }

    /// The same configuration with the flow directory on or off (a driver given a
    /// directory turns it on).
    pub fn with_flow_directory(mut self, enabled: bool) -> Config {
        self.flow_directory = enabled;
        self
    }
}

/// Builder for [`Config`].
#[derive(Debug)]
pub struct ConfigBuilder {
    config: Config,
    /// A redirect URI given as one string that did not parse.
    unparsed_redirect: bool,
}

impl ConfigBuilder {
    /// The redirect URI `http://HOST:PORT/PATH`. `host` is `127.0.0.1` (the default, which
    /// RFC 8252 prefers), another 127.0.0.0/8 address, `::1`, or `localhost`; port 0 means
    /// "whatever the driver binds"; the path is matched exactly. Default
    /// `http://127.0.0.1:0/callback`.
    pub fn redirect_uri(
        mut self,
        host: impl Into<String>,
        port: u16,
        path: impl Into<String>,
    ) -> ConfigBuilder {
        let host = host.into();
        self.config.redirect = Redirect {
            host: match host.parse::<std::net::Ipv6Addr>() {
                Ok(_) => format!("[{host}]"),
                Err(_) => host,
            },
            port,
            path: path.into(),
        };
        self
    }

    /// What the browser gets after a successful login. Default: the built-in page.
    pub fn on_success(mut self, landing: Landing) -> ConfigBuilder {
        self.config.on_success = landing;
        self
    }

    /// What the browser gets after a failed login. Default: the built-in page.
    pub fn on_failure(mut self, landing: Landing) -> ConfigBuilder {
        self.config.on_failure = landing;
        self
    }

    /// How long a flow waits for its callback (S19). Default 10 minutes.
    pub fn flow_lifetime(mut self, lifetime: Duration) -> ConfigBuilder {
        self.config.flow_lifetime = lifetime;
        self
    }

    /// How long the token exchange may take. Default 30 s.
    pub fn exchange_timeout(mut self, timeout: Duration) -> ConfigBuilder {
        self.config.exchange_timeout = timeout;
        self
    }

    /// Limits of the browser-facing listener.
    pub fn limits(mut self, limits: Limits) -> ConfigBuilder {
        self.config.limits = limits;
        self
    }

    /// The loopback redirect URI as one string, `http://HOST:PORT/PATH` (for example from a
    /// setting or a command line): the same as [`redirect_uri`](ConfigBuilder::redirect_uri)
    /// with its parts. The port is required (0: whatever the driver binds); a missing path
    /// is `/`. Anything else is [`ConfigError::InvalidRedirectUri`] at build.
    pub fn loopback_redirect_uri(self, uri: &str) -> ConfigBuilder {
        match split_loopback_uri(uri) {
            Some((host, port, path)) => self.redirect_uri(host, port, path),
            None => ConfigBuilder {
                unparsed_redirect: true,
                ..self
            },
        }
    }

    /// Sends the browser back to the application itself instead of a loopback listener:
    /// a private-use URI scheme redirect (RFC 8252 §7.1) such as Docker Desktop's
    /// `docker-desktop://dashboard/extension-tab?extensionId=my/extension`, registered at the
    /// provider exactly as given. Whatever receives it (the extension's UI, say) hands the
    /// URI or its query to [`Engine::handle_redirect`](crate::Engine::handle_redirect),
    /// where it is judged exactly like a loopback callback (S10–S20); nothing listens on a
    /// port ([`Config::listens`] is `false`). The URI must have a scheme other than `http`
    /// and `https`, no fragment, and only visible ASCII characters.
    pub fn app_redirect_uri(mut self, uri: impl Into<String>) -> ConfigBuilder {
        self.config.app_redirect = Some(uri.into());
        self
    }

    /// Sends the browser back to a web application's own address, such as
    /// `https://app.example/callback`: the redirect URI of a backend that logs users in
    /// through its own HTTP server (a confidential client, RFC 6749 §3.1.2). Whatever
    /// serves that path hands the request's URI or query to
    /// [`Engine::handle_redirect`](crate::Engine::handle_redirect); nothing listens on a
    /// loopback port. The URI must be `https` (or `http` on a loopback host, for
    /// development) without a fragment or user information, registered at the provider
    /// exactly as given.
    pub fn web_redirect_uri(mut self, uri: impl Into<String>) -> ConfigBuilder {
        self.config.app_redirect = Some(uri.into());
        self.config.web_redirect = true;
        self
    }

    /// Shares pending flows with other replicas through a flow directory
    /// ([`crate::directory`]): a callback with a `state` this engine does not hold is
    /// looked up there ([`Action::TakeFlow`](crate::Action::TakeFlow)) and its flow
    /// adopted. Flows are shared when started with
    /// [`FlowOptions::shared`](crate::FlowOptions::shared). Default off.
    pub fn flow_directory(mut self, enabled: bool) -> ConfigBuilder {
        self.config.flow_directory = enabled;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        if self.unparsed_redirect {
            return Err(ConfigError::InvalidRedirectUri);
        }
        let config = self.config;
        if let Some(uri) = &config.app_redirect {
            let scheme = uri.split_once(':').map_or("", |(scheme, _)| scheme);
            let web = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
            if config.web_redirect {
                if !is_web_redirect(uri) {
                    return Err(ConfigError::InvalidAppRedirect);
                }
            } else if web || !is_absolute_uri(uri) || uri.contains('#') {
                return Err(ConfigError::InvalidAppRedirect);
            }
        }
        let redirect = &config.redirect;
        if !url::is_loopback_host(&redirect.host) {
            return Err(ConfigError::RedirectNotLoopback);
        }
        let path_ok = redirect.path.starts_with('/')
            && redirect
                .path
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%'));
        if !path_ok {
            return Err(ConfigError::InvalidRedirectPath);
        }
        for landing in [&config.on_success, &config.on_failure] {
            if let Landing::Redirect(target) = landing {
                if !is_absolute_uri(target) {
                    return Err(ConfigError::InvalidLanding);
                }
            }
        }
        // Deadlines are `now + duration`: bounded, so that sum can never overflow.
        const LONGEST: Duration = Duration::from_secs(24 * 60 * 60);
        let limits = &config.limits;
        for (name, duration) in [
            ("flow lifetime", config.flow_lifetime),
            ("exchange timeout", config.exchange_timeout),
            ("header timeout", limits.header_timeout),
        ] {
            if duration.is_zero() || duration > LONGEST {
                return Err(ConfigError::InvalidLimit(name));
            }
        }
        if limits.max_connections == 0 {
            return Err(ConfigError::InvalidLimit("max connections"));
        }
        // A head must at least fit the request line of a callback.
        if limits.max_head_bytes < 256 {
            return Err(ConfigError::InvalidLimit("max head bytes"));
        }
        Ok(config)
    }
}

/// `http://HOST:PORT/PATH` as host (brackets removed), port and path (`/` when absent);
/// `None` when it is not of that form.
fn split_loopback_uri(uri: &str) -> Option<(&str, u16, &str)> {
    let scheme = uri.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = uri.get(7..)?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':')?)
        }
        None => authority.rsplit_once(':')?,
    };
    let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    if host.is_empty() || !port_ok || authority.contains(['@', '?', '#']) {
        return None;
    }
    Some((host, port.parse().ok()?, path))
}

/// An `https` URL, or `http` on a loopback host, with a host and nothing but visible
/// ASCII, and no fragment or user information.
fn is_web_redirect(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    let secure = scheme.eq_ignore_ascii_case("https")
        || (scheme.eq_ignore_ascii_case("http") && url::is_loopback_host(host));
    secure
        && !host.is_empty()
        && is_absolute_uri(uri)
        && !uri.contains('#')
        && !authority.contains('@')
}

/// `scheme:rest` with a valid scheme and nothing but visible ASCII (no spaces, controls).
fn is_absolute_uri(target: &str) -> bool {
    let Some((scheme, rest)) = target.split_once(':') else {
        return false;
    };
    let mut scheme_bytes = scheme.bytes();
    scheme_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        && !rest.is_empty()
        && target.bytes().all(|b| b.is_ascii_graphic())
}

/// A configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// An endpoint or issuer URL is malformed or insecure (S6).
    InvalidUrl {
        /// Which URL.
        field: &'static str,
        /// What is wrong with it.
        reason: UrlError,
    },
    /// The client id is empty or has characters outside %x20-7E.
    InvalidClientId,
    /// `client_secret_basic` or `client_secret_post` without a secret.
    MissingClientSecret,
    /// A secret with client authentication `none` or `private_key_jwt`: it would never be
    /// sent.
    UnusedClientSecret,
    /// `private_key_jwt` without [`ProviderBuilder::client_key`].
    MissingClientKey,
    /// A client key with another client authentication method: it would never be used.
    UnusedClientKey,
    /// The client key cannot sign (weak, mismatched, or refused by the crypto provider, or
    /// no crypto provider was given; S63).
    ClientKey(KeyError),
    /// `private_key_jwt` without an issuer: the assertion's audience (S63).
    AssertionNeedsIssuer,
    /// DPoP with an algorithm its keys are not made for, or without a crypto provider.
    Dpop(KeyError),
    /// Pushed authorization requests without the endpoint to push them to.
    MissingParEndpoint,
    /// A scope is empty or contains spaces, quotes, backslashes or controls.
    InvalidScope(String),
    /// A resource indicator is not an absolute URI without fragment (RFC 8707 §2).
    InvalidResource(String),
    /// An extra authorization parameter has an empty name or control characters.
    InvalidParameter(String),
    /// A parameter would appear twice in the authorization URL, or an extra parameter uses a
    /// name latchkey sets itself (S4).
    DuplicateParameter(String),
    /// `require_iss` without an issuer to compare with.
    IssRequiresIssuer,
    /// The redirect host is not loopback (`127.0.0.0/8`, `::1`, `localhost`).
    RedirectNotLoopback,
    /// The redirect path does not start with `/` or contains `?`, `#`, `%`, spaces or
    /// non-ASCII characters.
    InvalidRedirectPath,
    /// A redirect URI given as one string is not `http://HOST:PORT/PATH`.
    InvalidRedirectUri,
    /// An application redirect URI is not an absolute URI of a private-use scheme (not
    /// `http` or `https`), without fragment, of visible ASCII characters; or a web
    /// redirect URI is not `https` (`http` on a loopback host), or has a fragment or user
    /// information.
    InvalidAppRedirect,
    /// A landing redirect is not an absolute URI of visible ASCII characters.
    InvalidLanding,
    /// A lifetime or timeout is zero or longer than a day, or a limit is zero or too small
    /// (named).
    InvalidLimit(&'static str),
    /// `openid` is requested, so ID tokens are verified, and this (named) is missing: set
    /// it, use discovery, or turn verification off with
    /// [`ProviderBuilder::verify_id_token`].
    IdTokenVerification(&'static str),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidUrl { field, reason } => write!(f, "{field}: {reason}"),
            ConfigError::InvalidClientId => {
                f.write_str("client id is empty or not printable ASCII")
            }
            ConfigError::MissingClientSecret => {
                f.write_str("client_secret_basic/client_secret_post need a client secret")
            }
            ConfigError::UnusedClientSecret => f.write_str(
                "a client secret is set but client authentication is `none` or \
                 `private_key_jwt`",
            ),
            ConfigError::MissingClientKey => f.write_str("private_key_jwt needs a client key"),
            ConfigError::UnusedClientKey => {
                f.write_str("a client key is set but client authentication is not private_key_jwt")
            }
            ConfigError::ClientKey(error) => write!(f, "client key: {error}"),
            ConfigError::Dpop(error) => write!(f, "DPoP: {error}"),
            ConfigError::MissingParEndpoint => f.write_str(
                "pushed authorization requests need the pushed authorization request endpoint",
            ),
            ConfigError::AssertionNeedsIssuer => {
                f.write_str("private_key_jwt needs the issuer, the audience of its assertions")
            }
            ConfigError::InvalidScope(scope) => write!(f, "invalid scope {scope:?}"),
            ConfigError::InvalidResource(uri) => write!(
                f,
                "resource {uri:?} is not an absolute URI without fragment (RFC 8707)"
            ),
            ConfigError::InvalidParameter(name) => {
                write!(f, "invalid authorization parameter {name:?}")
            }
            ConfigError::DuplicateParameter(name) => {
                write!(
                    f,
                    "authorization parameter {name:?} would appear more than once"
                )
            }
            ConfigError::IssRequiresIssuer => f.write_str("require_iss needs an issuer"),
            ConfigError::RedirectNotLoopback => f.write_str(
                "redirect host must be 127.0.0.1, another loopback address, ::1 or localhost",
            ),
            ConfigError::InvalidRedirectPath => {
                f.write_str("redirect path must start with `/` and be plain printable ASCII")
            }
            ConfigError::InvalidRedirectUri => {
                f.write_str("redirect URI must look like http://127.0.0.1:PORT/PATH")
            }
            ConfigError::InvalidAppRedirect => f.write_str(
                "application redirect URI must be an absolute URI with a scheme other than \
                 http or https, and no fragment (a web redirect URI: https, or http on a \
                 loopback host, without fragment or user information)",
            ),
            ConfigError::InvalidLanding => f.write_str("landing redirect must be an absolute URI"),
            ConfigError::InvalidLimit(name) => write!(f, "{name} is out of range"),
            ConfigError::IdTokenVerification(missing) => write!(
                f,
                "`openid` is requested, so ID tokens are verified, which needs {missing}"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}
