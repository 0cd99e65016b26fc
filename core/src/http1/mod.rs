//! HTTP/1.1 client framing, sans-IO: the bytes of a token request and its
//! response, for drivers that own a TCP/TLS stream.
//!
//! A driver that talks to an OAuth token endpoint over its own connection
//! serializes the engine's [`http::Request`] with [`write_request`], writes
//! the bytes to the stream, and hands every chunk it reads back to a
//! [`ResponseReader`] until that returns the complete [`http::Response`].
//! Nothing here opens sockets, reads clocks or blocks: the driver only moves
//! bytes.
//!
//! The scope is deliberately narrow: one request at a time on a connection
//! (`connection: close` is sent, or with [`write_persistent_request`] the
//! connection may carry the next request once
//! [`ResponseReader::reusable`] says the server kept it open; nothing is
//! pipelined), `content-length` framing for requests, and `content-length`,
//! chunked or close-delimited bodies for responses, with a hard cap on the
//! size of the response.

mod read;
mod write;

pub use read::{ReadError, ResponseReader};
pub use write::{WriteError, write_persistent_request, write_request};
