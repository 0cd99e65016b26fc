//! Signing for the client: the CPU time to make one DPoP proof (RFC 9449) and one
//! `private_key_jwt` client assertion (RFC 7523), through latchkey and through
//! `jsonwebtoken` 9 (on `ring`, as latchkey's drivers are), with `ring`'s signature alone
//! as the floor.
//!
//! Every contender makes the same JWS for the same key (the test keys of
//! `tests/vectors/keys`): the same header members (a DPoP proof's `typ` and public `jwk`)
//! and the same claims, a fresh 128-bit `jti` from the operating system's generator each
//! time. Each result is checked once by `ring` before it is timed. The floor signs a
//! prepared signing input: no JSON, no base64, no randomness.
//!
//! Contenders take turns round by round in one process, as in [`crate::id_token`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use latchkey::crypto::{Algorithm, CryptoProvider};
use latchkey::dpop::Proof;
use latchkey::keys::{PrivateKey, Signer};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Value, json};

use crate::servers::process_cpu_nanos;

/// The contenders, in the report's order.
pub const CONTENDERS: [&str; 3] = ["latchkey", "jsonwebtoken 9 (ring)", "ring alone (floor)"];

/// The token endpoint the proofs and assertions name.
const TOKEN_ENDPOINT: &str = "https://idp.example/token";

/// One signing job's figures.
#[derive(Debug, Clone)]
pub struct SigningResult {
    /// What is made, and with which algorithm.
    pub what: &'static str,
    /// CPU nanoseconds per JWS, one figure per round, by contender (in [`CONTENDERS`]'
    /// order).
    pub nanos: Vec<Vec<f64>>,
}

type Make = Box<dyn Fn() -> Option<String>>;

/// Measures every job: `rounds` rounds of `iterations` signatures per contender.
///
/// # Errors
///
/// When a key does not load or a contender's JWS does not verify.
pub fn run(
    rounds: usize,
    iterations: u32,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<SigningResult>, String> {
    let jobs: [(&'static str, &str, bool); 4] = [
        ("DPoP proof, ES256", "p256.pkcs8.pem", true),
        ("DPoP proof, EdDSA", "ed25519.pkcs8.pem", true),
        ("client assertion, ES256", "p256.pkcs8.pem", false),
        ("client assertion, RS256", "rsa2048.pkcs8.pem", false),
    ];
    let mut results = Vec::new();
    for (what, file, proof) in jobs {
        let makers = contenders(file, proof)?;
        let signer = signer(file)?;
        for (name, make) in CONTENDERS.iter().zip(&makers) {
            let token = make().ok_or_else(|| format!("{name} made no {what}"))?;
            verify(&signer, &token).map_err(|error| format!("{name}'s {what}: {error}"))?;
        }
        let mut nanos = vec![Vec::with_capacity(rounds); makers.len()];
        for round in 0..rounds {
            for offset in 0..makers.len() {
                let index = (round + offset) % makers.len();
                let make = &makers[index];
                let started = process_cpu_nanos();
                for _ in 0..iterations {
                    std::hint::black_box(make());
                }
                let spent = process_cpu_nanos() - started;
                nanos[index].push(spent as f64 / f64::from(iterations));
            }
        }
        progress(&format!("{what}: {rounds} rounds measured"));
        results.push(SigningResult { what, nanos });
    }
    Ok(results)
}

fn key_bytes(file: &str) -> Result<Vec<u8>, String> {
    let path = format!(
        "{}/../tests/vectors/keys/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).map_err(|error| format!("{path}: {error}"))
}

fn signer(file: &str) -> Result<Signer, String> {
    let key = PrivateKey::parse(&key_bytes(file)?).map_err(|error| error.to_string())?;
    Signer::new(key, latchkey_io::crypto::ring()).map_err(|error| error.to_string())
}

/// A fresh `jti`, as latchkey makes one: 128 bits from the operating system, base64url.
fn jti(random: &SystemRandom) -> String {
    let mut bytes = [0u8; 16];
    let _ = random.fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The claims of a proof (`proof`) or an assertion, with `jti`.
fn claims(proof: bool, jti: String) -> Value {
    let iat = now();
    match proof {
        true => json!({"jti": jti, "htm": "POST", "htu": TOKEN_ENDPOINT, "iat": iat}),
        false => json!({
            "iss": "cli", "sub": "cli", "aud": "https://idp.example",
            "iat": iat, "exp": iat + 60, "jti": jti,
        }),
    }
}

/// The makers of [`CONTENDERS`] for the key in `file`.
fn contenders(file: &str, proof: bool) -> Result<Vec<Make>, String> {
    let ours = signer(file)?;
    let latchkey: Make = match proof {
        true => Box::new(move || {
            Proof::new("POST", TOKEN_ENDPOINT)
                .ok()?
                .sign(&ours, SystemTime::now())
                .ok()
        }),
        false => Box::new(move || {
            ours.client_assertion("cli", "https://idp.example", SystemTime::now())
                .ok()
        }),
    };

    let signer = signer(file)?;
    let algorithm = signer.algorithm();
    let der = signer.private_key().pkcs8_der().to_vec();
    let jwk = Value::Object(signer.public_jwk().clone());
    use jsonwebtoken9 as jwt;
    let key = match algorithm {
        Algorithm::ES256 => jwt::EncodingKey::from_ec_der(&der),
        Algorithm::EdDSA => jwt::EncodingKey::from_ed_der(&der),
        // jsonwebtoken reads RSA keys as PKCS#1: the same key's PKCS#1 file.
        _ => jwt::EncodingKey::from_rsa_der(&key_bytes("rsa2048.pkcs1.der")?),
    };
    let mut header = jwt::Header::new(algorithm.name().parse().map_err(|_| "algorithm")?);
    if proof {
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(jwk).map_err(|e| e.to_string())?);
    } else {
        header.typ = None;
    }
    let random = SystemRandom::new();
    let theirs: Make =
        Box::new(move || jwt::encode(&header, &claims(proof, jti(&random)), &key).ok());

    let ring: Arc<dyn CryptoProvider> = latchkey_io::crypto::ring();
    let loaded = ring
        .signing_key(signer.private_key())
        .map_err(|error| error.to_string())?;
    let input = URL_SAFE_NO_PAD.encode(b"{\"alg\":\"ES256\"}")
        + "."
        + &URL_SAFE_NO_PAD.encode(claims(proof, "x".repeat(22)).to_string());
    let floor: Make = Box::new(move || {
        let signature = loaded.sign(input.as_bytes()).ok()?;
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    });
    Ok(vec![latchkey, theirs, floor])
}

/// Checks `token`'s signature with `signer`'s public key.
fn verify(signer: &Signer, token: &str) -> Result<(), String> {
    let (input, signature) = token.rsplit_once('.').ok_or("not a JWS")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|error| error.to_string())?;
    latchkey_io::crypto::ring()
        .verify(
            signer.algorithm(),
            signer.public_key(),
            input.as_bytes(),
            &signature,
        )
        .map_err(|error| error.to_string())
}
