//! Just enough HTTP/1.1 for the server: one request per connection, `Connection: close`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::RecordedRequest;

/// How long a client may take to send its whole request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request head (request line and header fields).
const MAX_HEAD: usize = 16 * 1024;
/// Largest accepted request body.
const MAX_BODY: usize = 64 * 1024;
/// How much unread input is swallowed after answering, so closing does not reset the
/// connection before the client has read the response.
const MAX_DRAIN: usize = 256 * 1024;

/// A response; `Content-Length` and `Connection: close` are added when written.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Vec<u8>,
}

impl Response {
    /// A response with a `Content-Type` and `Cache-Control: no-store`.
    pub(crate) fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![
                ("Content-Type", content_type.to_owned()),
                ("Cache-Control", "no-store".to_owned()),
            ],
            body: body.into(),
        }
    }

    /// Adds a header field.
    pub(crate) fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Whether a header field `name` is set (case-insensitive).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// A small HTML page; `message` is static text, so nothing needs escaping.
    pub(crate) fn page(status: u16, message: &'static str) -> Response {
        let reason = reason(status);
        let body = format!(
            "<!doctype html>\n<title>{status} {reason}</title>\n<h1>{status} {reason}</h1>\n<p>{message}</p>\n"
        );
        Response::new(status, "text/html; charset=utf-8", body)
    }

    pub(crate) fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        w.write_all(&bytes)?;
        w.flush()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Reads one request from `stream`, answers it with `handler`, and closes.
pub(crate) fn serve(mut stream: TcpStream, handler: impl FnOnce(RecordedRequest) -> Response) {
    let _ = stream.set_write_timeout(Some(READ_TIMEOUT));
    let response = match read_request(&mut stream) {
        Ok(request) => handler(request),
        Err(Some(response)) => response,
        Err(None) => return,
    };
    let _ = response.write_to(&mut stream);
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream);
}

/// `Err(None)`: the connection ended or timed out; `Err(Some(_))`: answer with that.
fn read_request(stream: &mut TcpStream) -> Result<RecordedRequest, Option<Response>> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(2048);
    let (head_len, mut request) = loop {
        if let Some(parsed) = parse_head(&buf)? {
            break parsed;
        }
        if buf.len() >= MAX_HEAD {
            return Err(Some(Response::page(431, "The request head is too large.")));
        }
        if read_some(stream, &mut buf, deadline)? == 0 {
            return Err(None);
        }
    };
    let length = body_length(&request)?;
    let expects_continue = request
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && buf.len() < head_len + length {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    while buf.len() < head_len + length {
        if read_some(stream, &mut buf, deadline)? == 0 {
            return Err(None);
        }
    }
    request.body = buf
        .get(head_len..head_len + length)
        .unwrap_or_default()
        .to_vec();
    Ok(request)
}

fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<usize, Option<Response>> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(None);
    }
    stream.set_read_timeout(Some(left)).map_err(|_| None)?;
    let mut chunk = [0; 4096];
    let n = stream.read(&mut chunk).map_err(|_| None)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Parses the head once it is complete: `Ok(None)` means "read more".
fn parse_head(buf: &[u8]) -> Result<Option<(usize, RecordedRequest)>, Option<Response>> {
    let bad = |message| Some(Response::page(400, message));
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Some(Response::page(431, "The request head is too large.")));
        }
        Err(_) => return Err(bad("The request is not valid HTTP/1.1.")),
    };
    let mut fields = Vec::with_capacity(req.headers.len());
    for header in req.headers.iter() {
        let value = std::str::from_utf8(header.value).map_err(|_| bad("A header is not UTF-8."))?;
        fields.push((header.name.to_owned(), value.to_owned()));
    }
    let request = RecordedRequest {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        headers: fields,
        body: Vec::new(),
    };
    if !request.target.starts_with('/') {
        return Err(bad("Only origin-form request targets are served."));
    }
    let hosts = request.headers_named("host").count();
    if req.version == Some(1) && hosts != 1 {
        return Err(bad("An HTTP/1.1 request needs exactly one Host header."));
    }
    Ok(Some((head_len, request)))
}

/// The body length from `Content-Length`; transfer codings are not supported.
fn body_length(request: &RecordedRequest) -> Result<usize, Option<Response>> {
    if request.header("transfer-encoding").is_some() {
        return Err(Some(Response::page(
            411,
            "Send a Content-Length, not a transfer coding.",
        )));
    }
    let mut length = None;
    for value in request.headers_named("content-length") {
        let parsed = Some(value)
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<usize>().ok());
        match (parsed, length) {
            (None, _) => return Err(Some(Response::page(400, "Bad Content-Length."))),
            (Some(n), Some(m)) if n != m => {
                return Err(Some(Response::page(400, "Conflicting Content-Length.")));
            }
            (Some(n), _) => length = Some(n),
        }
    }
    match length.unwrap_or(0) {
        n if n > MAX_BODY => Err(Some(Response::page(413, "The request body is too large."))),
        n => Ok(n),
    }
}

/// Swallows what the client still sends (bounded), so that closing does not reset the
/// connection under a response the client has not read yet.
fn drain(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0; 4096];
    let mut total = 0;
    while total < MAX_DRAIN {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => total += n,
        }
    }
}
