//! OpenID Connect: signed ID tokens (RS256 or ES256), the key set that checks them, key
//! rotation, UserInfo, and ID tokens forged on purpose to fail one check each.

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _, RsaKeyPair};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::keys::RSA_PKCS8;

/// The algorithm the server signs ID tokens with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdTokenAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (the one every OpenID provider supports).
    #[default]
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl IdTokenAlg {
    fn name(self) -> &'static str {
        match self {
            IdTokenAlg::RS256 => "RS256",
            IdTokenAlg::ES256 => "ES256",
        }
    }
}

/// An ID token made wrong on purpose, to see a client refuse it. Each breaks one rule of
/// OpenID Connect Core §3.1.3.7 (or §5.3.2 for UserInfo) and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// One byte of the signature changed.
    Signature,
    /// `alg: none` and no signature.
    AlgNone,
    /// Signed by a key the key set does not publish (with a `kid` of its own).
    UnknownKey,
    /// `iss` of another issuer.
    Issuer,
    /// `aud` of another client.
    Audience,
    /// `exp` an hour ago.
    Expired,
    /// `iat` and `nbf` an hour ahead.
    NotYetValid,
    /// The `nonce` of another login. ID tokens without a `nonce` (of a login that sent
    /// none, of a refresh, of the device flow) stay honest.
    Nonce,
    /// `at_hash` of another access token.
    AccessTokenHash,
    /// Another `sub` (tokens of a refresh only: a login's user is whoever signs in).
    Subject,
    /// UserInfo answers with another `sub`.
    UserInfoSubject,
}

impl Forgery {
    /// Every forgery, for command lines and tests.
    pub const ALL: [Forgery; 11] = [
        Forgery::Signature,
        Forgery::AlgNone,
        Forgery::UnknownKey,
        Forgery::Issuer,
        Forgery::Audience,
        Forgery::Expired,
        Forgery::NotYetValid,
        Forgery::Nonce,
        Forgery::AccessTokenHash,
        Forgery::Subject,
        Forgery::UserInfoSubject,
    ];

    /// The forgery's name on a command line: `signature`, `alg-none`, `unknown-key`,
    /// `issuer`, `audience`, `expired`, `not-yet-valid`, `nonce`, `at-hash`, `subject`,
    /// `userinfo-subject`.
    pub fn name(self) -> &'static str {
        match self {
            Forgery::Signature => "signature",
            Forgery::AlgNone => "alg-none",
            Forgery::UnknownKey => "unknown-key",
            Forgery::Issuer => "issuer",
            Forgery::Audience => "audience",
            Forgery::Expired => "expired",
            Forgery::NotYetValid => "not-yet-valid",
            Forgery::Nonce => "nonce",
            Forgery::AccessTokenHash => "at-hash",
            Forgery::Subject => "subject",
            Forgery::UserInfoSubject => "userinfo-subject",
        }
    }

    /// The forgery named `name` (see [`Forgery::name`]).
    pub fn from_name(name: &str) -> Option<Forgery> {
        Forgery::ALL
            .into_iter()
            .find(|forgery| forgery.name() == name)
    }
}

/// The user a grant is for.
#[derive(Clone, Debug)]
pub(crate) struct Subject {
    pub sub: String,
    /// When the user signed in (Unix seconds).
    pub auth_time: u64,
}

impl Subject {
    /// The standard claims of this user: the subject, an example.com address, a name.
    pub fn claims(&self) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(self.sub));
        claims.insert("email".into(), json!(format!("{}@example.com", self.sub)));
        claims.insert("email_verified".into(), json!(true));
        claims.insert("name".into(), json!(format!("Dev User {}", self.sub)));
        claims.insert("preferred_username".into(), json!(self.sub));
        claims
    }
}

/// What an ID token is about.
pub(crate) struct Grant<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub subject: &'a Subject,
    /// The authorization request's nonce (a login; a refresh has none).
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
    pub lifetime: u64,
    /// A refresh's ID token (only those are forged for [`Forgery::Subject`]).
    pub refresh: bool,
}

/// The signing keys: for each algorithm the current key and the one before it, both
/// published; [`Keys::rotate`] makes a new current key.
pub(crate) struct Keys {
    rng: SystemRandom,
    rsa: Vec<(String, RsaKeyPair)>,
    ec: Vec<(String, EcdsaKeyPair)>,
    /// Signs forged tokens of [`Forgery::UnknownKey`]; never published.
    outsider_rsa: RsaKeyPair,
    outsider_ec: EcdsaKeyPair,
    rotations: usize,
}

impl Keys {
    pub fn new() -> io::Result<Keys> {
        let rng = SystemRandom::new();
        let outsider_ec = ec_key(&rng)?;
        Ok(Keys {
            rsa: vec![("rsa-1".to_owned(), rsa_key(0)?)],
            ec: vec![("ec-1".to_owned(), ec_key(&rng)?)],
            outsider_rsa: rsa_key(RSA_PKCS8.len() - 1)?,
            outsider_ec,
            rng,
            rotations: 0,
        })
    }

    /// A new current key of each algorithm; the previous one stays published, older ones
    /// are dropped. Returns the new RSA and EC key ids.
    pub fn rotate(&mut self) -> io::Result<(String, String)> {
        self.rotations += 1;
        let n = self.rotations + 1;
        // Two of the pool's keys take turns; the third signs the outsider's tokens.
        let rsa = (
            format!("rsa-{n}"),
            rsa_key(self.rotations % (RSA_PKCS8.len() - 1))?,
        );
        let ec = (format!("ec-{n}"), ec_key(&self.rng)?);
        let kids = (rsa.0.clone(), ec.0.clone());
        self.rsa.push(rsa);
        self.ec.push(ec);
        for keys in [self.rsa.len(), self.ec.len()] {
            debug_assert!(keys <= 3);
        }
        if self.rsa.len() > 2 {
            self.rsa.remove(0);
        }
        if self.ec.len() > 2 {
            self.ec.remove(0);
        }
        Ok(kids)
    }

    /// The key set document (RFC 7517 §5): every published key.
    pub fn jwks(&self) -> Value {
        let mut keys: Vec<Value> = self
            .rsa
            .iter()
            .map(|(kid, key)| rsa_jwk(kid, key))
            .collect();
        keys.extend(self.ec.iter().map(|(kid, key)| ec_jwk(kid, key)));
        json!({ "keys": keys })
    }

    /// A signed ID token for `grant`, or one forged to fail `forgery`.
    pub fn id_token(
        &self,
        alg: IdTokenAlg,
        grant: &Grant<'_>,
        forgery: Option<Forgery>,
    ) -> Option<String> {
        let now = unix_now();
        let mut claims = grant.subject.claims();
        let forged = |wanted: Forgery| forgery == Some(wanted);
        let iss = if forged(Forgery::Issuer) {
            "https://evil.example"
        } else {
            grant.issuer
        };
        claims.insert("iss".into(), json!(iss));
        if forged(Forgery::Subject) && grant.refresh {
            claims.insert("sub".into(), json!(format!("not-{}", grant.subject.sub)));
        }
        let aud = if forged(Forgery::Audience) {
            "another-client"
        } else {
            grant.client_id
        };
        claims.insert("aud".into(), json!(aud));
        let (iat, exp) = match forgery {
            Some(Forgery::Expired) => (now - 2 * 3600, now - 3600),
            Some(Forgery::NotYetValid) => (now + 3600, now + 3600 + grant.lifetime),
            _ => (now, now + grant.lifetime),
        };
        claims.insert("iat".into(), json!(iat));
        claims.insert("exp".into(), json!(exp));
        if forged(Forgery::NotYetValid) {
            claims.insert("nbf".into(), json!(iat));
        }
        claims.insert("auth_time".into(), json!(grant.subject.auth_time));
        if let Some(nonce) = grant.nonce {
            let nonce = if forged(Forgery::Nonce) {
                "another-login"
            } else {
                nonce
            };
            claims.insert("nonce".into(), json!(nonce));
        }
        let hashed = if forged(Forgery::AccessTokenHash) {
            "another"
        } else {
            grant.access_token
        };
        let digest = Sha256::digest(hashed.as_bytes());
        claims.insert(
            "at_hash".into(),
            json!(URL_SAFE_NO_PAD.encode(&digest[..16])),
        );
        let payload = URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string());

        if forged(Forgery::AlgNone) {
            let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
            return Some(format!("{header}.{payload}."));
        }
        let outsider = forged(Forgery::UnknownKey);
        let kid = match (alg, outsider) {
            (_, true) => "unpublished",
            (IdTokenAlg::RS256, false) => &self.rsa.last()?.0,
            (IdTokenAlg::ES256, false) => &self.ec.last()?.0,
        };
        let header = URL_SAFE_NO_PAD
            .encode(json!({"alg": alg.name(), "kid": kid, "typ": "JWT"}).to_string());
        let input = format!("{header}.{payload}");
        let mut signature = match alg {
            IdTokenAlg::RS256 => {
                let key = if outsider {
                    &self.outsider_rsa
                } else {
                    &self.rsa.last()?.1
                };
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &self.rng,
                    input.as_bytes(),
                    &mut signature,
                )
                .ok()?;
                signature
            }
            IdTokenAlg::ES256 => {
                let key = if outsider {
                    &self.outsider_ec
                } else {
                    &self.ec.last()?.1
                };
                key.sign(&self.rng, input.as_bytes())
                    .ok()?
                    .as_ref()
                    .to_vec()
            }
        };
        if forged(Forgery::Signature) {
            if let Some(byte) = signature.get_mut(10) {
                *byte ^= 0x01;
            }
        }
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

fn rsa_key(index: usize) -> io::Result<RsaKeyPair> {
    let der = STANDARD
        .decode(RSA_PKCS8[index])
        .map_err(|_| io::Error::other("a built-in RSA key is not base64"))?;
    RsaKeyPair::from_pkcs8(&der).map_err(|e| io::Error::other(format!("RSA key: {e}")))
}

fn ec_key(rng: &SystemRandom) -> io::Result<EcdsaKeyPair> {
    let algorithm = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, rng)
        .map_err(|_| io::Error::other("no randomness for an EC key"))?;
    EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), rng)
        .map_err(|e| io::Error::other(format!("EC key: {e}")))
}

fn rsa_jwk(kid: &str, key: &RsaKeyPair) -> Value {
    let public: signature::RsaPublicKeyComponents<Vec<u8>> = key.public().into();
    json!({
        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(&public.n),
        "e": URL_SAFE_NO_PAD.encode(&public.e),
    })
}

fn ec_jwk(kid: &str, key: &EcdsaKeyPair) -> Value {
    // SEC 1 uncompressed: 04 || x || y.
    let point = key.public_key().as_ref();
    let (x, y) = point
        .get(1..)
        .unwrap_or_default()
        .split_at(32.min(point.len().saturating_sub(1)));
    json!({
        "kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
        "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
    })
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
