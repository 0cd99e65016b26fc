//! `latchkey proof`: a DPoP proof (RFC 9449) for a script's own request with the stored
//! access token, made with the key the tokens are bound to.
//!
//! ```text
//! curl -H "Authorization: DPoP $(latchkey token --reveal)" \
//!      -H "DPoP: $(latchkey proof --method GET --url https://api.example/me)" \
//!      https://api.example/me
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use latchkey::dpop::Proof;
use latchkey::keys::Signer;
use latchkey_io::store::{FileStore, OsKeychain, TokenStore};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::args::ProofArgs;
use crate::report::Reporter;
use crate::session::{for_profile, login_command};

/// Prints the proof on stdout (in a JSON object with `--json`).
pub fn run(args: &ProofArgs) -> ExitCode {
    match proof(args) {
        Ok((proof, htu, jkt)) => {
            if args.file.json {
                println!("{}", json!({ "proof": proof, "htu": htu, "jkt": jkt }));
            } else {
                println!("{proof}");
            }
            ExitCode::SUCCESS
        }
        Err((kind, message, code)) => {
            Reporter::new(args.file.json).error(kind, &message);
            ExitCode::from(code)
        }
    }
}

type Refusal = (&'static str, String, u8);

fn proof(args: &ProofArgs) -> Result<(String, String, String), Refusal> {
    let request = Proof::new(&args.method, &args.url).map_err(|error| {
        let message = format!("{error}: --method {:?} --url {:?}", args.method, args.url);
        ("config", message, 2)
    })?;
    let store = FileStore::new(&args.file.store).with_keychain(Arc::new(OsKeychain::new()), false);
    let profile = args.profile.as_str();
    let tokens = match store.load(profile) {
        Ok(Some(tokens)) => tokens,
        Ok(None) => {
            let message = format!(
                "no tokens stored{} in {}; run `{} --dpop` first",
                for_profile(profile),
                store.path().display(),
                login_command(profile)
            );
            return Err(("login_required", message, 1));
        }
        Err(error) => {
            let message = format!("{error}; check the --store path (or the keychain)");
            return Err(("store", message, 1));
        }
    };
    let Some(key) = tokens.dpop_key() else {
        let message = format!(
            "the tokens{} are bearer tokens, bound to no key; run `{} --dpop` for DPoP-bound \
             ones",
            for_profile(profile),
            login_command(profile)
        );
        return Err(("not_dpop_bound", message, 1));
    };
    let signer = Signer::new(key.clone(), latchkey_io::crypto::ring()).map_err(|error| {
        let message = format!("the stored DPoP key cannot be used: {error}");
        ("store", message, 1)
    })?;
    let token = tokens.access_token().expose_secret();
    let mut request = request.access_token(token);
    if let Some(nonce) = &args.nonce {
        request = request.nonce(nonce);
    }
    let htu = request.htu().to_owned();
    let proof = request
        .sign(&signer, SystemTime::now())
        .map_err(|error| ("config", format!("{error}: --nonce"), 2))?;
    Ok((proof, htu, signer.thumbprint().to_owned()))
}
