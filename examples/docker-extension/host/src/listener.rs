//! Opening the loopback port: one socket for an IP literal, two for `localhost`.
//!
//! `localhost` may resolve to 127.0.0.1 or ::1, and browsers try both, so both are bound on
//! one port: 127.0.0.1 first (the system picks the port when none is fixed), then ::1 on
//! that port. A machine without IPv6 is served on 127.0.0.1 alone. When ::1 is busy on a
//! port the system picked, the pair is tried again on a new port, a few times.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use crate::redirect::{LoopbackHost, RedirectUri};

/// How many port pairs are tried for `localhost` before giving up.
pub const PAIR_ATTEMPTS: usize = 8;

/// The open sockets.
#[derive(Debug)]
pub struct Bound {
    /// One socket, or two for `localhost`.
    pub listeners: Vec<TcpListener>,
    /// The port they listen on.
    pub port: u16,
    /// Whether `localhost` is served on 127.0.0.1 only because this machine has no IPv6.
    pub without_ipv6: bool,
}

/// Why the port could not be opened.
#[derive(Debug)]
pub enum BindError {
    /// The fixed port of the redirect URI is taken by another program.
    PortInUse {
        /// That port.
        port: u16,
    },
    /// Listening failed for another reason.
    CannotListen {
        /// The address that could not be bound.
        address: SocketAddr,
        /// Whether the address had a fixed port from the redirect URI.
        fixed: bool,
        /// What the system said.
        error: io::Error,
    },
    /// No port was free on both 127.0.0.1 and ::1 after [`PAIR_ATTEMPTS`] tries.
    NoFreePair,
}

impl BindError {
    /// The `error` word of the output line.
    pub fn kind(&self) -> &'static str {
        match self {
            BindError::PortInUse { .. } => "port_in_use",
            BindError::CannotListen { .. } | BindError::NoFreePair => "cannot_listen",
        }
    }

    /// Words for the person signing in, with what to do about it.
    pub fn message(&self, redirect: &RedirectUri) -> String {
        let portless = format!("http://{}{}", redirect.host, redirect.path);
        match self {
            BindError::PortInUse { port } => format!(
                "Port {port} is in use by another program, so the sign-in cannot receive the \
                 browser's redirect. Close that program and sign in again, or register the \
                 redirect URI without a port ({portless}) so that any free port works."
            ),
            BindError::CannotListen {
                address,
                fixed: true,
                error,
            } if error.kind() == io::ErrorKind::PermissionDenied => format!(
                "The system does not allow listening on port {port} ({error}). On Windows, \
                 Hyper-V reserves ranges of ports (netsh interface ipv4 show excludedportrange \
                 protocol=tcp). Register the redirect URI without a port ({portless}) so that \
                 any free port works.",
                port = address.port()
            ),
            BindError::CannotListen { address, error, .. } => {
                format!("Cannot listen on {address} for the browser's redirect: {error}.")
            }
            BindError::NoFreePair => format!(
                "Cannot find a port free on both 127.0.0.1 and ::1 for localhost after \
                 {PAIR_ATTEMPTS} tries. Sign in again, or register the redirect URI with \
                 127.0.0.1 instead of localhost."
            ),
        }
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::PortInUse { port } => write!(f, "port {port} is in use"),
            BindError::CannotListen { address, error, .. } => {
                write!(f, "cannot listen on {address}: {error}")
            }
            BindError::NoFreePair => f.write_str("no port free on both 127.0.0.1 and ::1"),
        }
    }
}

impl std::error::Error for BindError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BindError::CannotListen { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Opens the port the redirect URI names.
pub fn bind(redirect: &RedirectUri) -> Result<Bound, BindError> {
    let port = redirect.port.unwrap_or(0);
    let single = |ip: IpAddr| {
        let listener = bind_one(SocketAddr::new(ip, port), redirect.port.is_some())?;
        let port = local_port(&listener, ip)?;
        Ok(Bound {
            listeners: vec![listener],
            port,
            without_ipv6: false,
        })
    };
    match redirect.host {
        LoopbackHost::V4(ip) => single(IpAddr::V4(ip)),
        LoopbackHost::V6 => single(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        LoopbackHost::Localhost(_) => bind_pair(redirect.port),
    }
}

/// Binds 127.0.0.1 and ::1 on one port, for `localhost`.
fn bind_pair(fixed: Option<u16>) -> Result<Bound, BindError> {
    let v4_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for _ in 0..PAIR_ATTEMPTS {
        let v4 = bind_one(SocketAddr::new(v4_ip, fixed.unwrap_or(0)), fixed.is_some())?;
        let port = local_port(&v4, v4_ip)?;
        let v6_address = SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port);
        match TcpListener::bind(v6_address) {
            Ok(v6) => {
                return Ok(Bound {
                    listeners: vec![v4, v6],
                    port,
                    without_ipv6: false,
                });
            }
            Err(error) if is_ipv6_unavailable(&error) => {
                return Ok(Bound {
                    listeners: vec![v4],
                    port,
                    without_ipv6: true,
                });
            }
            // Another program has ::1 on the port the system gave us for 127.0.0.1:
            // let go of both and take a new port.
            Err(error) if error.kind() == io::ErrorKind::AddrInUse && fixed.is_none() => {}
            Err(error) => return Err(classify(v6_address, fixed.is_some(), error)),
        }
    }
    Err(BindError::NoFreePair)
}

/// Binds one address.
fn bind_one(address: SocketAddr, fixed: bool) -> Result<TcpListener, BindError> {
    TcpListener::bind(address).map_err(|error| classify(address, fixed, error))
}

/// The port a socket got.
fn local_port(listener: &TcpListener, ip: IpAddr) -> Result<u16, BindError> {
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|error| BindError::CannotListen {
            address: SocketAddr::new(ip, 0),
            fixed: false,
            error,
        })
}

/// Tells a busy fixed port from every other failure.
fn classify(address: SocketAddr, fixed: bool, error: io::Error) -> BindError {
    if fixed && error.kind() == io::ErrorKind::AddrInUse {
        BindError::PortInUse {
            port: address.port(),
        }
    } else {
        BindError::CannotListen {
            address,
            fixed,
            error,
        }
    }
}

/// Whether binding ::1 failed because this machine has no IPv6: the address is missing
/// (IPv6 switched off on the loopback interface) or the address family is not supported
/// (IPv6 left out of the system).
fn is_ipv6_unavailable(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::AddrNotAvailable
        || error.kind() == io::ErrorKind::Unsupported
        || error.raw_os_error() == EAFNOSUPPORT
}

/// The system's "address family not supported" error number, which the standard library
/// does not give an error kind of its own.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EAFNOSUPPORT: Option<i32> = Some(97);
/// The system's "address family not supported" error number.
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
const EAFNOSUPPORT: Option<i32> = Some(47);
/// The system's "address family not supported" error number (WSAEAFNOSUPPORT).
#[cfg(windows)]
const EAFNOSUPPORT: Option<i32> = Some(10047);
/// Unknown on this system: only the standard library's error kinds are used.
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly",
    windows
)))]
const EAFNOSUPPORT: Option<i32> = None;

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> RedirectUri {
        match RedirectUri::parse(text) {
            Ok(uri) => uri,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn an_ephemeral_port_is_picked_by_the_system() {
        let bound = match bind(&uri("http://127.0.0.1/cb")) {
            Ok(bound) => bound,
            Err(e) => panic!("{e}"),
        };
        assert_ne!(bound.port, 0);
        assert_eq!(bound.listeners.len(), 1);
    }

    #[test]
    fn a_busy_fixed_port_is_port_in_use_and_the_message_names_it() {
        let taken = match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let port = taken.local_addr().map(|a| a.port()).unwrap_or(0);
        let redirect = uri(&format!("http://127.0.0.1:{port}/cb"));
        match bind(&redirect) {
            Err(e @ BindError::PortInUse { .. }) => {
                assert_eq!(e.kind(), "port_in_use");
                let message = e.message(&redirect);
                assert!(message.contains(&format!("Port {port} ")), "{message}");
                assert!(message.contains("http://127.0.0.1/cb"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn missing_ipv6_is_recognised() {
        assert!(is_ipv6_unavailable(&io::Error::from(
            io::ErrorKind::AddrNotAvailable
        )));
        if let Some(code) = EAFNOSUPPORT {
            assert!(is_ipv6_unavailable(&io::Error::from_raw_os_error(code)));
        }
        assert!(!is_ipv6_unavailable(&io::Error::from(
            io::ErrorKind::AddrInUse
        )));
    }
}
