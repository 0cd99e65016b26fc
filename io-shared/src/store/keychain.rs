//! [`Keychain`]: the operating system's credential store, for token sets that must not
//! sit in a file; [`OsKeychain`] (feature `keychain`) is the platform's own.

use latchkey::StoreError;

/// The service name latchkey's keychain items are filed under.
pub const KEYCHAIN_SERVICE: &str = "latchkey";

/// A credential store holding one secret per account name of latchkey's service. It may
/// block (on its daemon or on the user); stores calling it run on the blocking pool. A
/// failure is an error that says why: a keychain never stands in for another place.
pub trait Keychain: Send + Sync + 'static {
    /// What the user knows the store as ("the Secret Service", "the macOS Keychain"), for
    /// messages.
    fn name(&self) -> &str;

    /// Stores `secret` for `account`, replacing what was there.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] saying why the store refused (locked, absent, too large); what was
    /// there before is kept.
    fn set(&self, account: &str, secret: &[u8]) -> Result<(), StoreError>;

    /// The secret of `account`, or `None` when there is none.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] saying why the store could not be read.
    fn get(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Removes `account`'s secret; removing an absent one succeeds.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] saying why the store could not be changed.
    fn delete(&self, account: &str) -> Result<(), StoreError>;
}

/// The platform's credential store through the `keyring` crate: the Keychain on macOS, the
/// Credential Manager on Windows, the Secret Service (GNOME Keyring, KWallet) over D-Bus
/// elsewhere. Items are generic passwords of service [`KEYCHAIN_SERVICE`]. Nothing is
/// opened until the first call.
#[cfg(feature = "keychain")]
#[derive(Debug, Default, Clone, Copy)]
pub struct OsKeychain;

#[cfg(feature = "keychain")]
impl OsKeychain {
    fn entry(&self, account: &str, doing: &str) -> Result<keyring::Entry, StoreError> {
        keyring::Entry::new(KEYCHAIN_SERVICE, account).map_err(|error| self.error(doing, &error))
    }

    /// `error` as a message that says what failed and what to do; never the secret (the
    /// variants that carry its bytes are described without them).
    fn error(&self, doing: &str, error: &keyring::Error) -> StoreError {
        let name = self.name();
        let advice = match error {
            keyring::Error::NoDefaultStore => format!(
                "{name} is not available here{}",
                if cfg!(any(target_os = "macos", windows)) {
                    String::new()
                } else {
                    " (is a Secret Service such as gnome-keyring running on the D-Bus session \
                     bus?)"
                        .to_owned()
                }
            ),
            keyring::Error::NoStorageAccess(cause) => {
                format!("{name} cannot be used (is it locked?): {cause}")
            }
            keyring::Error::PlatformFailure(cause) => format!("{name} failed: {cause}"),
            keyring::Error::TooLong(what, limit) => {
                format!("{name} refuses a {what} longer than {limit} bytes, which these tokens are")
            }
            keyring::Error::BadEncoding(_) | keyring::Error::BadDataFormat(..) => {
                format!("{name} holds an item latchkey cannot read")
            }
            keyring::Error::Ambiguous(items) => format!(
                "{name} has {} items for this login; remove them with the keychain's own tool",
                items.len()
            ),
            other => format!("{name}: {other}"),
        };
        StoreError::new(format!(
            "{doing} the OS keychain: {advice}; the tokens were not written anywhere else"
        ))
    }
}

#[cfg(feature = "keychain")]
impl Keychain for OsKeychain {
    fn name(&self) -> &str {
        if cfg!(target_os = "macos") {
            "the macOS Keychain"
        } else if cfg!(windows) {
            "the Windows Credential Manager"
        } else {
            "the Secret Service"
        }
    }

    fn set(&self, account: &str, secret: &[u8]) -> Result<(), StoreError> {
        self.entry(account, "writing to")?
            .set_secret(secret)
            .map_err(|error| self.error("writing to", &error))
    }

    fn get(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.entry(account, "reading")?.get_secret() {
            Ok(secret) => Ok(Some(secret)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(error) => Err(self.error("reading", &error)),
        }
    }

    fn delete(&self, account: &str) -> Result<(), StoreError> {
        match self.entry(account, "deleting from")?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(error) => Err(self.error("deleting from", &error)),
        }
    }
}
