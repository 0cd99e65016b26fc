//! Where a service listens: the redirect URI's own address, or both loopback addresses for
//! `localhost` (S21), or what the embedder asked for.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use latchkey::Config;

use super::Error;

/// Connections the kernel queues for `accept` (the standard library's 128 overflows when a
/// burst of connections arrives faster than the accept loop takes them, and the kernel then
/// drops SYNs, which clients retry only after a second; the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 1024;

/// Raises a bound listener's accept queue to [`BACKLOG`]: `listen` on a listening socket
/// sets its backlog anew. Best effort: the standard queue still works.
fn deepen_backlog(listener: &TcpListener) {
    #[cfg(unix)]
    let _ = rustix::net::listen(listener, BACKLOG);
    #[cfg(not(unix))]
    let _ = (listener, BACKLOG);
}

/// Binds every listening address; the defaults share one port.
pub(super) fn bind_all(config: &Config, bind: &[SocketAddr]) -> Result<Vec<TcpListener>, Error> {
    let port = config.redirect_port();
    let defaults = default_bind_addrs(config.redirect_host(), port);
    let addrs = if bind.is_empty() { &defaults } else { bind };
    let mut listeners: Vec<TcpListener> = Vec::new();
    let mut bound_port = port;
    for (index, addr) in addrs.iter().enumerate() {
        // A second default address shares the first one's (possibly ephemeral) port.
        let mut addr = *addr;
        if bind.is_empty() && addr.port() == 0 {
            addr.set_port(bound_port);
        }
        match TcpListener::bind(addr) {
            Ok(listener) => {
                bound_port = listener.local_addr().map_err(Error::Io)?.port();
                deepen_backlog(&listener);
                listeners.push(listener);
            }
            // ::1 may not exist (IPv6 disabled): the IPv4 listener is enough then.
            Err(_) if bind.is_empty() && index > 0 => {}
            Err(source) => return Err(Error::Bind { addr, source }),
        }
    }
    Ok(listeners)
}

/// The redirect host's own address, or both loopback addresses for `localhost`.
fn default_bind_addrs(host: &str, port: u16) -> Vec<SocketAddr> {
    let unbracketed = host.trim_start_matches('[').trim_end_matches(']');
    match unbracketed.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => vec![
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
        ],
    }
}
