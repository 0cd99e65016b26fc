//! Incremental, bounded parsing of one HTTP/1.1 response (RFC 9112).

use std::fmt;

use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Version};

/// The most header fields accepted in one response head.
const MAX_HEADERS: usize = 100;

/// Why a response could not be read by [`ResponseReader`].
///
/// The messages never echo bytes sent by the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// The response is larger than the cap given to [`ResponseReader::new`].
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The peer closed the stream before the response was complete.
    UnexpectedEof,
    /// The status line or a header field is malformed, or is not accepted by
    /// the `http` crate.
    BadHead,
    /// The head has more than 100 header fields.
    TooManyHeaders,
    /// The peer answered `101 Switching Protocols`, which a token request
    /// never asks for.
    UnexpectedUpgrade,
    /// A `content-length` value is not a list of digits, or its values
    /// disagree.
    BadContentLength,
    /// `transfer-encoding` is empty, is combined with `content-length`, or is
    /// sent in an HTTP/1.0 response.
    BadTransferEncoding,
    /// The chunked body is malformed.
    BadChunk,
    /// The response was already returned; a reader reads one response only.
    Finished,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::TooLarge { limit } => {
                write!(f, "response larger than the limit of {limit} bytes")
            }
            ReadError::UnexpectedEof => f.write_str("connection closed before end of response"),
            ReadError::BadHead => f.write_str("malformed response head"),
            ReadError::TooManyHeaders => f.write_str("too many response header fields"),
            ReadError::UnexpectedUpgrade => f.write_str("unexpected 101 switching protocols"),
            ReadError::BadContentLength => f.write_str("invalid content-length"),
            ReadError::BadTransferEncoding => f.write_str("invalid transfer-encoding"),
            ReadError::BadChunk => f.write_str("malformed chunked body"),
            ReadError::Finished => f.write_str("response already read"),
        }
    }
}

impl std::error::Error for ReadError {}

/// Incremental reader of one HTTP/1.1 response.
///
/// Feed it the bytes read from the stream with [`read`](Self::read) and, when
/// the peer closes the stream, call [`read_eof`](Self::read_eof). Interim
/// `1xx` responses (such as `100 Continue` or `103 Early Hints`) are skipped;
/// `101 Switching Protocols` is an error. Responses with status 204 or 304
/// have no body. The body is framed by `transfer-encoding: chunked` (chunk
/// extensions and trailer fields are discarded), else by `content-length`,
/// else by the end of the stream. The reader does not know the request
/// method, so it must not be used for responses to `HEAD`.
///
/// # Size cap
///
/// Everything the reader consumes counts against `max_size`: the heads of
/// interim and final responses, the body, and for chunked bodies also the
/// framing (chunk-size lines, the line ends after chunk data, and trailer
/// fields). Bytes after the end of the response are not consumed and do not
/// count. A `content-length` or chunk size that cannot fit in what is left
/// fails at once, before its bytes arrive. The reader never buffers more than
/// `max_size` bytes, however the input is split.
///
/// # Single use
///
/// The reader reads exactly one response. After it has returned the response
/// (from [`read`](Self::read) or [`read_eof`](Self::read_eof)), both methods
/// return [`ReadError::Finished`]. After an error, both return that same
/// error again.
#[derive(Debug, Clone)]
pub struct ResponseReader {
    meter: Meter,
    state: State,
    /// Set when [`read`](Self::read) returned the response and the connection may carry
    /// another request ([`reusable`](Self::reusable)).
    reusable: bool,
}

/// Counts consumed bytes against the cap.
#[derive(Debug, Clone, Copy)]
struct Meter {
    used: usize,
    limit: usize,
}

impl Meter {
    /// Bytes that may still be consumed.
    fn left(&self) -> usize {
        self.limit.saturating_sub(self.used)
    }

    /// Consumes `n` bytes, or fails if that goes past the cap.
    fn charge(&mut self, n: usize) -> Result<(), ReadError> {
        match self.used.checked_add(n) {
            Some(used) if used <= self.limit => {
                self.used = used;
                Ok(())
            }
            _ => Err(self.too_large()),
        }
    }

    fn too_large(&self) -> ReadError {
        ReadError::TooLarge { limit: self.limit }
    }
}

#[derive(Debug, Clone)]
enum State {
    /// Reading a (interim or final) response head.
    Head(HeadBuf),
    /// Reading the body of the final response.
    Body {
        head: Head,
        body: Vec<u8>,
        framing: Framing,
    },
    /// The response was returned.
    Done,
    /// An error was returned; it is returned again.
    Failed(ReadError),
}

/// The bytes of a head that is not complete yet.
#[derive(Debug, Clone, Default)]
struct HeadBuf {
    buf: Vec<u8>,
    scan: Scan,
}

/// Where the scan for the empty line that ends a head stands; it moves one
/// byte at a time so that each byte is looked at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Scan {
    /// Only CR/LF seen so far (empty lines before the status line, which
    /// httparse skips): a line end here does not end the head.
    #[default]
    Leading,
    /// Inside a line.
    Line,
    /// Just after a LF.
    Lf,
    /// Just after LF CR.
    LfCr,
}

impl Scan {
    /// Advances over `b`; true if `b` is the LF of the empty line ending
    /// the head (`LF LF` or `LF CR LF`).
    fn step(&mut self, b: u8) -> bool {
        let (next, end) = match (*self, b) {
            (Scan::Leading, b'\r' | b'\n') => (Scan::Leading, false),
            (Scan::Lf | Scan::LfCr, b'\n') => (Scan::Lf, true),
            (_, b'\n') => (Scan::Lf, false),
            (Scan::Lf, b'\r') => (Scan::LfCr, false),
            _ => (Scan::Line, false),
        };
        *self = next;
        end
    }
}

/// A parsed final response head.
#[derive(Debug, Clone)]
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// How the body of the final response ends.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// `remaining` more bytes (`content-length`, or none at all).
    Length { remaining: usize },
    /// Chunked transfer coding.
    Chunked(Chunk),
    /// At the end of the stream.
    Close,
}

/// Position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex digits of a chunk size; `digits` is whether there was
    /// at least one.
    Size { size: usize, digits: bool },
    /// Whitespace after the chunk size.
    SizeSpace { size: usize },
    /// Inside chunk extensions, which are skipped.
    Ext { size: usize },
    /// After the CR ending the chunk-size line.
    SizeLf { size: usize },
    /// Inside chunk data (`remaining` > 0).
    Data { remaining: usize },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line, which is skipped.
    Trailer,
    /// After the CR ending a trailer field line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Outcome of offering bytes to an incomplete head.
enum HeadStep {
    /// All the input was taken and the head is still incomplete.
    NeedMore,
    /// The head is complete: `len` bytes long, status and fields parsed.
    Complete { len: usize, parsed: Parsed },
}

/// A parsed head, either interim (1xx, fields dropped) or final.
enum Parsed {
    Interim,
    Final(Head),
}

impl ResponseReader {
    /// Creates a reader for one response.
    ///
    /// `max_size`: cap on head + decoded body bytes; beyond it reading fails
    /// with [`ReadError::TooLarge`]. Interim heads and chunked framing count
    /// as well (see [the type docs](Self#size-cap)).
    pub fn new(max_size: usize) -> ResponseReader {
        ResponseReader {
            meter: Meter {
                used: 0,
                limit: max_size,
            },
            state: State::Head(HeadBuf::default()),
            reusable: false,
        }
    }

    /// Whether the connection the response came on may carry another request (RFC 9112
    /// §9.3): the response was returned by [`read`](Self::read), so its body was framed
    /// (`content-length` or chunked, never ended by the close), it is HTTP/1.1, its
    /// `connection` field has no `close` option, and no byte after its end was offered (a
    /// server sending more than it was asked for is not trusted with the next request).
    /// `false` before the response is complete and after an error.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// Feeds bytes as they arrive (any split, including 1 byte at a time).
    ///
    /// Returns `Ok(Some(response))` once the response is complete (bytes
    /// after its end are ignored), `Ok(None)` if more bytes are needed.
    /// The result does not depend on how the input is split.
    ///
    /// # Errors
    ///
    /// A [`ReadError`] if the response is malformed or too large;
    /// [`ReadError::Finished`] if the response was already returned.
    pub fn read(&mut self, bytes: &[u8]) -> Result<Option<Response<Vec<u8>>>, ReadError> {
        let result = self.advance(bytes);
        if let Err(error) = &result {
            self.state = State::Failed(error.clone());
        }
        result
    }

    /// The peer closed the stream.
    ///
    /// For a close-delimited body (no `content-length`, not chunked) this
    /// completes the response and returns it.
    ///
    /// # Errors
    ///
    /// [`ReadError::UnexpectedEof`] if the head or a framed body is
    /// incomplete; [`ReadError::Finished`] if the response was already
    /// returned; the previous error if reading had failed.
    pub fn read_eof(&mut self) -> Result<Response<Vec<u8>>, ReadError> {
        let result = match std::mem::replace(&mut self.state, State::Done) {
            State::Body {
                head,
                body,
                framing: Framing::Close,
            } => Ok(build(head, body)),
            State::Head(_) | State::Body { .. } => Err(ReadError::UnexpectedEof),
            State::Done => Err(ReadError::Finished),
            State::Failed(error) => Err(error),
        };
        if let Err(error) = &result {
            self.state = State::Failed(error.clone());
        }
        result
    }

    fn advance(&mut self, mut input: &[u8]) -> Result<Option<Response<Vec<u8>>>, ReadError> {
        loop {
            match &mut self.state {
                State::Failed(error) => return Err(error.clone()),
                State::Done => return Err(ReadError::Finished),
                State::Head(head_buf) => {
                    let left = self.meter.left();
                    match feed_head(head_buf, &mut input, left, &self.meter)? {
                        HeadStep::NeedMore => return Ok(None),
                        HeadStep::Complete { len, parsed } => {
                            self.meter.charge(len)?;
                            match parsed {
                                Parsed::Interim => {
                                    self.state = State::Head(HeadBuf::default());
                                }
                                Parsed::Final(head) => {
                                    let framing = body_framing(&head, self.meter)?;
                                    self.state = State::Body {
                                        head,
                                        body: Vec::new(),
                                        framing,
                                    };
                                }
                            }
                        }
                    }
                }
                State::Body {
                    body,
                    framing,
                    head,
                } => {
                    let surplus = feed_body(framing, body, input, &mut self.meter)?;
                    let complete = match framing {
                        Framing::Length { remaining } => *remaining == 0,
                        Framing::Chunked(chunk) => *chunk == Chunk::Done,
                        Framing::Close => false,
                    };
                    if !complete {
                        return Ok(None);
                    }
                    self.reusable = surplus == 0 && persists(head);
                    return match std::mem::replace(&mut self.state, State::Done) {
                        State::Body { head, body, .. } => Ok(Some(build(head, body))),
                        _ => Err(ReadError::Finished),
                    };
                }
            }
        }
    }
}

/// Whether a complete, framed response leaves its connection open: HTTP/1.1 without a
/// `close` connection option.
fn persists(head: &Head) -> bool {
    head.version == Version::HTTP_11
        && !head
            .headers
            .get_all(http::header::CONNECTION)
            .iter()
            .any(|value| {
                value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|option| option.trim_ascii().eq_ignore_ascii_case(b"close"))
            })
}

/// Builds the returned response.
fn build(head: Head, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
}

/// Moves bytes from `input` into the head buffer, up to the end of the head
/// or until `left` bytes are buffered, and parses the head once its end may
/// have been reached.
fn feed_head(
    head_buf: &mut HeadBuf,
    input: &mut &[u8],
    left: usize,
    meter: &Meter,
) -> Result<HeadStep, ReadError> {
    loop {
        if input.is_empty() {
            return Ok(HeadStep::NeedMore);
        }
        // A byte beyond the cap arrived before the end of the head.
        if head_buf.buf.len() >= left {
            return Err(meter.too_large());
        }
        let room = left.saturating_sub(head_buf.buf.len());
        let mut take = 0;
        let mut end = false;
        for &b in input.iter().take(room) {
            take += 1;
            if head_buf.scan.step(b) {
                end = true;
                break;
            }
        }
        let (taken, rest) = input.split_at(take.min(input.len()));
        head_buf.buf.extend_from_slice(taken);
        *input = rest;
        if end {
            if let Some(parsed) = parse_head(&head_buf.buf)? {
                return Ok(HeadStep::Complete {
                    len: head_buf.buf.len(),
                    parsed,
                });
            }
        }
    }
}

/// Parses a buffer that ends with the empty line ending a head. `None` if
/// httparse wants more bytes.
fn parse_head(buf: &[u8]) -> Result<Option<Parsed>, ReadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooManyHeaders),
        Err(_) => return Err(ReadError::BadHead),
    };
    // The scan stops at the first empty line after the status line, which is
    // where httparse ends the head too.
    if len != buf.len() {
        return Err(ReadError::BadHead);
    }
    let code = response.code.ok_or(ReadError::BadHead)?;
    let status = StatusCode::from_u16(code).map_err(|_| ReadError::BadHead)?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ReadError::UnexpectedUpgrade);
    }
    if status.is_informational() {
        return Ok(Some(Parsed::Interim));
    }
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(ReadError::BadHead),
    };
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| ReadError::BadHead)?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| ReadError::BadHead)?;
        headers.append(name, value);
    }
    Ok(Some(Parsed::Final(Head {
        status,
        version,
        headers,
    })))
}

/// Decides how the body of a final response is framed (RFC 9112 §6.3).
fn body_framing(head: &Head, meter: Meter) -> Result<Framing, ReadError> {
    if head.status == StatusCode::NO_CONTENT || head.status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length { remaining: 0 });
    }
    let headers = &head.headers;
    if headers.contains_key(TRANSFER_ENCODING) {
        if head.version == Version::HTTP_10 || headers.contains_key(CONTENT_LENGTH) {
            return Err(ReadError::BadTransferEncoding);
        }
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|value| value.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|coding| !coding.is_empty())
            .ok_or(ReadError::BadTransferEncoding)?;
        return Ok(if last.eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked(Chunk::Size {
                size: 0,
                digits: false,
            })
        } else {
            Framing::Close
        });
    }
    match content_length(headers)? {
        None => Ok(Framing::Close),
        Some(None) => Err(meter.too_large()),
        Some(Some(length)) => match usize::try_from(length) {
            Ok(remaining) if remaining <= meter.left() => Ok(Framing::Length { remaining }),
            _ => Err(meter.too_large()),
        },
    }
}

/// The `content-length` of a response: `None` if absent, `Some(None)` if it
/// does not fit in a `u64`. Every value (comma-separated, in any number of
/// fields) must be digits only, and all must be equal.
fn content_length(headers: &HeaderMap) -> Result<Option<Option<u64>>, ReadError> {
    let mut found: Option<Option<u64>> = None;
    let items = headers
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    for item in items {
        if item.is_empty() || !item.iter().all(u8::is_ascii_digit) {
            return Err(ReadError::BadContentLength);
        }
        let value = item.iter().try_fold(0u64, |acc, &b| {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        });
        match found {
            None => found = Some(value),
            Some(previous) if previous == value => {}
            Some(_) => return Err(ReadError::BadContentLength),
        }
    }
    Ok(found)
}

/// Consumes body bytes from `input`; bytes after the end of the body are
/// ignored.
fn feed_body(
    framing: &mut Framing,
    body: &mut Vec<u8>,
    input: &[u8],
    meter: &mut Meter,
) -> Result<usize, ReadError> {
    match framing {
        Framing::Length { remaining } => {
            let (data, rest) = input.split_at((*remaining).min(input.len()));
            meter.charge(data.len())?;
            body.extend_from_slice(data);
            *remaining = remaining.saturating_sub(data.len());
            Ok(rest.len())
        }
        Framing::Close => {
            meter.charge(input.len())?;
            body.extend_from_slice(input);
            Ok(0)
        }
        Framing::Chunked(chunk) => feed_chunked(chunk, body, input, meter),
    }
}

/// Whether `b` may appear inside a chunk extension or trailer line.
fn is_line_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Decodes chunked bytes from `input` (RFC 9112 §7.1).
fn feed_chunked(
    chunk: &mut Chunk,
    body: &mut Vec<u8>,
    mut input: &[u8],
    meter: &mut Meter,
) -> Result<usize, ReadError> {
    loop {
        if *chunk == Chunk::Done {
            return Ok(input.len());
        }
        if let Chunk::Data { remaining } = *chunk {
            if input.is_empty() {
                return Ok(0);
            }
            let (data, rest) = input.split_at(remaining.min(input.len()));
            meter.charge(data.len())?;
            body.extend_from_slice(data);
            let remaining = remaining.saturating_sub(data.len());
            *chunk = if remaining == 0 {
                Chunk::DataCr
            } else {
                Chunk::Data { remaining }
            };
            input = rest;
            continue;
        }
        let Some((&b, rest)) = input.split_first() else {
            return Ok(0);
        };
        input = rest;
        meter.charge(1)?;
        *chunk = match (*chunk, b) {
            (Chunk::Size { size, .. }, _) if b.is_ascii_hexdigit() => {
                let digit = match b {
                    b'0'..=b'9' => b - b'0',
                    _ => (b | 0x20) - b'a' + 10,
                };
                let size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(usize::from(digit)))
                    .filter(|&s| s <= meter.left())
                    .ok_or_else(|| meter.too_large())?;
                Chunk::Size { size, digits: true }
            }
            (Chunk::Size { size, digits: true } | Chunk::SizeSpace { size }, b' ' | b'\t') => {
                Chunk::SizeSpace { size }
            }
            (
                Chunk::Size { size, digits: true }
                | Chunk::SizeSpace { size }
                | Chunk::Ext { size },
                b';',
            ) => Chunk::Ext { size },
            (
                Chunk::Size { size, digits: true }
                | Chunk::SizeSpace { size }
                | Chunk::Ext { size },
                b'\r',
            ) => Chunk::SizeLf { size },
            (Chunk::Ext { size }, _) if is_line_byte(b) => Chunk::Ext { size },
            (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::TrailerStart,
            (Chunk::SizeLf { size }, b'\n') => Chunk::Data { remaining: size },
            (Chunk::DataCr, b'\r') => Chunk::DataLf,
            (Chunk::DataLf, b'\n') => Chunk::Size {
                size: 0,
                digits: false,
            },
            (Chunk::TrailerStart, b'\r') => Chunk::FinalLf,
            (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
            (Chunk::TrailerStart | Chunk::Trailer, _) if is_line_byte(b) => Chunk::Trailer,
            (Chunk::TrailerLf, b'\n') => Chunk::TrailerStart,
            (Chunk::FinalLf, b'\n') => Chunk::Done,
            _ => return Err(ReadError::BadChunk),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a run produced: the response parts, and whether `read_eof` was
    /// needed to get them.
    type Outcome = (
        Result<(StatusCode, Version, HeaderMap, Vec<u8>), ReadError>,
        bool,
    );

    /// Feeds `chunks` in order, stopping at the first response or error,
    /// then calls `read_eof` if no response came.
    fn run(chunks: &[&[u8]], max_size: usize) -> Outcome {
        let mut reader = ResponseReader::new(max_size);
        let parts = |r: Response<Vec<u8>>| {
            let (parts, body) = r.into_parts();
            (parts.status, parts.version, parts.headers, body)
        };
        for chunk in chunks {
            match reader.read(chunk) {
                Ok(Some(response)) => return (Ok(parts(response)), false),
                Ok(None) => {}
                Err(error) => return (Err(error), false),
            }
        }
        (reader.read_eof().map(parts), true)
    }

    /// Reads `input` whole, one byte at a time and split in two at every
    /// position, asserts all give the identical outcome, and returns it.
    fn read_all_ways(input: &[u8], max_size: usize) -> Outcome {
        let whole = run(&[input], max_size);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes, max_size), whole, "byte at a time: {input:?}");
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(run(&[a, b], max_size), whole, "split at {at}: {input:?}");
        }
        whole
    }

    /// Reads a response that must complete without EOF; returns it.
    fn complete(input: &[u8]) -> (StatusCode, Version, HeaderMap, Vec<u8>) {
        let (result, eof) = read_all_ways(input, 64 * 1024);
        assert!(!eof, "needed eof");
        result.unwrap()
    }

    /// Reads a response all ways and returns its error.
    fn error(input: &[u8], max_size: usize) -> ReadError {
        read_all_ways(input, max_size).0.unwrap_err()
    }

    #[test]
    fn content_length_body_completes_without_eof() {
        let (status, version, headers, body) = complete(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n\
{\"access_token\":1}",
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["content-length"], "17");
        assert_eq!(body, b"{\"access_token\":1");
    }

    #[test]
    fn content_length_zero_completes_at_end_of_head() {
        let (status, _, _, body) =
            complete(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.is_empty());
    }

    #[test]
    fn bytes_after_the_end_of_the_response_are_ignored() {
        let (_, _, _, body) =
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 500 junk\r\n\r\n");
        assert_eq!(body, b"abc");
        let (_, _, _, body) = complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\ngarbage",
        );
        assert_eq!(body, b"x");
    }

    #[test]
    fn header_names_are_lowercased_and_repeated_fields_kept_in_order() {
        let (_, _, headers, _) = complete(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nX-Other: y\r\nSET-COOKIE: b=2\r\n\
Content-Length: 0\r\n\r\n",
        );
        let cookies: Vec<_> = headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(headers["x-other"], "y");
    }

    #[test]
    fn bare_lf_line_ends_are_accepted_in_the_head() {
        let (status, _, headers, body) = complete(b"HTTP/1.1 201 Created\ncontent-length: 2\n\nok");
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(headers["content-length"], "2");
        assert_eq!(body, b"ok");
        let (_, _, _, body) = complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\n\r\nok");
        assert_eq!(body, b"ok");
    }

    #[test]
    fn empty_lines_before_the_status_line_are_skipped() {
        let (status, _, _, body) =
            complete(b"\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nz");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"z");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers_is_decoded() {
        let (status, _, headers, body) = complete(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=value\r\nhello\r\n\
1 ; a ; b=\"q;uoted\"\r\n,\r\n\
000006\r\n world\r\n\
A\r\n0123456789\r\n\
0;last\r\n\
Expires: never\r\n\
X-Checksum: abc\r\n\
\r\n",
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"hello, world0123456789");
        assert!(!headers.contains_key("expires"), "trailers are discarded");
        assert_eq!(headers["transfer-encoding"], "chunked");
    }

    #[test]
    fn chunked_body_with_hex_sizes_and_no_trailers_is_decoded() {
        let data = [b'x'; 0x1f];
        let mut input =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, Chunked\r\n\r\n1F\r\n".to_vec();
        input.extend_from_slice(&data);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (_, _, _, body) = complete(&input);
        assert_eq!(body, data);
    }

    #[test]
    fn chunked_in_a_list_of_several_transfer_encoding_fields_counts_when_last() {
        let (_, _, _, body) = complete(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n\
2\r\nab\r\n0\r\n\r\n",
        );
        assert_eq!(body, b"ab");
    }

    #[test]
    fn transfer_encoding_not_ending_in_chunked_is_close_delimited() {
        let (result, eof) = read_all_ways(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n2\r\nab\r\n",
            1024,
        );
        assert!(eof);
        assert_eq!(result.unwrap().3, b"2\r\nab\r\n");
    }

    #[test]
    fn close_delimited_body_ends_at_eof() {
        for input in [
            &b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"[..],
            &b"HTTP/1.0 200 OK\r\n\r\nuntil the end"[..],
        ] {
            let (result, eof) = read_all_ways(input, 1024);
            assert!(eof);
            let (status, _, _, body) = result.unwrap();
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, b"until the end");
        }
        let (result, _) = read_all_ways(b"HTTP/1.0 200 OK\r\n\r\n", 1024);
        let (_, version, _, body) = result.unwrap();
        assert_eq!(version, Version::HTTP_10);
        assert!(body.is_empty());
    }

    #[test]
    fn interim_100_continue_is_skipped_before_the_final_response() {
        let (status, _, headers, body) = complete(
            b"HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        );
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.len(), 1);
        assert_eq!(body, b"ok");
    }

    #[test]
    fn several_interim_responses_with_fields_are_skipped() {
        let (status, _, headers, body) = complete(
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>; rel=preload\r\n\r\n\
HTTP/1.1 102 Processing\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 404 Not Found\r\ncontent-length: 1\r\n\r\n!",
        );
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!headers.contains_key("link"));
        assert_eq!(body, b"!");
    }

    #[test]
    fn switching_protocols_is_rejected() {
        assert_eq!(
            error(
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\n\r\n",
                1024
            ),
            ReadError::UnexpectedUpgrade
        );
    }

    #[test]
    fn no_content_and_not_modified_have_no_body_whatever_the_headers_say() {
        for input in [
            &b"HTTP/1.1 204 No Content\r\n\r\nnot a body"[..],
            &b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n"[..],
            &b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n"[..],
        ] {
            let (_, _, _, body) = complete(input);
            assert!(body.is_empty());
        }
    }

    #[test]
    fn response_exactly_at_the_cap_is_read_and_one_byte_more_is_too_large() {
        let input = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody";
        let (result, _) = read_all_ways(input, input.len());
        assert_eq!(result.unwrap().3, b"body");
        let limit = input.len() - 1;
        assert_eq!(error(input, limit), ReadError::TooLarge { limit });

        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\n\r\n";
        let (result, _) = read_all_ways(chunked, chunked.len());
        assert_eq!(result.unwrap().3, b"body");
        let limit = chunked.len() - 1;
        assert_eq!(error(chunked, limit), ReadError::TooLarge { limit });

        let close = b"HTTP/1.1 200 OK\r\n\r\nbody";
        let (result, _) = read_all_ways(close, close.len());
        assert_eq!(result.unwrap().3, b"body");
        let limit = close.len() - 1;
        assert_eq!(error(close, limit), ReadError::TooLarge { limit });
    }

    #[test]
    fn long_head_is_too_large_before_it_ends() {
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..50 {
            input.extend_from_slice(b"x-filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        }
        // The head never ends; the reader must not wait for it.
        assert_eq!(error(&input, 256), ReadError::TooLarge { limit: 256 });
        let mut reader = ResponseReader::new(256);
        assert_eq!(
            reader.read(&input).err(),
            Some(ReadError::TooLarge { limit: 256 })
        );
    }

    #[test]
    fn interim_heads_count_against_the_cap() {
        let mut input = Vec::new();
        for _ in 0..20 {
            input.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        }
        assert_eq!(error(&input, 100), ReadError::TooLarge { limit: 100 });
    }

    #[test]
    fn long_body_is_too_large() {
        let mut input = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        input.extend_from_slice(&[b'a'; 300]);
        assert_eq!(error(&input, 256), ReadError::TooLarge { limit: 256 });

        let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..100 {
            chunked.extend_from_slice(b"3\r\nabc\r\n");
        }
        assert_eq!(error(&chunked, 256), ReadError::TooLarge { limit: 256 });
    }

    #[test]
    fn huge_content_length_fails_at_once_without_the_body() {
        for length in ["1000", "18446744073709551615", "99999999999999999999999999"] {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n");
            let mut reader = ResponseReader::new(256);
            assert_eq!(
                reader.read(head.as_bytes()).err(),
                Some(ReadError::TooLarge { limit: 256 }),
                "{length}"
            );
            assert_eq!(
                error(head.as_bytes(), 256),
                ReadError::TooLarge { limit: 256 }
            );
        }
    }

    #[test]
    fn huge_chunk_size_fails_at_once_without_the_data() {
        for size in ["1000", "ffffffffffffffff", "fffffffffffffffffffffffffff"] {
            let head = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{size}");
            let mut reader = ResponseReader::new(256);
            assert_eq!(
                reader.read(head.as_bytes()).err(),
                Some(ReadError::TooLarge { limit: 256 }),
                "{size}"
            );
            assert_eq!(
                error(head.as_bytes(), 256),
                ReadError::TooLarge { limit: 256 }
            );
        }
    }

    #[test]
    fn endless_chunk_extensions_and_trailers_are_too_large() {
        let mut ext = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1;".to_vec();
        ext.extend_from_slice(&[b'e'; 300]);
        assert_eq!(error(&ext, 256), ReadError::TooLarge { limit: 256 });
        let mut trailers = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n".to_vec();
        for _ in 0..30 {
            trailers.extend_from_slice(b"x-trailer: 1\r\n");
        }
        assert_eq!(error(&trailers, 256), ReadError::TooLarge { limit: 256 });
    }

    #[test]
    fn equal_repeated_content_lengths_are_accepted() {
        let (_, _, _, body) = complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nab");
        assert_eq!(body, b"ab");
        let (_, _, _, body) =
            complete(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\nab");
        assert_eq!(body, b"ab");
    }

    #[test]
    fn malformed_content_length_is_rejected() {
        for value in ["abc", "+5", "-1", "5 5", "", "0x10", "1.0", "5,", ",5"] {
            let input = format!("HTTP/1.1 200 OK\r\ncontent-length: {value}\r\n\r\nabcde");
            assert_eq!(
                error(input.as_bytes(), 1024),
                ReadError::BadContentLength,
                "{value:?}"
            );
        }
    }

    #[test]
    fn conflicting_content_lengths_are_rejected() {
        assert_eq!(
            error(
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
                1024
            ),
            ReadError::BadContentLength
        );
        assert_eq!(
            error(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\nabcd", 1024),
            ReadError::BadContentLength
        );
    }

    #[test]
    fn transfer_encoding_with_content_length_or_in_http_1_0_is_rejected() {
        for input in [
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n"[..],
            &b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            &b"HTTP/1.1 200 OK\r\ntransfer-encoding: ,\r\n\r\n"[..],
        ] {
            assert_eq!(error(input, 1024), ReadError::BadTransferEncoding);
        }
    }

    #[test]
    fn malformed_chunks_are_rejected() {
        for chunks in [
            &b"zz\r\n"[..],
            b"\r\n",
            b";ext\r\n",
            b"5\r\nhelloXX",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\n",
            b"5 x\r\n",
            b"5;\x01\r\n",
            b"0\r\nbad\x00trailer\r\n\r\n",
            b"0\r\n\rX",
            b"0\r\nx: y\rX",
        ] {
            let mut input = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(chunks);
            assert_eq!(error(&input, 1024), ReadError::BadChunk, "{chunks:?}");
        }
    }

    #[test]
    fn truncated_responses_are_unexpected_eof() {
        for input in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\ncontent-le",
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx: y\r\n",
        ] {
            let (result, eof) = read_all_ways(input, 1024);
            assert!(eof);
            assert_eq!(result.unwrap_err(), ReadError::UnexpectedEof, "{input:?}");
        }
    }

    #[test]
    fn malformed_heads_are_rejected() {
        for input in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"ICY 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nna me: v\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n folded: v\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx: a\x00b\r\n\r\n",
        ] {
            assert_eq!(error(input, 1024), ReadError::BadHead, "{input:?}");
        }
    }

    #[test]
    fn header_accepted_by_httparse_but_not_by_http_is_bad_head() {
        // http caps header names at 65535 bytes; httparse does not.
        let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
        input.extend_from_slice(&[b'n'; 65_536]);
        input.extend_from_slice(b": v\r\ncontent-length: 0\r\n\r\n");
        let mut reader = ResponseReader::new(1 << 20);
        assert_eq!(reader.read(&input).err(), Some(ReadError::BadHead));
    }

    #[test]
    fn more_than_100_header_fields_is_too_many_headers() {
        let head = |n: usize| {
            let mut input = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                input.extend_from_slice(format!("x-{i}: v\r\n").as_bytes());
            }
            input.extend_from_slice(b"content-length: 0\r\n\r\n");
            input
        };
        let mut reader = ResponseReader::new(1 << 16);
        let response = reader.read(&head(99)).unwrap().unwrap();
        assert_eq!(response.headers().len(), 100);
        let mut reader = ResponseReader::new(1 << 16);
        assert_eq!(
            reader.read(&head(100)).err(),
            Some(ReadError::TooManyHeaders)
        );
    }

    #[test]
    fn reader_is_single_use_and_errors_are_sticky() {
        let mut reader = ResponseReader::new(1024);
        let input = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert!(reader.read(input).unwrap().is_some());
        assert_eq!(reader.read(input).err(), Some(ReadError::Finished));
        assert_eq!(reader.read_eof().err(), Some(ReadError::Finished));

        let mut reader = ResponseReader::new(1024);
        assert!(
            reader
                .read(b"HTTP/1.1 200 OK\r\n\r\nabc")
                .unwrap()
                .is_none()
        );
        assert!(reader.read_eof().is_ok());
        assert_eq!(reader.read_eof().err(), Some(ReadError::Finished));
        assert_eq!(reader.read(b"").err(), Some(ReadError::Finished));

        let mut reader = ResponseReader::new(1024);
        assert_eq!(
            reader.read(b"garbage\r\n\r\n").err(),
            Some(ReadError::BadHead)
        );
        assert_eq!(reader.read(input).err(), Some(ReadError::BadHead));
        assert_eq!(reader.read_eof().err(), Some(ReadError::BadHead));

        let mut reader = ResponseReader::new(1024);
        assert_eq!(reader.read_eof().err(), Some(ReadError::UnexpectedEof));
        assert_eq!(reader.read(input).err(), Some(ReadError::UnexpectedEof));
    }

    #[test]
    fn error_messages_are_short_lowercase_and_echo_nothing() {
        let errors = [
            ReadError::TooLarge { limit: 10 },
            ReadError::UnexpectedEof,
            ReadError::BadHead,
            ReadError::TooManyHeaders,
            ReadError::UnexpectedUpgrade,
            ReadError::BadContentLength,
            ReadError::BadTransferEncoding,
            ReadError::BadChunk,
            ReadError::Finished,
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.is_empty() && message.len() < 60, "{message}");
            assert_eq!(message, message.to_lowercase());
        }
        assert_eq!(
            ReadError::TooLarge { limit: 10 }.to_string(),
            "response larger than the limit of 10 bytes"
        );
    }

    /// xorshift64: a tiny deterministic generator for the garbage tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A plausible response: status line(s), framing headers, and a raw or
    /// chunked body, each picked at random.
    fn plausible_response(rng: &mut XorShift) -> Vec<u8> {
        const STARTS: &[&[u8]] = &[
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 200 OK\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 204 No Content\r\n",
            b"HTTP/1.1 304 Not Modified\r\n",
            b"HTTP/1.1 400 Bad Request\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n",
        ];
        const FIELDS: &[&[u8]] = &[
            b"content-type: application/json\r\n",
            b"transfer-encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"x-a: b\r\n",
        ];
        let mut out = STARTS[rng.below(STARTS.len())].to_vec();
        let mut body = Vec::new();
        let chunked = rng.below(2) == 0;
        if chunked {
            for _ in 0..rng.below(4) {
                let size = rng.below(8);
                body.extend_from_slice(format!("{size:x}").as_bytes());
                if rng.below(3) == 0 {
                    body.extend_from_slice(b";ext=1");
                }
                body.extend_from_slice(b"\r\n");
                body.extend(std::iter::repeat_n(b'd', size));
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            if rng.below(3) == 0 {
                body.extend_from_slice(b"trailer: t\r\n");
            }
            body.extend_from_slice(b"\r\n");
        } else {
            body.extend(std::iter::repeat_n(b'b', rng.below(12)));
        }
        match rng.below(3) {
            0 if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            0 => out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes()),
            1 => {}
            _ => {
                for _ in 0..rng.below(4) {
                    if rng.below(3) == 0 {
                        let length = rng.below(12);
                        out.extend_from_slice(format!("content-length: {length}\r\n").as_bytes());
                    } else {
                        out.extend_from_slice(FIELDS[rng.below(FIELDS.len())]);
                    }
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    }

    /// Flips, deletes, inserts or truncates a few bytes.
    fn mutate(rng: &mut XorShift, input: &mut Vec<u8>) {
        for _ in 0..rng.below(4) {
            if input.is_empty() {
                return;
            }
            let at = rng.below(input.len());
            match rng.below(4) {
                0 => input[at] = rng.next() as u8,
                1 => {
                    input.remove(at);
                }
                2 => input.insert(at, rng.next() as u8),
                _ => input.truncate(at),
            }
        }
    }

    #[test]
    fn garbage_never_panics_and_does_not_depend_on_the_split() {
        const PIECES: &[&[u8]] = &[
            b"HTTP/1.1 ",
            b"HTTP/1.0 ",
            b"200 OK",
            b"100 Continue",
            b"101",
            b"204",
            b"304 ",
            b"\r\n",
            b"\r\n\r\n",
            b"\n",
            b"\r",
            b"content-length: ",
            b"Transfer-Encoding: ",
            b"chunked",
            b"gzip, ",
            b"0",
            b"5",
            b"a",
            b"ffffffffffffffffff",
            b";x=y",
            b", ",
            b"hello",
            b":",
            b" ",
            b"\t",
            b"\0",
            b"\x7f",
            b"\xff",
        ];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut seen = std::collections::BTreeMap::new();
        for case in 0..10_000 {
            let input = match case % 4 {
                0 => (0..rng.below(48)).map(|_| rng.next() as u8).collect(),
                1 => {
                    let mut input = Vec::new();
                    for _ in 0..rng.below(16) {
                        input.extend_from_slice(PIECES[rng.below(PIECES.len())]);
                    }
                    input
                }
                _ => {
                    let mut input = plausible_response(&mut rng);
                    if case % 4 == 3 {
                        mutate(&mut rng, &mut input);
                    }
                    input
                }
            };
            let max_size = [0, 8, 64, 4096, 4096, 4096][rng.below(6)];
            let (result, _) = read_all_ways(&input, max_size);
            let kind = match result {
                Ok(_) => "Ok".to_string(),
                Err(error) => format!("{error:?}"),
            };
            let kind = kind
                .split([' ', '{'])
                .next()
                .unwrap_or_default()
                .to_string();
            *seen.entry(kind).or_insert(0usize) += 1;
        }
        // The generator reaches every outcome, so the comparison above
        // covered every path.
        let kinds: Vec<&str> = seen.keys().map(String::as_str).collect();
        assert_eq!(
            kinds,
            [
                "BadChunk",
                "BadContentLength",
                "BadHead",
                "BadTransferEncoding",
                "Ok",
                "TooLarge",
                "UnexpectedEof",
                "UnexpectedUpgrade",
            ],
            "{seen:?}"
        );
    }

    /// Whether the connection may carry another request after `input` was read in one go.
    fn reusable_after(input: &[u8]) -> bool {
        let mut reader = ResponseReader::new(1 << 16);
        assert!(!reader.reusable(), "nothing read yet");
        match reader.read(input) {
            Ok(Some(_)) => reader.reusable(),
            _ => false,
        }
    }

    #[test]
    fn a_framed_http_1_1_answer_leaves_the_connection_reusable() {
        assert!(reusable_after(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
        ));
        assert!(reusable_after(
            b"HTTP/1.1 400 Bad Request\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
        ));
        assert!(reusable_after(
            b"HTTP/1.1 204 No Content\r\nconnection: keep-alive\r\n\r\n"
        ));
    }

    #[test]
    fn a_connection_is_not_reused_after_close_http_1_0_surplus_or_eof() {
        // Asked to close, in any case and among other options.
        assert!(!reusable_after(
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!reusable_after(
            b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"
        ));
        // A byte beyond the answer: the server is not trusted with the next request.
        assert!(!reusable_after(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}X"
        ));
        assert!(!reusable_after(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1"
        ));
        // Ended by the close.
        let mut reader = ResponseReader::new(1 << 16);
        assert!(matches!(
            reader.read(b"HTTP/1.1 200 OK\r\n\r\n{}"),
            Ok(None)
        ));
        assert!(reader.read_eof().is_ok());
        assert!(!reader.reusable());
        // Incomplete, or failed.
        let mut reader = ResponseReader::new(1 << 16);
        assert!(matches!(
            reader.read(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n{}"),
            Ok(None)
        ));
        assert!(!reader.reusable());
        let mut reader = ResponseReader::new(8);
        assert!(
            reader
                .read(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .is_err()
        );
        assert!(!reader.reusable());
    }

    #[test]
    fn reusability_does_not_depend_on_how_the_input_is_split() {
        let inputs: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}X",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\nX",
        ];
        for input in inputs {
            let whole = reusable_after(input);
            for split in 1..input.len() {
                let mut reader = ResponseReader::new(1 << 16);
                let (first, second) = input.split_at(split);
                match reader.read(first) {
                    // The end came in the first part: what follows is the next read's,
                    // which the client's check before reuse sees.
                    Ok(Some(_)) => continue,
                    Ok(None) => assert!(matches!(reader.read(second), Ok(Some(_)))),
                    Err(error) => panic!("split at {split}: {error}"),
                }
                assert_eq!(reader.reusable(), whole, "split at {split}");
            }
        }
    }
}
