//! Just enough HTTP/1.1 for the extension's API on its Unix socket: Docker Desktop forwards
//! the UI's `ddClient.extension.vm.service` calls there. Requests with a `Content-Length`
//! body (no chunked bodies), keep-alive, JSON answers. Anything malformed or too large gets
//! a 4xx answer and the connection is closed.

use std::io;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use serde_json::Value;

/// The longest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// The longest request body accepted (a forwarded callback is far smaller).
const MAX_BODY: usize = 64 * 1024;
/// The most header fields accepted.
const MAX_HEADERS: usize = 32;

/// One request from the UI.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    pub body: Vec<u8>,
}

/// One answer: a status and a JSON body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn new(status: u16, body: Value) -> Response {
        Response { status, body }
    }

    /// An error answer: `{"error": kind, "message": message}`.
    pub fn error(status: u16, kind: &str, message: impl Into<String>) -> Response {
        let message: String = message.into();
        Response::new(
            status,
            serde_json::json!({"error": kind, "message": message}),
        )
    }
}

/// A connection's requests, read one after another.
pub struct Connection<S> {
    stream: S,
    buffer: Vec<u8>,
}

/// What reading the next request gave.
pub enum Next {
    Request(Request),
    /// The client closed the connection between requests.
    Closed,
    /// The request cannot be served; answer this, then close.
    Refuse(Response),
}

impl<S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin> Connection<S> {
    pub fn new(stream: S) -> Connection<S> {
        Connection {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Reads the next request.
    pub async fn next(&mut self) -> io::Result<Next> {
        let head_len = loop {
            if let Some(end) = find_head_end(&self.buffer) {
                break end;
            }
            if self.buffer.len() > MAX_HEAD {
                return Ok(Next::Refuse(Response::error(
                    431,
                    "bad_request",
                    "request head too large",
                )));
            }
            if self.fill().await? == 0 {
                return Ok(if self.buffer.is_empty() {
                    Next::Closed
                } else {
                    Next::Refuse(Response::error(400, "bad_request", "incomplete request"))
                });
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let bad = |why: &str| Ok(Next::Refuse(Response::error(400, "bad_request", why)));
        match parsed.parse(&self.buffer[..head_len]) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => return bad("malformed request head"),
        }
        let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
            return bad("malformed request line");
        };
        let mut length = 0;
        for header in parsed.headers.iter() {
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                return bad("chunked bodies are not accepted; send a Content-Length");
            }
            if header.name.eq_ignore_ascii_case("content-length") {
                let value = std::str::from_utf8(header.value).ok();
                match value.and_then(|value| value.trim().parse::<usize>().ok()) {
                    Some(value) => length = value,
                    None => return bad("malformed Content-Length"),
                }
            }
        }
        if length > MAX_BODY {
            return Ok(Next::Refuse(Response::error(
                413,
                "bad_request",
                "request body too large",
            )));
        }
        let method = method.to_owned();
        let path = target.split('?').next().unwrap_or_default().to_owned();
        self.buffer.drain(..head_len);
        while self.buffer.len() < length {
            if self.fill().await? == 0 {
                return bad("incomplete request body");
            }
        }
        let body = self.buffer.drain(..length).collect();
        Ok(Next::Request(Request { method, path, body }))
    }

    /// Writes `response`; `close` says it is the connection's last.
    pub async fn answer(&mut self, response: &Response, close: bool) -> io::Result<()> {
        let body = response.body.to_string();
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Cache-Control: no-store\r\nConnection: {}\r\n\r\n",
            response.status,
            reason(response.status),
            body.len(),
            if close { "close" } else { "keep-alive" }
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        self.stream.flush().await
    }

    async fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0; 4096];
        let read = self.stream.read(&mut chunk).await?;
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read)
    }
}

/// Where the head ends (after `\r\n\r\n`), if it is complete.
fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::io::Cursor;

    /// Method, path and body of a request read.
    type Read = (String, String, Vec<u8>);

    /// The requests `input` holds, read on one connection; a refusal's status ends them.
    fn read_all(input: &[u8]) -> Vec<Result<Read, u16>> {
        smol::block_on(async {
            let mut connection = Connection::new(Cursor::new(input.to_vec()));
            let mut seen = Vec::new();
            loop {
                match connection.next().await.expect("in memory") {
                    Next::Request(r) => seen.push(Ok((r.method, r.path, r.body))),
                    Next::Closed => return seen,
                    Next::Refuse(response) => {
                        seen.push(Err(response.status));
                        return seen;
                    }
                }
            }
        })
    }

    #[test]
    fn keep_alive_requests_with_bodies_are_read_in_turn() {
        let input = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /callback?x=1 HTTP/1.1\r\nContent-Length: 11\r\n\r\n{\"url\":\"q\"}\
            POST /logout HTTP/1.1\r\n\r\n";
        let seen = read_all(input);
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0], Ok(("GET".into(), "/status".into(), Vec::new())));
        assert_eq!(
            seen[1],
            Ok((
                "POST".into(),
                "/callback".into(),
                b"{\"url\":\"q\"}".to_vec()
            ))
        );
        assert_eq!(seen[2], Ok(("POST".into(), "/logout".into(), Vec::new())));
    }

    #[test]
    fn malformed_or_oversized_requests_are_refused() {
        let mut huge_head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge_head.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        for (input, status) in [
            (b"GARBAGE\r\n\r\n".to_vec(), 400),
            (
                b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n".to_vec(),
                400,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
                400,
            ),
            (
                format!(
                    "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                    MAX_BODY + 1
                )
                .into_bytes(),
                413,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab".to_vec(),
                400,
            ),
            (b"GET / HTTP/1.1\r\n".to_vec(), 400),
            (huge_head, 431),
        ] {
            assert_eq!(
                read_all(&input),
                [Err(status)],
                "{:?}",
                String::from_utf8_lossy(&input[..20.min(input.len())])
            );
        }
    }
}
