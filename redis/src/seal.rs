//! Sealing what goes to Redis (S55): AES-256-GCM under keys the embedder holds, each with
//! an id written into every sealed value, so that keys can be rotated.
//!
//! # The key file
//!
//! One key a line, `ID BASE64KEY`: an id of 1 to 32 characters from `A–Z a–z 0–9 . _ -`,
//! spaces or tabs, then 32 random bytes in standard base64 with padding (44 characters).
//! Blank lines and lines starting with `#` are ignored.
//!
//! ```text
//! # newest first: it seals; every key opens
//! 2025-06 <the output of openssl rand -base64 32>
//! 2025-01 <the key before it>
//! ```
//!
//! `openssl rand -base64 32` makes a key. To rotate, put a new line at the top on every
//! replica, and remove the old one once what it sealed has expired: flow records live for
//! a login's lifetime (ten minutes by default), token sets until they are saved again.
//!
//! # The envelope
//!
//! ```text
//! "lk1" ‖ id length (1 byte) ‖ id ‖ nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)
//! ```
//!
//! The associated data authenticates the envelope's header (version and key id), the
//! record's kind (`"flow"`, `"tokens"`, `"keysets"`) and the caller's `ad` (the flow key
//! for a flow record, the store key for a token set): a value copied under another key or
//! used as another kind does not open.
//!
//! # Nonces
//!
//! Each seal draws a fresh 96-bit nonce from the operating system. Random nonces stay safe
//! for about 2³² seals under one key (the chance of a repeat, which would break GCM, is
//! then still below 2⁻³²). A login seals a record or two; a deployment that approaches
//! billions of seals should rotate its key, which starts the count again.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

/// What every sealed value starts with: the format and its version.
pub(crate) const MAGIC: &[u8] = b"lk1";
/// Bytes of an AES-256 key.
const KEY_LEN: usize = 32;
/// The longest key id, in bytes.
const MAX_ID_LEN: usize = 32;
/// Bytes of a GCM tag.
const TAG_LEN: usize = 16;

/// The keys that seal and open what is stored in Redis: the first seals, all open.
///
/// `Debug` shows the key ids only.
pub struct SealKeys {
    /// Never empty; the first seals.
    keys: Vec<(String, LessSafeKey)>,
    random: SystemRandom,
}

impl SealKeys {
    /// Reads the keys from a key file's text (the format is in the [module docs](self)).
    ///
    /// # Errors
    ///
    /// A [`SealKeyError`] naming the first line that is not a key, or
    /// [`SealKeyError::NoKeys`]. No error quotes the text.
    pub fn parse(text: &str) -> Result<SealKeys, SealKeyError> {
        let mut keys: Vec<(String, LessSafeKey)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(id), Some(encoded), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(SealKeyError::Format { line: line_number });
            };
            if !valid_id(id) {
                return Err(SealKeyError::InvalidId { line: line_number });
            }
            if keys.iter().any(|(known, _)| known == id) {
                return Err(SealKeyError::DuplicateId {
                    line: line_number,
                    id: id.to_owned(),
                });
            }
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| SealKeyError::InvalidBase64 { line: line_number })?,
            );
            if bytes.len() != KEY_LEN {
                return Err(SealKeyError::WrongLength {
                    line: line_number,
                    bytes: bytes.len(),
                });
            }
            let key =
                UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealKeyError::WrongLength {
                    line: line_number,
                    bytes: bytes.len(),
                })?;
            keys.push((id.to_owned(), LessSafeKey::new(key)));
        }
        if keys.is_empty() {
            return Err(SealKeyError::NoKeys);
        }
        Ok(SealKeys {
            keys,
            random: SystemRandom::new(),
        })
    }

    /// Reads the keys from a key file.
    ///
    /// # Errors
    ///
    /// [`SealKeyError::Unreadable`] when the file cannot be read as UTF-8 text, and what
    /// [`parse`](SealKeys::parse) refuses.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SealKeys, SealKeyError> {
        let path = path.as_ref();
        let unreadable = |reason: String| SealKeyError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        let bytes =
            Zeroizing::new(std::fs::read(path).map_err(|error| unreadable(error.to_string()))?);
        let text =
            std::str::from_utf8(&bytes).map_err(|_| unreadable("not UTF-8 text".to_owned()))?;
        SealKeys::parse(text)
    }

    /// The key ids, the sealing one first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Seals `plaintext` with the first key, binding it to `kind` and `ad`.
    ///
    /// # Errors
    ///
    /// [`SealError`] when the operating system's random number generator fails.
    pub fn seal(&self, kind: &str, ad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let (id, key) = &self.keys[0];
        let mut nonce = [0; NONCE_LEN];
        self.random.fill(&mut nonce).map_err(|_| SealError(()))?;
        let mut sealed = Vec::with_capacity(header_len(id) + NONCE_LEN + plaintext.len() + TAG_LEN);
        push_header(&mut sealed, id);
        let aad = associated_data(&sealed, kind, ad);
        sealed.extend_from_slice(&nonce);
        // Plaintext until sealed: zeroed when dropped, should sealing fail.
        let mut in_out = Zeroizing::new(Vec::with_capacity(plaintext.len() + TAG_LEN));
        in_out.extend_from_slice(plaintext);
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut *in_out,
        )
        .map_err(|_| SealError(()))?;
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens what [`seal`](SealKeys::seal) made with the same `kind` and `ad`, with
    /// whichever key sealed it.
    ///
    /// # Errors
    ///
    /// An [`OpenError`]: the key id is not among these keys, the value is not an
    /// envelope, or it fails authentication (tampered, or sealed for another kind or `ad`).
    pub fn open(
        &self,
        kind: &str,
        ad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(OpenError::Malformed)?;
        let (&id_len, rest) = rest.split_first().ok_or(OpenError::Malformed)?;
        let id_len = usize::from(id_len);
        if id_len == 0 || id_len > MAX_ID_LEN || rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id)
            .ok()
            .filter(|id| valid_id(id))
            .ok_or(OpenError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find_map(|(known, key)| (known == id).then_some(key))
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError::Malformed)?;
        let aad = associated_data(&sealed[..header_len(id)], kind, ad);
        let mut in_out = Zeroizing::new(ciphertext.to_vec());
        let plain_len = key
            .open_in_place(nonce, Aad::from(&aad), &mut in_out)
            .map_err(|_| OpenError::Authentication)?
            .len();
        in_out.truncate(plain_len);
        Ok(in_out)
    }
}

impl fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKeys")
            .field("ids", &self.ids().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn header_len(id: &str) -> usize {
    MAGIC.len() + 1 + id.len()
}

fn push_header(out: &mut Vec<u8>, id: &str) {
    out.extend_from_slice(MAGIC);
    // Ids are at most 32 bytes (checked when parsed).
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id.as_bytes());
}

/// The header, the kind (its length first, so that no kind and `ad` pair reads as
/// another), and `ad`.
fn associated_data(header: &[u8], kind: &str, ad: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + 8 + kind.len() + ad.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(&(kind.len() as u64).to_be_bytes());
    aad.extend_from_slice(kind.as_bytes());
    aad.extend_from_slice(ad);
    aad
}

/// Why a key file was refused. Messages name the line, never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealKeyError {
    /// The file could not be read.
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A line is not `ID BASE64KEY`.
    Format {
        /// The line's number, from 1.
        line: usize,
    },
    /// A key id is longer than 32 characters or has one outside `A–Z a–z 0–9 . _ -`.
    InvalidId {
        /// The line's number, from 1.
        line: usize,
    },
    /// A key id was given before.
    DuplicateId {
        /// The line's number, from 1.
        line: usize,
        /// The id.
        id: String,
    },
    /// A key is not standard base64 with padding.
    InvalidBase64 {
        /// The line's number, from 1.
        line: usize,
    },
    /// A key is not 32 bytes long.
    WrongLength {
        /// The line's number, from 1.
        line: usize,
        /// How many bytes it has.
        bytes: usize,
    },
    /// The file holds no key.
    NoKeys,
}

impl fmt::Display for SealKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SealKeyError::Unreadable { path, reason } => {
                write!(f, "seal key file {}: {reason}", path.display())
            }
            SealKeyError::Format { line } => {
                write!(f, "seal keys, line {line}: not `ID BASE64KEY`")
            }
            SealKeyError::InvalidId { line } => write!(
                f,
                "seal keys, line {line}: the key id must be 1 to 32 characters of A-Z a-z 0-9 . _ -"
            ),
            SealKeyError::DuplicateId { line, id } => {
                write!(f, "seal keys, line {line}: key id {id:?} is given twice")
            }
            SealKeyError::InvalidBase64 { line } => write!(
                f,
                "seal keys, line {line}: the key is not standard base64 with padding"
            ),
            SealKeyError::WrongLength { line, bytes } => write!(
                f,
                "seal keys, line {line}: the key is {bytes} bytes long, not {KEY_LEN}"
            ),
            SealKeyError::NoKeys => f.write_str("seal keys: no key given"),
        }
    }
}

impl std::error::Error for SealKeyError {}

/// Why a sealed value did not open.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// It was sealed with a key whose id is not among the keys (removed too early, or not
    /// yet given to this replica).
    UnknownKey(String),
    /// It is not a sealed value.
    Malformed,
    /// It fails authentication: altered, or sealed for another kind or key.
    Authentication,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::UnknownKey(id) => {
                write!(
                    f,
                    "sealed with key id {id:?}, which is not among the seal keys"
                )
            }
            OpenError::Malformed => f.write_str("not a sealed value"),
            OpenError::Authentication => f.write_str(
                "the sealed value fails authentication (altered, or stored under another key)",
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// Sealing failed: the operating system's random number generator did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealError(());

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sealing failed: no randomness from the operating system")
    }
}

impl std::error::Error for SealError {}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    fn keys(text: &str) -> SealKeys {
        SealKeys::parse(text).expect("valid keys")
    }

    #[test]
    fn sealed_values_open_and_hide_their_plaintext() {
        let keys = keys(&format!("a {K1}"));
        let sealed = keys
            .seal("tokens", b"alice", b"the secret")
            .expect("sealed");
        assert!(sealed.starts_with(b"lk1\x01a"));
        assert!(!sealed.windows(10).any(|w| w == b"the secret"));
        assert_eq!(
            keys.open("tokens", b"alice", &sealed)
                .expect("opens")
                .as_slice(),
            b"the secret"
        );
        // A fresh nonce each time.
        assert_ne!(
            sealed,
            keys.seal("tokens", b"alice", b"the secret")
                .expect("sealed")
        );
    }

    #[test]
    fn s55_a_value_under_another_key_or_kind_or_altered_does_not_open() {
        let keys = keys(&format!("a {K1}"));
        let sealed = keys.seal("flow", b"key one", b"record").expect("sealed");
        assert_eq!(
            keys.open("flow", b"key two", &sealed),
            Err(OpenError::Authentication)
        );
        assert_eq!(
            keys.open("tokens", b"key one", &sealed),
            Err(OpenError::Authentication)
        );
        // The kind and `ad` are not merely concatenated.
        assert_eq!(
            keys.open("flo", b"wkey one", &sealed),
            Err(OpenError::Authentication)
        );
        for at in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[at] ^= 1;
            assert!(
                keys.open("flow", b"key one", &altered).is_err(),
                "byte {at}"
            );
        }
    }

    #[test]
    fn s55_rotated_keys_open_old_values_and_seal_with_the_first() {
        let old = keys(&format!("old {K1}"));
        let sealed_before = old.seal("tokens", b"k", b"before").expect("sealed");
        let rotated = keys(&format!("# rotated\nnew {K2}\n\nold {K1}\n"));
        assert_eq!(rotated.ids().collect::<Vec<_>>(), ["new", "old"]);
        assert_eq!(
            rotated
                .open("tokens", b"k", &sealed_before)
                .expect("opens")
                .as_slice(),
            b"before"
        );
        let sealed_after = rotated.seal("tokens", b"k", b"after").expect("sealed");
        assert!(sealed_after.starts_with(b"lk1\x03new"));
        assert_eq!(
            old.open("tokens", b"k", &sealed_after),
            Err(OpenError::UnknownKey("new".into()))
        );
        // Same id, other key bytes: authentication fails rather than garbage coming out.
        let impostor = keys(&format!("new {K1}"));
        assert_eq!(
            impostor.open("tokens", b"k", &sealed_after),
            Err(OpenError::Authentication)
        );
    }

    #[test]
    fn anything_but_an_envelope_is_malformed_without_panicking() {
        let keys = keys(&format!("a {K1}"));
        let sealed = keys.seal("k", b"", b"").expect("sealed");
        for cut in 0..sealed.len() {
            assert!(keys.open("k", b"", &sealed[..cut]).is_err(), "cut at {cut}");
        }
        for garbage in [
            &b""[..],
            b"lk1",
            b"lk1\x00",
            b"lk2\x01a000000000000000000000000000000",
            b"lk1\x21aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000000000000000000000000",
            b"lk1\x01\xff000000000000000000000000000",
            b"used",
            b"ended",
        ] {
            assert_eq!(
                keys.open("k", b"", garbage),
                Err(OpenError::Malformed),
                "{garbage:?}"
            );
        }
        assert_eq!(keys.open("k", b"", &sealed).expect("opens").len(), 0);
    }

    #[test]
    fn key_files_are_refused_by_line_without_echoing_keys() {
        let short = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB";
        let cases: [(String, SealKeyError); 9] = [
            (String::new(), SealKeyError::NoKeys),
            ("# only a comment\n\n".into(), SealKeyError::NoKeys),
            (format!("a {K1}\nb\n"), SealKeyError::Format { line: 2 }),
            (format!("a {K1} extra"), SealKeyError::Format { line: 1 }),
            (format!("bad/id {K1}"), SealKeyError::InvalidId { line: 1 }),
            (
                format!("{} {K1}", "x".repeat(33)),
                SealKeyError::InvalidId { line: 1 },
            ),
            (
                format!("a {K1}\n\n  a {K2}"),
                SealKeyError::DuplicateId {
                    line: 3,
                    id: "a".into(),
                },
            ),
            (
                "a AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE".into(),
                SealKeyError::InvalidBase64 { line: 1 },
            ),
            (
                format!("a {short}"),
                SealKeyError::WrongLength { line: 1, bytes: 30 },
            ),
        ];
        for (text, expected) in cases {
            let error = SealKeys::parse(&text).expect_err(&text);
            assert_eq!(error, expected, "{text:?}");
            let message = error.to_string();
            assert!(
                !message.contains("AQEB") && !message.contains("AgIC"),
                "{message}"
            );
        }
        // Tabs, CRLF and indented comments are fine; base64url is not standard base64.
        assert!(SealKeys::parse(&format!("  # c\r\na\t{K1}\r\n")).is_ok());
        assert_eq!(
            SealKeys::parse("a AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB_-8=").err(),
            Some(SealKeyError::InvalidBase64 { line: 1 })
        );
    }

    #[test]
    fn debug_shows_ids_only() {
        let keys = keys(&format!("first {K1}\nsecond {K2}"));
        let debug = format!("{keys:?}");
        assert_eq!(debug, r#"SealKeys { ids: ["first", "second"] }"#);
    }

    #[test]
    fn key_files_are_read_from_disk() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("seal-keys");
        std::fs::write(&path, format!("a {K1}\n")).expect("written");
        assert_eq!(
            SealKeys::from_file(&path)
                .expect("read")
                .ids()
                .collect::<Vec<_>>(),
            ["a"]
        );
        let missing = dir.path().join("missing");
        assert!(matches!(
            SealKeys::from_file(&missing),
            Err(SealKeyError::Unreadable { path, .. }) if path == missing
        ));
        std::fs::write(&path, b"a \xff\n").expect("written");
        assert!(matches!(
            SealKeys::from_file(&path),
            Err(SealKeyError::Unreadable { reason, .. }) if reason == "not UTF-8 text"
        ));
    }
}
