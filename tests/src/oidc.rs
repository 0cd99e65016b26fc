//! The reference identity provider: the OpenID-certified `oidc-provider` from npm, started
//! on an ephemeral loopback port by `tests/interop/idp.mjs`.
//!
//! Missing tools are failures with a message saying how to install them, never skips:
//! `scripts/test.sh` installs them on a fresh machine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

/// The interop folder: `package.json`, the lock file, `node_modules`, the scripts.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// Panics with installation advice unless Node.js and the interop packages are present.
pub fn require_node_packages() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|out| out.status.success()),
        "the interop tests need Node.js 20 or later on PATH (Debian: apt-get install nodejs)"
    );
    let modules = interop_dir().join("node_modules/oidc-provider/package.json");
    assert!(
        modules.is_file(),
        "the interop tests need their npm packages: run `npm ci` in {} (scripts/test.sh does)",
        interop_dir().display()
    );
}

/// A client registered at the provider.
#[derive(Debug, Clone, Copy)]
pub struct RegisteredClient {
    /// Its id.
    pub id: &'static str,
    /// Its secret, if confidential.
    pub secret: Option<&'static str>,
    /// Its token endpoint authentication method, as OAuth names it.
    pub method: &'static str,
}

/// `client_secret_basic`; the secret needs form-encoding before base64 (RFC 6749 §2.3.1).
pub const BASIC: RegisteredClient = RegisteredClient {
    id: "basic-client",
    secret: Some("s3cr3t+/:%&= ~!"),
    method: "client_secret_basic",
};
/// `client_secret_post`.
pub const POST: RegisteredClient = RegisteredClient {
    id: "post-client",
    secret: Some("post-secret"),
    method: "client_secret_post",
};
/// A public client (`none`), PKCE required.
pub const PUBLIC: RegisteredClient = RegisteredClient {
    id: "public-client",
    secret: None,
    method: "none",
};
/// All three client authentication methods.
pub const CLIENTS: [RegisteredClient; 3] = [BASIC, POST, PUBLIC];
/// A public client whose ID tokens are signed with ES256 (P-256).
pub const ES256: RegisteredClient = RegisteredClient {
    id: "es256-client",
    secret: None,
    method: "none",
};
/// A public client whose ID tokens are signed with EdDSA (Ed25519).
pub const EDDSA: RegisteredClient = RegisteredClient {
    id: "eddsa-client",
    secret: None,
    method: "none",
};

/// A running `oidc-provider`; stopped when dropped.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    /// Closing it ends the provider even if this process dies without dropping us.
    _stdin: Option<ChildStdin>,
    issuer: String,
}

impl OidcProvider {
    /// Starts a provider and waits until it listens.
    pub fn start() -> OidcProvider {
        require_node_packages();
        let mut child = Command::new("node")
            .arg(interop_dir().join("idp.mjs"))
            .current_dir(interop_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start node tests/interop/idp.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        // oidc-provider prints notices later; a closed pipe would kill it (EPIPE).
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        let started: serde_json::Value = match read {
            Ok(n) if n > 0 => serde_json::from_str(&line).expect("idp.mjs prints one JSON line"),
            _ => {
                let _ = child.kill();
                panic!(
                    "oidc-provider did not start (run tests/interop/idp.mjs by hand to see why)"
                );
            }
        };
        let issuer = started["issuer"].as_str().expect("issuer").to_owned();
        OidcProvider {
            child,
            _stdin: stdin,
            issuer,
        }
    }

    /// The issuer, `http://127.0.0.1:PORT`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The authorization endpoint.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// The key set that checks its ID tokens.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// Rotates the provider's signing keys: from now on its ID tokens name new `kid`s, and
    /// its key set lists only the new keys (see `idp.mjs`).
    pub fn rotate_keys(&self) {
        rotate_keys_at(&self.issuer);
    }
}

/// [`OidcProvider::rotate_keys`] for the provider at `issuer`, from any thread.
pub fn rotate_keys_at(issuer: &str) {
    let address = issuer.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the provider");
    let request = format!(
        "POST /__test/rotate HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).expect("ask for a rotation");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("the answer");
    assert!(
        answer.starts_with("HTTP/1.1 204"),
        "rotation refused: {answer}"
    );
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
