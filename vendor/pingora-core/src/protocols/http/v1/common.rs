// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Common functions and constants

use http::{header, HeaderValue};
use log::{debug, warn};
use pingora_error::{Error, ErrorType::*, Result};
use pingora_http::{HMap, RequestHeader, ResponseHeader};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::str;
use std::task::Poll;
use std::time::Duration;

use super::body::BodyWriter;
use crate::utils::KVRef;

pub(super) const MAX_HEADERS: usize = 256;

pub(super) const INIT_HEADER_BUF_SIZE: usize = 4096;
pub(super) const MAX_HEADER_SIZE: usize = 1048575;

pub(crate) const BODY_BUF_LIMIT: usize = 1024 * 64;

pub const CRLF: &[u8; 2] = b"\r\n";
/// The empty line that terminates a message's header section.
pub(super) const HEADER_SECTION_END: &[u8; 4] = b"\r\n\r\n";
pub const HEADER_KV_DELIMITER: &[u8; 2] = b": ";

pub(super) enum HeaderParseState {
    Complete(usize),
    Partial,
    Invalid(httparse::Error),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum KeepaliveStatus {
    Timeout(Duration),
    Infinite,
    Off,
}

struct ConnectionValue {
    keep_alive: bool,
    upgrade: bool,
    close: bool,
}

impl ConnectionValue {
    fn new() -> Self {
        ConnectionValue {
            keep_alive: false,
            upgrade: false,
            close: false,
        }
    }

    fn close(mut self) -> Self {
        self.close = true;
        self
    }
    fn upgrade(mut self) -> Self {
        self.upgrade = true;
        self
    }
    fn keep_alive(mut self) -> Self {
        self.keep_alive = true;
        self
    }
}

/// The `Keep-Alive` field's name, made once rather than parsed from a string at each lookup.
pub(super) const KEEP_ALIVE_HEADER: header::HeaderName =
    header::HeaderName::from_static("keep-alive");

fn parse_connection_header(value: &[u8]) -> ConnectionValue {
    // only parse keep-alive, close, and upgrade tokens
    // https://www.rfc-editor.org/rfc/rfc9110.html#section-7.6.1

    const KEEP_ALIVE: &str = "keep-alive";
    const CLOSE: &str = "close";
    const UPGRADE: &str = "upgrade";

    // fast path
    if value.eq_ignore_ascii_case(CLOSE.as_bytes()) {
        ConnectionValue::new().close()
    } else if value.eq_ignore_ascii_case(KEEP_ALIVE.as_bytes()) {
        ConnectionValue::new().keep_alive()
    } else if value.eq_ignore_ascii_case(UPGRADE.as_bytes()) {
        ConnectionValue::new().upgrade()
    } else {
        // slow path, parse the connection value
        let mut close = false;
        let mut upgrade = false;
        let value = str::from_utf8(value).unwrap_or("");
        for token in value
            .split(',')
            .map(|s| s.trim())
            .filter(|&x| !x.is_empty())
        {
            if token.eq_ignore_ascii_case(CLOSE) {
                close = true;
            } else if token.eq_ignore_ascii_case(UPGRADE) {
                upgrade = true;
            }
            if upgrade && close {
                return ConnectionValue::new().upgrade().close();
            }
        }
        if close {
            ConnectionValue::new().close()
        } else if upgrade {
            ConnectionValue::new().upgrade()
        } else {
            ConnectionValue::new()
        }
    }
}

pub(super) fn init_body_writer_comm(body_writer: &mut BodyWriter, fields: &FramingFields) {
    if fields.chunked {
        // transfer-encoding takes priority over content-length
        body_writer.init_chunked();
        return;
    }
    // Resolve Content-Length through the shared, range-checked helper so the
    // value is reconciled (identical duplicates / comma lists) and never
    // truncated. For responses, an absent Content-Length is close-delimited.
    // An invalid value should have been rejected on read; if validation was
    // bypassed, log the anomaly and fall back to close-delimited rather than
    // risk misframing the body.
    match fields.content_length.for_framing() {
        Ok(Some(length)) => body_writer.init_content_length(length),
        Ok(None) => {
            /* TODO: 1. connection: keepalive cannot be used,
            2. mark connection must be closed */
            body_writer.init_close_delimited()
        }
        Err(e) => {
            // Headers are validated on read, so this is not expected here; log
            // the fallback to a close-delimited body rather than failing
            // silently if validation was somehow bypassed.
            debug!("invalid Content-Length while writing; framing close-delimited: {e}");
            body_writer.init_close_delimited()
        }
    }
}

/// Find the last comma-separated token in a Transfer-Encoding header value.
/// Takes the literal last token after the last comma, even if empty.
#[inline]
fn find_last_te_token(bytes: &[u8]) -> &[u8] {
    let last_token = bytes
        .iter()
        .rposition(|&b| b == b',')
        .map(|pos| &bytes[pos + 1..])
        .unwrap_or(bytes);

    last_token.trim_ascii()
}

/// Check if chunked encoding is the final encoding across all transfer-encoding headers
pub(crate) fn is_chunked_encoding_from_headers(headers: &HMap) -> bool {
    // Get the last Transfer-Encoding header value
    let last_te = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .into_iter()
        .next_back();

    last_te.is_some_and(|value| is_chunked_value(value.as_bytes()))
}

/// Whether the last coding of a `Transfer-Encoding` value is `chunked`.
fn is_chunked_value(bytes: &[u8]) -> bool {
    // Fast path: exact match for "chunked"
    if bytes.eq_ignore_ascii_case(b"chunked") {
        return true;
    }

    // Slow path: parse comma-separated values
    find_last_te_token(bytes).eq_ignore_ascii_case(b"chunked")
}

/// [`pingora_timeout::timeout`] for a future that is often ready when first polled (a write
/// into the buffer, a read of bytes already in): the timeout, which checks the timer thread and
/// reads the clock when it is made, is made only once the future has to wait. Its timer starts
/// at that first wait either way.
pub(super) async fn timeout<F: Future>(
    duration: Duration,
    future: F,
) -> std::result::Result<F::Output, pingora_timeout::Elapsed> {
    let mut future = pin!(future);
    if let Poll::Ready(output) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        return Ok(output);
    }
    pingora_timeout::timeout(duration, future).await
}

pub fn is_upgrade_req(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11 && req.headers.get(header::UPGRADE).is_some()
}

pub fn is_expect_continue_req(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11
        // https://www.rfc-editor.org/rfc/rfc9110#section-10.1.1
        && req.headers.get(header::EXPECT).is_some_and(|v| {
            v.as_bytes().eq_ignore_ascii_case(b"100-continue")
        })
}

// Unlike the upgrade check on request, this function doesn't check the Upgrade or Connection header
// because when seeing 101, we assume the server accepts to switch protocol.
// In reality it is not common that some servers don't send all the required headers to establish
// websocket connections.
pub fn is_upgrade_resp(header: &ResponseHeader) -> bool {
    header.status == 101 && header.version == http::Version::HTTP_11
}

#[inline]
pub fn header_value_content_length(
    header_value: Option<&http::header::HeaderValue>,
) -> Option<usize> {
    match header_value {
        Some(value) => buf_to_content_length(Some(value.as_bytes())).ok().flatten(),
        None => None,
    }
}

#[inline]
pub(super) fn buf_to_content_length(header_value: Option<&[u8]>) -> Result<Option<usize>> {
    match header_value {
        Some(buf) => {
            match str::from_utf8(buf) {
                // check valid string
                Ok(str_cl_value) => match str_cl_value.parse::<i64>() {
                    Ok(cl_length) => {
                        if cl_length >= 0 {
                            Ok(Some(cl_length as usize))
                        } else {
                            warn!("negative content-length header value {cl_length}");
                            Error::e_explain(
                                InvalidHTTPHeader,
                                format!("negative Content-Length header value: {cl_length}"),
                            )
                        }
                    }
                    Err(_) => {
                        warn!("invalid content-length header value {str_cl_value}");
                        Error::e_explain(
                            InvalidHTTPHeader,
                            format!("invalid Content-Length header value: {str_cl_value}"),
                        )
                    }
                },
                Err(_) => {
                    warn!("invalid content-length header encoding");
                    Error::e_explain(InvalidHTTPHeader, "invalid Content-Length header encoding")
                }
            }
        }
        None => Ok(None),
    }
}

#[inline]
pub(super) fn is_buf_keepalive(header_value: Option<&HeaderValue>) -> Option<bool> {
    header_value.and_then(|value| keepalive_of_connection(value.as_bytes()))
}

/// What a `Connection` value says: `Some(true)` for keep-alive, `Some(false)` for close.
#[inline]
fn keepalive_of_connection(value: &[u8]) -> Option<bool> {
    let value = parse_connection_header(value);
    if value.keep_alive {
        Some(true)
    } else if value.close {
        Some(false)
    } else {
        None
    }
}

#[inline]
pub(super) fn populate_headers(
    base: usize,
    header_ref: &mut Vec<KVRef>,
    headers: &[httparse::Header],
) -> usize {
    let mut used_header_index = 0;
    for header in headers.iter() {
        if !header.name.is_empty() {
            header_ref.push(KVRef::new(
                header.name.as_ptr() as usize - base,
                header.name.len(),
                header.value.as_ptr() as usize - base,
                header.value.len(),
            ));
            used_header_index += 1;
        }
    }
    used_header_index
}

/// Parse a `Content-Length` field value as an ASCII digit string, matching
/// hyper's `from_digits`
/// (<https://github.com/hyperium/hyper/blob/v1.9.0/src/headers.rs#L72-L97>).
///
/// Rejects empty input, any non-digit byte, a leading sign, and values that
/// overflow `u64`.
fn from_digits(bytes: &[u8]) -> Option<u64> {
    // cannot use FromStr for u64, since it allows a signed prefix
    const RADIX: u64 = 10;

    if bytes.is_empty() {
        return None;
    }

    let mut result = 0u64;
    for &b in bytes {
        // can't use char::to_digit, since we haven't verified these bytes
        // are utf-8.
        match b {
            b'0'..=b'9' => {
                result = result.checked_mul(RADIX)?;
                result = result.checked_add((b - b'0') as u64)?;
            }
            // not a DIGIT, get outta here!
            _ => return None,
        }
    }

    Some(result)
}

/// Reconcile every `Content-Length` value (across duplicate header lines and
/// comma-separated lists) into a single value, mirroring the behavior of
/// hyper's `content_length_parse_all`
/// (<https://github.com/hyperium/hyper/blob/v1.9.0/src/headers.rs#L40-L69>).
///
/// Returns `Some(n)` only when at least one value is present and every value
/// parses and is equal. Returns `None` when there are no values, when any value
/// is unparseable, or when two values disagree. Per [RFC 9110 section
/// 8.6](https://www.rfc-editor.org/rfc/rfc9110#section-8.6) this lets identical
/// duplicates (e.g. `Content-Length: 42, 42`) be collapsed to a single value
/// while genuinely conflicting framing is rejected.
#[cfg(test)]
pub(crate) fn content_length_parse_all(headers: &HMap) -> Option<u64> {
    match content_length_fields(headers) {
        ContentLength::Valid(n) => Some(n),
        ContentLength::Absent | ContentLength::Invalid => None,
    }
}

/// What a message's `Content-Length` fields come to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) enum ContentLength {
    #[default]
    Absent,
    Valid(u64),
    /// Present, but not one value: conflicting, or not a number.
    Invalid,
}

impl ContentLength {
    /// What the fields read so far and one more `Content-Length` value come to: the value's
    /// comma-separated elements, each without the optional white space (space, tab) around
    /// it, must be the same number as every element before. A byte that is not visible ASCII
    /// is not a digit, so it makes the value invalid without a check of its own.
    fn and(self, value: &[u8]) -> Self {
        let mut content_length = match self {
            ContentLength::Invalid => return self,
            ContentLength::Absent => None,
            ContentLength::Valid(n) => Some(n),
        };
        for element in value.split(|&b| b == b',') {
            let Some(n) = from_digits(trim_ows(element)) else {
                return ContentLength::Invalid;
            };
            match content_length {
                None => content_length = Some(n),
                Some(prev) if prev != n => return ContentLength::Invalid,
                Some(_) => {}
            }
        }
        content_length.map_or(ContentLength::Absent, ContentLength::Valid)
    }

    /// The length that frames the body, following hyper's decode rules: the reconciled value
    /// when valid, an error when a `Content-Length` is present but cannot be resolved to a
    /// single value (conflicting duplicates or an unparseable value), or `None` when absent.
    pub(super) fn for_framing(self) -> Result<Option<usize>> {
        match self {
            ContentLength::Valid(cl) => {
                // Content-Length frames the body, so a value that does not fit in
                // `usize` cannot be represented and must not be silently truncated
                // (which would misframe bodies larger than `usize::MAX`, e.g. on
                // 32-bit targets). On 64-bit targets this conversion never fails.
                usize::try_from(cl).map(Some).or_else(|_| {
                    // debug, not warn: this is a per-message, client-influenced
                    // condition; the error is returned and surfaced by the caller.
                    debug!("Content-Length {cl} exceeds the platform's usize::MAX");
                    Error::e_explain(
                        InvalidHTTPHeader,
                        format!("Content-Length {cl} exceeds the platform maximum"),
                    )
                })
            }
            ContentLength::Invalid => {
                // debug, not warn: per-message, client-influenced; avoids log floods
                // under adversarial load. The error is returned to the caller.
                debug!("invalid Content-Length header");
                Error::e_explain(InvalidHTTPHeader, "invalid Content-Length header")
            }
            ContentLength::Absent => Ok(None),
        }
    }
}

/// Reads every `Content-Length` value of `headers` (see [`ContentLength::and`]).
fn content_length_fields(headers: &HMap) -> ContentLength {
    headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .fold(ContentLength::Absent, |fields, value| {
            fields.and(value.as_bytes())
        })
}

/// The fields of an HTTP/1 head that frame its body or decide whether its connection is
/// kept, read in one pass over its fields: noted one by one while a parsed head's map is built
/// (`note`), or read from a map in one walk over it (`of`). Either way each is then known
/// without a lookup in the map (a hash and a probe each, several per field).
#[derive(Debug, Default, PartialEq)]
pub(super) struct FramingFields {
    /// Whether a `Transfer-Encoding` field is present.
    pub(super) transfer_encoding: bool,
    /// Whether the last `Transfer-Encoding` field's last coding is `chunked` (see
    /// [`is_chunked_encoding_from_headers`]).
    pub(super) chunked: bool,
    /// What the `Content-Length` fields come to.
    pub(super) content_length: ContentLength,
    /// What the first `Connection` field says (see [`is_buf_keepalive`]), once one is seen.
    connection: Option<Option<bool>>,
    /// The first `Keep-Alive` field's `timeout`, once one is seen.
    keep_alive: Option<Option<u64>>,
}

/// The fields [`FramingFields`] reads.
#[derive(Clone, Copy)]
enum FramingField {
    Connection,
    KeepAlive,
    ContentLength,
    TransferEncoding,
}

impl FramingField {
    /// The field a parsed name is, compared ignoring case (as the map's names are made from
    /// it): by length first, so most names are passed over with one comparison.
    #[inline]
    fn of_parsed(name: &[u8]) -> Option<Self> {
        match name.len() {
            10 if name.eq_ignore_ascii_case(b"connection") => Some(Self::Connection),
            10 if name.eq_ignore_ascii_case(b"keep-alive") => Some(Self::KeepAlive),
            14 if name.eq_ignore_ascii_case(b"content-length") => Some(Self::ContentLength),
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => Some(Self::TransferEncoding),
            _ => None,
        }
    }

    /// The field a map's name is.
    #[inline]
    fn of_name(name: &header::HeaderName) -> Option<Self> {
        if name == header::CONTENT_LENGTH {
            Some(Self::ContentLength)
        } else if name == header::TRANSFER_ENCODING {
            Some(Self::TransferEncoding)
        } else if name == header::CONNECTION {
            Some(Self::Connection)
        } else if name == KEEP_ALIVE_HEADER {
            Some(Self::KeepAlive)
        } else {
            None
        }
    }
}

impl FramingFields {
    /// The framing fields of `headers`, in one walk over its fields.
    pub(super) fn of(headers: &HMap) -> Self {
        let mut fields = FramingFields::default();
        for (name, value) in headers {
            if let Some(field) = FramingField::of_name(name) {
                fields.add(field, value.as_bytes());
            }
        }
        fields
    }

    /// Notes the parsed field `name: value`, in the order the head carries its fields.
    #[inline]
    pub(super) fn note(&mut self, name: &[u8], value: &[u8]) {
        if let Some(field) = FramingField::of_parsed(name) {
            self.add(field, value);
        }
    }

    fn add(&mut self, field: FramingField, value: &[u8]) {
        match field {
            FramingField::Connection => {
                self.connection
                    .get_or_insert_with(|| keepalive_of_connection(value));
            }
            FramingField::KeepAlive => {
                self.keep_alive
                    .get_or_insert_with(|| keepalive_timeout(value));
            }
            FramingField::ContentLength => self.content_length = self.content_length.and(value),
            FramingField::TransferEncoding => {
                self.transfer_encoding = true;
                self.chunked = is_chunked_value(value);
            }
        }
    }

    /// What the first `Connection` field says: `Some(true)` for keep-alive, `Some(false)` for
    /// close, `None` for neither or no field.
    pub(super) fn connection_keepalive(&self) -> Option<bool> {
        self.connection.flatten()
    }

    /// The `timeout` of the first `Keep-Alive` field, in seconds.
    pub(super) fn keepalive_timeout(&self) -> Option<u64> {
        self.keep_alive.flatten()
    }
}

/// `Keep-Alive: timeout=5, max=1000` => 5. This header is not part of any RFC, so its
/// behavior differs between platforms:
/// https://developer.mozilla.org/en-US/docs/Web/HTTP/Headers/Keep-Alive
fn keepalive_timeout(value: &[u8]) -> Option<u64> {
    let value = str::from_utf8(value).ok()?;
    let mut timeout = None;
    for param in value.split(',') {
        if let Some(("timeout", timeout_value)) = param.split_once('=').map(|(k, v)| (k.trim(), v))
        {
            timeout = timeout_value.trim().parse().ok();
        }
    }
    timeout
}

/// `bytes` without the spaces and tabs at either end.
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Resolve the framing `Content-Length` of a message following hyper's decode
/// rules: the reconciled value when valid, an error when a `Content-Length` is
/// present but cannot be resolved to a single value (conflicting duplicates or
/// an unparseable value), or `None` when the header is absent.
pub(crate) fn content_length_for_framing(headers: &HMap) -> Result<Option<usize>> {
    content_length_fields(headers).for_framing()
}

/// Validate `Content-Length` for transports where `Transfer-Encoding` is not
/// permitted.
///
/// HTTP/2 does not use `Content-Length` for framing and forbids the
/// `Transfer-Encoding` header entirely. The h2 codec should reject such messages
/// before they reach Pingora, but this keeps the shared H2 validation path
/// explicit and defensive.
pub(crate) fn validate_content_length_without_transfer_encoding(headers: &HMap) -> Result<()> {
    if headers.get(header::TRANSFER_ENCODING).is_some() {
        return Error::e_explain(InvalidHTTPHeader, "invalid Transfer-Encoding header");
    }
    content_length_for_framing(headers).map(|_| ())
}

/// Whether exactly one `Content-Length` token is present: a single header line
/// with no comma-separated list.
///
/// A recipient may choose to tolerate such a value when it is otherwise
/// unparseable (treating the message as close-delimited), but multi-token
/// framing (duplicate header lines or comma-separated lists) that fails to
/// reconcile is always an unrecoverable error and must never be tolerated.
pub(crate) fn content_length_is_single_token(headers: &HMap) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).into_iter();
    match (values.next(), values.next()) {
        (Some(value), None) => !value.as_bytes().contains(&b','),
        _ => false,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use http::{
        header::{CONTENT_LENGTH, TRANSFER_ENCODING},
        StatusCode, Version,
    };
    use rstest::rstest;

    #[tokio::test]
    async fn a_timeout_answers_a_ready_future_and_bounds_a_waiting_one() {
        let ready = timeout(Duration::from_secs(10), async { 7 }).await;
        assert_eq!(ready.unwrap(), 7);
        let never = timeout(Duration::from_millis(10), std::future::pending::<()>());
        assert!(never.await.is_err());
        let later = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            8
        };
        assert_eq!(timeout(Duration::from_secs(10), later).await.unwrap(), 8);
    }

    #[test]
    fn test_validate_content_length_without_transfer_encoding_rejects_te() {
        let mut headers = HMap::new();
        headers.append(TRANSFER_ENCODING, "chunked".try_into().unwrap());

        let err = validate_content_length_without_transfer_encoding(&headers).unwrap_err();
        assert_eq!(err.etype(), &InvalidHTTPHeader);
        assert_eq!(
            err.context.as_ref().map(|c| c.as_str()),
            Some("invalid Transfer-Encoding header")
        );
    }

    /// Every head of up to three fields drawn from `FIELDS`: what one pass reads, from the
    /// parsed fields or from the map, is what the lookups it replaces find.
    #[test]
    fn framing_fields_read_in_one_pass_are_what_lookups_find() {
        const FIELDS: [(&str, &str); 12] = [
            ("Content-Length", "5"),
            ("content-length", "5, 5"),
            ("CONTENT-LENGTH", "6"),
            ("Content-Length", "x"),
            ("Transfer-Encoding", "chunked"),
            ("transfer-encoding", "gzip"),
            ("Transfer-Encoding", "gzip, chunked"),
            ("Connection", "close"),
            ("connection", "keep-alive"),
            ("Keep-Alive", "timeout=7"),
            ("keep-alive", "timeout=9, max=3"),
            ("X-Other", "1"),
        ];
        let n = FIELDS.len();
        let heads = (0..=3u32).flat_map(|len| {
            (0..n.pow(len)).map(move |mut i| {
                (0..len)
                    .map(|_| {
                        let field = FIELDS[i % n];
                        i /= n;
                        field
                    })
                    .collect::<Vec<_>>()
            })
        });
        for head in heads {
            let mut noted = FramingFields::default();
            let mut map = HMap::new();
            for (name, value) in &head {
                noted.note(name.as_bytes(), value.as_bytes());
                map.append(
                    header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            let walked = FramingFields::of(&map);
            assert_eq!(noted, walked, "{head:?}");
            assert_eq!(
                walked.transfer_encoding,
                map.contains_key(header::TRANSFER_ENCODING),
                "{head:?}"
            );
            assert_eq!(
                walked.chunked,
                is_chunked_encoding_from_headers(&map),
                "{head:?}"
            );
            assert_eq!(
                walked.content_length.for_framing().ok(),
                content_length_for_framing(&map).ok(),
                "{head:?}"
            );
            assert_eq!(
                walked.content_length == ContentLength::Absent,
                !map.contains_key(header::CONTENT_LENGTH),
                "{head:?}"
            );
            assert_eq!(
                walked.connection_keepalive(),
                is_buf_keepalive(map.get(header::CONNECTION)),
                "{head:?}"
            );
            assert_eq!(
                walked.keepalive_timeout(),
                map.get(KEEP_ALIVE_HEADER)
                    .and_then(|value| keepalive_timeout(value.as_bytes())),
                "{head:?}"
            );
        }
    }

    #[rstest]
    #[case::single("5", Some(5))]
    #[case::comma_identical("5, 5", Some(5))]
    #[case::comma_identical_no_space("5,5", Some(5))]
    #[case::comma_conflict("5, 6", None)]
    #[case::invalid("abc", None)]
    #[case::empty("", None)]
    #[case::negative("-1", None)]
    #[case::trailing_comma("5,", None)]
    #[case::overflow("99999999999999999999999999", None)]
    #[case::spaces_and_tabs(" \t5 ,\t5\t", Some(5))]
    #[case::inner_space("1 2", None)]
    #[case::only_spaces("  ", None)]
    #[case::plus("+5", None)]
    #[case::not_ascii("5\u{a0}", None)]
    fn test_content_length_parse_all_single_header(
        #[case] value: &str,
        #[case] expected: Option<u64>,
    ) {
        let mut headers = HMap::new();
        // From bytes, which lets a byte above ASCII through as a received value may carry it.
        let value = HeaderValue::from_bytes(value.as_bytes()).unwrap();
        headers.insert(CONTENT_LENGTH, value);
        assert_eq!(content_length_parse_all(&headers), expected);
    }

    #[rstest]
    #[case::none(&[], None)]
    #[case::two_identical(&["5", "5"], Some(5))]
    #[case::three_identical(&["7", "7", "7"], Some(7))]
    #[case::two_conflict(&["5", "6"], None)]
    #[case::mixed_comma_identical(&["5", "5, 5"], Some(5))]
    #[case::mixed_comma_conflict(&["5", "5, 6"], None)]
    fn test_content_length_parse_all_multi_header(
        #[case] values: &[&str],
        #[case] expected: Option<u64>,
    ) {
        let mut headers = HMap::new();
        for value in values {
            headers.append(CONTENT_LENGTH, (*value).try_into().unwrap());
        }
        assert_eq!(content_length_parse_all(&headers), expected);
    }

    #[test]
    fn test_content_length_for_framing() {
        // absent -> Ok(None)
        let headers = HMap::new();
        assert_eq!(content_length_for_framing(&headers).unwrap(), None);

        // valid -> Ok(Some)
        let mut headers = HMap::new();
        headers.insert(CONTENT_LENGTH, "5".try_into().unwrap());
        assert_eq!(content_length_for_framing(&headers).unwrap(), Some(5));

        // identical duplicate -> Ok(Some) (reconciled)
        let mut headers = HMap::new();
        headers.append(CONTENT_LENGTH, "5".try_into().unwrap());
        headers.append(CONTENT_LENGTH, "5".try_into().unwrap());
        assert_eq!(content_length_for_framing(&headers).unwrap(), Some(5));

        // present but invalid -> Err
        let mut headers = HMap::new();
        headers.insert(CONTENT_LENGTH, "abc".try_into().unwrap());
        let err = content_length_for_framing(&headers).unwrap_err();
        assert_eq!(
            err.context.as_ref().map(|c| c.as_str()),
            Some("invalid Content-Length header")
        );

        // present but conflicting -> Err
        let mut headers = HMap::new();
        headers.append(CONTENT_LENGTH, "5".try_into().unwrap());
        headers.append(CONTENT_LENGTH, "6".try_into().unwrap());
        let err = content_length_for_framing(&headers).unwrap_err();
        assert_eq!(
            err.context.as_ref().map(|c| c.as_str()),
            Some("invalid Content-Length header")
        );
    }

    #[test]
    fn test_content_length_is_single_token_absent() {
        // no Content-Length header at all is not a single token
        assert!(!content_length_is_single_token(&HMap::new()));
    }

    #[rstest]
    // single header line, no comma -> single token (even if otherwise invalid)
    #[case::valid("5", true)]
    #[case::invalid("abc", true)]
    #[case::empty("", true)]
    // a comma-separated list in one header line is multiple tokens
    #[case::comma_identical("5, 5", false)]
    #[case::comma_conflict("5, 6", false)]
    #[case::trailing_comma("5,", false)]
    fn test_content_length_is_single_token_one_header(#[case] value: &str, #[case] expected: bool) {
        let mut headers = HMap::new();
        headers.insert(CONTENT_LENGTH, value.try_into().unwrap());
        assert_eq!(content_length_is_single_token(&headers), expected);
    }

    #[rstest]
    // duplicate header lines are multiple tokens, regardless of values
    #[case::identical(&["5", "5"])]
    #[case::conflict(&["5", "6"])]
    fn test_content_length_is_single_token_multi_header(#[case] values: &[&str]) {
        let mut headers = HMap::new();
        for value in values {
            headers.append(CONTENT_LENGTH, (*value).try_into().unwrap());
        }
        assert!(!content_length_is_single_token(&headers));
    }

    #[test]
    fn test_is_upgrade_resp() {
        let mut response = ResponseHeader::build(StatusCode::SWITCHING_PROTOCOLS, None).unwrap();
        response.set_version(Version::HTTP_11);
        response.insert_header("Upgrade", "websocket").unwrap();
        response.insert_header("Connection", "upgrade").unwrap();
        assert!(is_upgrade_resp(&response));

        // wrong http version
        response.set_version(Version::HTTP_10);
        response.insert_header("Upgrade", "websocket").unwrap();
        response.insert_header("Connection", "upgrade").unwrap();
        assert!(!is_upgrade_resp(&response));

        // not 101
        response.set_status(StatusCode::OK).unwrap();
        response.set_version(Version::HTTP_11);
        assert!(!is_upgrade_resp(&response));
    }

    #[test]
    fn test_is_chunked_encoding_from_headers_empty() {
        let empty_headers = HMap::new();
        assert!(!is_chunked_encoding_from_headers(&empty_headers));
    }

    #[rstest]
    #[case::single_chunked("chunked", true)]
    #[case::comma_separated_final("identity, chunked", true)]
    #[case::whitespace_around("  chunked  ", true)]
    #[case::empty_elements_before(", , , chunked", true)]
    #[case::only_identity("identity", false)]
    #[case::trailing_comma("chunked, ", false)]
    #[case::multiple_trailing_commas("chunked, , ", false)]
    #[case::empty_value("", false)]
    #[case::whitespace_only("   ", false)]
    fn test_is_chunked_encoding_single_header(#[case] value: &str, #[case] expected: bool) {
        let mut headers = HMap::new();
        headers.insert(TRANSFER_ENCODING, value.try_into().unwrap());
        assert_eq!(is_chunked_encoding_from_headers(&headers), expected);
    }

    #[rstest]
    #[case::two_headers_chunked_last(&["identity", "chunked"], true)]
    #[case::three_headers_chunked_last(&["gzip", "identity", "chunked"], true)]
    #[case::last_has_comma_separated(&["gzip", "identity, chunked"], true)]
    #[case::whitespace_in_last(&["gzip", "  chunked  "], true)]
    #[case::two_headers_no_chunked(&["identity", "gzip"], false)]
    #[case::chunked_not_last(&["chunked", "identity"], false)]
    #[case::last_has_chunked_not_final(&["gzip", "chunked, identity"], false)]
    #[case::chunked_overridden(&["chunked", "identity, gzip"], false)]
    #[case::trailing_comma_in_last(&["gzip", "chunked, "], false)]
    fn test_is_chunked_encoding_multiple_headers(#[case] values: &[&str], #[case] expected: bool) {
        let mut headers = HMap::new();
        for value in values {
            headers.append(TRANSFER_ENCODING, (*value).try_into().unwrap());
        }
        assert_eq!(is_chunked_encoding_from_headers(&headers), expected);
    }
}
