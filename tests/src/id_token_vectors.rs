//! The ID token vectors (`tests/vectors/id_tokens.json`): signed tokens of every algorithm
//! latchkey accepts and of every reason to refuse one, with the provider, key set, nonce
//! and clock that judge them. Shared by the scenario tests and the `id_token` fuzz target.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use latchkey::oidc::{Algorithm, Expected, Identity, KeySet};
use latchkey::{IdTokenError, Provider};
use serde_json::Value;

/// The vectors document.
pub const DOCUMENT: &str = include_str!("../vectors/id_tokens.json");

/// One token and what must become of it.
#[derive(Debug, Clone)]
pub struct Case {
    /// What it shows.
    pub name: String,
    /// The compact JWS.
    pub token: String,
    /// `ok`, or the [`IdTokenError::kind`] it must be refused with.
    pub expect: String,
    raw: Value,
}

/// The vectors, parsed once.
#[derive(Debug)]
pub struct Vectors {
    document: Value,
    /// The provider's key set.
    pub keys: KeySet,
    /// The key set after a rotation (the key of the "does not publish" case).
    pub rotated: KeySet,
    /// Every case, in the document's order (the first nine: one per algorithm).
    pub cases: Vec<Case>,
}

impl Vectors {
    /// The vectors.
    pub fn get() -> &'static Vectors {
        static VECTORS: OnceLock<Vectors> = OnceLock::new();
        VECTORS.get_or_init(|| {
            let document: Value = serde_json::from_str(DOCUMENT).expect("the vectors are JSON");
            let key_set = |name: &str| {
                let bytes = serde_json::to_vec(&document[name]).expect("JSON");
                KeySet::parse(&bytes).expect("a usable key set")
            };
            let cases = document["cases"]
                .as_array()
                .expect("cases")
                .iter()
                .map(|raw| Case {
                    name: text(raw, "name").to_owned(),
                    token: text(raw, "token").to_owned(),
                    expect: text(raw, "expect").to_owned(),
                    raw: raw.clone(),
                })
                .collect();
            Vectors {
                keys: key_set("keys"),
                rotated: key_set("rotated_keys"),
                cases,
                document,
            }
        })
    }

    /// The case named `name`.
    pub fn case(&self, name: &str) -> &Case {
        self.cases
            .iter()
            .find(|case| case.name == name)
            .unwrap_or_else(|| panic!("no case {name:?}"))
    }

    /// The algorithms the provider signs with, by name.
    pub fn algorithms(&self) -> Vec<&str> {
        self.document["algorithms"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|name| name.as_str().expect("a name"))
            .collect()
    }

    /// The issuer.
    pub fn issuer(&self) -> &str {
        text(&self.document, "issuer")
    }

    /// The nonce every vector login sent.
    pub fn nonce(&self) -> &str {
        text(&self.document, "nonce")
    }

    /// The access token every vector was issued with.
    pub fn access_token(&self) -> &str {
        text(&self.document, "access_token")
    }

    /// When the vectors are checked: 400 s after they were issued.
    pub fn checked_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.document["checked_at"].as_u64().expect("a time"))
    }

    /// The vectors' provider, with `case`'s changes (issuer, tenant template, algorithms,
    /// `max_age`), verifying with `ring`.
    pub fn provider(&self, case: Option<&Case>) -> Provider {
        let raw = case.map_or(&Value::Null, |case| &case.raw);
        let algorithms: Vec<Algorithm> = raw
            .get("algorithms")
            .unwrap_or(&self.document["algorithms"])
            .as_array()
            .expect("a list")
            .iter()
            .map(|name| Algorithm::from_name(name.as_str().expect("a name")).expect("known"))
            .collect();
        let issuer = raw.get("issuer").and_then(Value::as_str);
        let tenant = raw.get("tenant_issuer").and_then(Value::as_bool);
        let mut builder = Provider::builder(
            "https://idp.example/authorize",
            "https://idp.example/token",
            text(&self.document, "client_id"),
        )
        .scopes(["openid", "email"])
        .issuer(issuer.unwrap_or(self.issuer()))
        .tenant_issuer(tenant.unwrap_or(false))
        .jwks_uri("https://idp.example/jwks")
        .id_token_algorithms(algorithms)
        .crypto(latchkey_io::crypto::ring());
        if let Some(max_age) = raw.get("max_age").and_then(Value::as_u64) {
            builder = builder.param("max_age", max_age.to_string());
        }
        builder.build().expect("a valid provider")
    }

    /// Verifies `token` with `keys` as the login of `case` (or the plain provider) would:
    /// the vectors' nonce and access token, at [`checked_at`](Vectors::checked_at).
    pub fn verify(
        &self,
        case: Option<&Case>,
        keys: &KeySet,
        token: &str,
    ) -> Result<Identity, IdTokenError> {
        let provider = self.provider(case);
        let policy = provider.id_token_policy().expect("openid is requested");
        let expected = Expected {
            nonce: Some(self.nonce()),
            access_token: Some(self.access_token()),
            previous: None,
        };
        policy.verify(keys, token, &expected, self.checked_at())
    }
}

fn text<'v>(value: &'v Value, name: &str) -> &'v str {
    value[name]
        .as_str()
        .unwrap_or_else(|| panic!("`{name}` is a string"))
}
