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
///
/// Each call runs on a thread of its own and is given up after a time limit (a minute by
/// default, [`OsKeychain::with_time_limit`]): a locked keychain may show an unlock dialog and
/// wait for the user, and a Secret Service daemon that stopped answering would otherwise
/// block for good. A call given up is an error; its thread ends when the store answers.
#[cfg(feature = "keychain")]
#[derive(Debug, Clone, Copy)]
pub struct OsKeychain {
    time_limit: std::time::Duration,
}

#[cfg(feature = "keychain")]
impl Default for OsKeychain {
    fn default() -> OsKeychain {
        OsKeychain::new()
    }
}

#[cfg(feature = "keychain")]
impl OsKeychain {
    /// The platform's store, each call given a minute.
    pub fn new() -> OsKeychain {
        OsKeychain {
            time_limit: std::time::Duration::from_secs(60),
        }
    }

    /// The platform's store, each call given `time_limit`.
    #[must_use]
    pub fn with_time_limit(time_limit: std::time::Duration) -> OsKeychain {
        OsKeychain { time_limit }
    }

    /// Runs `call` on the entry of `account` on a thread of its own, within the time limit.
    fn call<T: Send + 'static>(
        &self,
        account: &str,
        doing: &'static str,
        call: impl FnOnce(&keyring::Entry) -> Result<T, keyring::Error> + Send + 'static,
    ) -> Result<Result<T, keyring::Error>, StoreError> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let account = account.to_owned();
        std::thread::Builder::new()
            .name("latchkey-keychain".to_owned())
            .spawn(move || {
                let result =
                    keyring::Entry::new(KEYCHAIN_SERVICE, &account).and_then(|entry| call(&entry));
                // The caller may have given up; nobody is left to tell.
                let _ = answer.send(result);
            })
            .map_err(|error| {
                StoreError::new(format!(
                    "{doing} the OS keychain: no thread for it: {error}"
                ))
            })?;
        answered.recv_timeout(self.time_limit).map_err(|_| {
            StoreError::new(format!(
                "{doing} the OS keychain: {} did not answer within {} s (locked, and waiting \
                 for you to unlock it?); the tokens were not written anywhere else",
                self.name(),
                self.time_limit.as_secs()
            ))
        })
    }

    /// `error` as a message that says what failed and what to do; never the secret (the
    /// variants that carry its bytes are described without them).
    fn error(&self, doing: &str, error: &keyring::Error) -> StoreError {
        let name = self.name();
        let advice = match error {
            keyring::Error::NoDefaultStore => {
                // Why the store could not be set up is only known there.
                let cause = match keyring::Entry::store_status() {
                    Err(cause) => format!(": {cause}"),
                    Ok(()) => String::new(),
                };
                let hint = if cfg!(any(target_os = "macos", windows)) {
                    ""
                } else {
                    " (is a Secret Service such as gnome-keyring running on the D-Bus session \
                     bus?)"
                };
                format!("{name} is not available here{hint}{cause}")
            }
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
        let secret = secret.to_vec();
        self.call(account, "writing to", move |entry| {
            entry.set_secret(&secret)
        })?
        .map_err(|error| self.error("writing to", &error))
    }

    fn get(&self, account: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.call(account, "reading", keyring::Entry::get_secret)? {
            Ok(secret) => Ok(Some(secret)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(error) => Err(self.error("reading", &error)),
        }
    }

    fn delete(&self, account: &str) -> Result<(), StoreError> {
        match self.call(account, "deleting from", keyring::Entry::delete_credential)? {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(error) => Err(self.error("deleting from", &error)),
        }
    }
}
