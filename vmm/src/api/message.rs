//! One HTTP/1.1 message of the API, sans I/O: a request framed out of the
//! bytes a connection has sent so far (with every bound of [`super::http`]
//! enforced on them: header and body sizes, chunked bodies, transfer
//! codings), and the bytes of a response.

use super::{ApiError, ApiResponse};

/// Request line + headers, at most.
pub const MAX_HEADER_BYTES: usize = 8 << 10;
/// Body, at most.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// Headers parsed per request, at most.
const MAX_HEADERS: usize = 32;

/// What one complete request is.
pub(super) enum Parsed {
    /// More bytes are needed.
    Incomplete { expect_continue: bool },
    /// Method, target and body; `close` when the client asked for the
    /// connection to end after the answer (`Connection: close`, HTTP/1.0).
    Request {
        method: String,
        target: String,
        body: Vec<u8>,
        close: bool,
    },
}

/// Frame one request out of `buf` within the bounds.
pub(super) fn parse(buf: &[u8]) -> Result<Parsed, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let header_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEADER_BYTES {
                return Err(ApiError::HeadersTooLarge(MAX_HEADER_BYTES));
            }
            return Ok(Parsed::Incomplete {
                expect_continue: false,
            });
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::HeadersTooLarge(MAX_HEADER_BYTES));
        }
        Err(e) => return Err(ApiError::MalformedRequest(e.to_string())),
    };
    if header_len > MAX_HEADER_BYTES {
        return Err(ApiError::HeadersTooLarge(MAX_HEADER_BYTES));
    }
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    let mut close = request.version == Some(0);
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("connection") {
            close |= header
                .value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !header.value.eq_ignore_ascii_case(b"chunked") || chunked {
                let value: String = String::from_utf8_lossy(header.value)
                    .chars()
                    .take(32)
                    .collect();
                return Err(ApiError::LengthRequired(value));
            }
            chunked = true;
            continue;
        }
        if header.name.eq_ignore_ascii_case("expect") {
            expect_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::MalformedRequest("Content-Length is not a number".into())
                })?;
            if length.is_some_and(|l| l != value) {
                return Err(ApiError::MalformedRequest(
                    "two different Content-Length headers".into(),
                ));
            }
            length = Some(value);
        }
    }
    let method = request.method.unwrap_or_default().to_string();
    let target = request.path.unwrap_or_default().to_string();
    if chunked {
        if length.is_some() {
            return Err(ApiError::MalformedRequest(
                "both Content-Length and Transfer-Encoding: chunked".into(),
            ));
        }
        return Ok(match dechunk(&buf[header_len..])? {
            Some(body) => Parsed::Request {
                method,
                target,
                body,
                close,
            },
            None => Parsed::Incomplete { expect_continue },
        });
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY_BYTES as u64 {
        return Err(ApiError::BodyTooLarge {
            length,
            limit: MAX_BODY_BYTES,
        });
    }
    let body = &buf[header_len..];
    if (body.len() as u64) < length {
        return Ok(Parsed::Incomplete { expect_continue });
    }
    Ok(Parsed::Request {
        method,
        target,
        body: body[..length as usize].to_vec(),
        close,
    })
}

/// A chunk size line, at most: 8 hex digits (more than the body bound)
/// plus room for a chunk extension.
const MAX_CHUNK_LINE: usize = 64;

/// The body of a chunked transfer in `raw`, `None` while incomplete.
/// Trailers after the last chunk are read and dropped.
fn dechunk(raw: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_len) = find_crlf(&raw[at..], MAX_CHUNK_LINE)? else {
            return incomplete(raw);
        };
        let line = &raw[at..at + line_len];
        let size_text = line.split(|b| *b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text).unwrap_or_default().trim();
        if size_text.is_empty() || size_text.len() > 8 {
            return Err(ApiError::MalformedChunk(format!(
                "chunk size line {:?}",
                String::from_utf8_lossy(&line[..line.len().min(16)])
            )));
        }
        let size = usize::from_str_radix(size_text, 16).map_err(|_| {
            ApiError::MalformedChunk(format!("chunk size {size_text:?} is not hexadecimal"))
        })?;
        at += line_len + 2;
        if body.len() + size > MAX_BODY_BYTES {
            return Err(ApiError::BodyTooLarge {
                length: (body.len() + size) as u64,
                limit: MAX_BODY_BYTES,
            });
        }
        if size == 0 {
            break;
        }
        if raw.len() < at + size + 2 {
            return incomplete(raw);
        }
        body.extend_from_slice(&raw[at..at + size]);
        at += size;
        if &raw[at..at + 2] != b"\r\n" {
            return Err(ApiError::MalformedChunk(
                "a chunk is longer than its size line says".into(),
            ));
        }
        at += 2;
    }
    // Trailer lines, then the empty line that ends the body.
    loop {
        let Some(line_len) = find_crlf(&raw[at..], MAX_HEADER_BYTES)? else {
            return incomplete(raw);
        };
        at += line_len + 2;
        if line_len == 0 {
            return Ok(Some(body));
        }
    }
}

/// The length of the line at the start of `raw` (before its CRLF), `None`
/// when the CRLF has not arrived; a line longer than `max` is refused.
fn find_crlf(raw: &[u8], max: usize) -> Result<Option<usize>, ApiError> {
    match raw.windows(2).position(|w| w == b"\r\n") {
        Some(n) if n <= max => Ok(Some(n)),
        Some(_) => Err(ApiError::MalformedChunk("a line is too long".into())),
        None if raw.len() > max + 1 => Err(ApiError::MalformedChunk("a line is too long".into())),
        None => Ok(None),
    }
}

/// More chunked bytes are needed, unless the framing alone has passed its
/// bound.
fn incomplete(raw: &[u8]) -> Result<Option<Vec<u8>>, ApiError> {
    if raw.len() > 2 * MAX_BODY_BYTES {
        return Err(ApiError::BodyTooLarge {
            length: raw.len() as u64,
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(None)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        _ => "Service Unavailable",
    }
}

/// The bytes of the answer to `reply`, the connection closed after it.
pub(super) fn response(reply: &ApiResponse, allow: Option<&str>) -> Vec<u8> {
    response_with(reply, None, allow, false)
}

/// The bytes of the answer to `reply`; a refusal with `status` when given.
/// `Connection: close` unless the connection stays open (`keep_open`).
pub(super) fn response_with(
    reply: &ApiResponse,
    status: Option<u16>,
    allow: Option<&str>,
    keep_open: bool,
) -> Vec<u8> {
    let (status, body) = match reply {
        Ok(Some(json)) => (200, Some(json.clone())),
        Ok(None) => (204, None),
        Err(err) => (status.unwrap_or_else(|| err.status()), Some(err.body())),
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nServer: Cloud Hypervisor API\r\n",
        reason(status)
    );
    if !keep_open {
        head.push_str("Connection: close\r\n");
    }
    if let Some(allow) = allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    if let Some(body) = &body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(buf: &[u8]) -> (String, String, Vec<u8>) {
        match parse(buf) {
            Ok(Parsed::Request {
                method,
                target,
                body,
                ..
            }) => (method, target, body),
            Ok(Parsed::Incomplete { .. }) => panic!("incomplete"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn frames_a_request_with_its_content_length_body() {
        let (m, t, b) = request(
            b"PUT /api/v1/vm.create HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}trailing",
        );
        assert_eq!(
            (m.as_str(), t.as_str(), b.as_slice()),
            ("PUT", "/api/v1/vm.create", &b"{}"[..])
        );
        assert!(matches!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}"),
            Ok(Parsed::Incomplete { .. })
        ));
        assert!(matches!(
            parse(b"GET /api/v1/vm.info HTT"),
            Ok(Parsed::Incomplete { .. })
        ));
    }

    #[test]
    fn bounds_and_garbage_are_refused() {
        let big = format!("PUT / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 10 << 20);
        assert_eq!(parse(big.as_bytes()).err().unwrap().status(), 413);
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(parse(long.as_bytes()).err().unwrap().status(), 431);
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(many.as_bytes()).err().unwrap().status(), 431);
        let gzip = b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse(gzip).err().unwrap().status(), 411);
        for bad in [
            &b"\x00\xff\xfe garbage\r\n\r\n"[..],
            b"PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ] {
            assert_eq!(parse(bad).err().unwrap().status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_within_the_same_bound() {
        let head = "PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let whole = format!("{head}2\r\n{{}}\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: y\r\n\r\n");
        let (_, target, body) = request(whole.as_bytes());
        assert_eq!(
            (target.as_str(), body.as_slice()),
            ("/api/v1/vm.create", &b"{}abc"[..])
        );
        // Every prefix is incomplete, never an error.
        for cut in head.len()..whole.len() {
            assert!(
                matches!(
                    parse(&whole.as_bytes()[..cut]),
                    Ok(Parsed::Incomplete { .. })
                ),
                "{cut}"
            );
        }
        let status = |text: String| parse(text.as_bytes()).err().map(|e| e.status());
        // A size over the bound, a size line that overflows, a body over the bound.
        assert_eq!(status(format!("{head}10001\r\n")), Some(413));
        assert_eq!(status(format!("{head}ffffffffffffffffff\r\n")), Some(400));
        let big = format!("{head}8000\r\n{}\r\n8001\r\n", "x".repeat(0x8000));
        assert_eq!(status(big), Some(413));
        // Malformed: not hex, a chunk longer than announced, a runaway size line.
        assert_eq!(status(format!("{head}zz\r\n")), Some(400));
        assert_eq!(status(format!("{head}2\r\nabc\r\n0\r\n\r\n")), Some(400));
        assert_eq!(status(format!("{head}{}", "1".repeat(100))), Some(400));
        // Framing alone past its bound (1-byte chunks of a 64 KiB body).
        let tiny: String = std::iter::repeat_n("1\r\nx\r\n", 30_000).collect();
        assert_eq!(status(format!("{head}{tiny}")), Some(413));
        assert_eq!(
            status(format!(
                "PUT / HTTP/1.1\r\nContent-Length: 2\r\n{}",
                &head[24..]
            )),
            Some(400),
            "both framings"
        );
    }

    #[test]
    fn responses_carry_status_length_and_json() {
        let ok = String::from_utf8(response(&Ok(Some("{}".into())), None)).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.contains("Content-Length: 2\r\n"));
        assert!(ok.ends_with("\r\n\r\n{}"));
        let none = String::from_utf8(response(&Ok(None), None)).unwrap();
        assert!(none.starts_with("HTTP/1.1 204 No Content\r\n"));
        assert!(!none.contains("Content-Length"));
        let refused = String::from_utf8(response(&Err(ApiError::Busy), None)).unwrap();
        assert!(refused.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
        let allow = String::from_utf8(response(&Err(ApiError::VmNotCreated), Some("PUT"))).unwrap();
        assert!(allow.contains("Allow: PUT\r\n"));
        assert!(allow.contains("Connection: close\r\n"));
        let kept = String::from_utf8(response_with(&Ok(None), None, None, true)).unwrap();
        assert!(!kept.contains("Connection:"), "{kept}");
    }

    #[test]
    fn connection_close_and_http_1_0_ask_for_the_end() {
        let close = |buf: &[u8]| match parse(buf) {
            Ok(Parsed::Request { close, .. }) => close,
            _ => panic!("not a request"),
        };
        assert!(!close(b"GET /api/v1/vm.info HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(close(
            b"GET /api/v1/vm.info HTTP/1.1\r\nConnection: Close\r\n\r\n"
        ));
        assert!(close(
            b"GET /api/v1/vm.info HTTP/1.1\r\nConnection: te, close\r\n\r\n"
        ));
        assert!(!close(
            b"GET /api/v1/vm.info HTTP/1.1\r\nConnection: keep-alive\r\n\r\n"
        ));
        assert!(close(b"GET /api/v1/vm.info HTTP/1.0\r\n\r\n"));
    }
}
