//! Strict checks on a request's head, before it is routed or anything reaches a backend.
//!
//! Pingora's HTTP/1 parser already rejects the worst (obs-fold, invalid tokens, a
//! `Transfer-Encoding` whose last coding is not chunked, differing `Content-Length` values)
//! with a bare 400. It is lenient where a gateway in front of other HTTP implementations must
//! not be, because two parsers that disagree on where a request ends are how requests get
//! smuggled: it accepts bare LF line endings, collapses repeated identical `Content-Length`
//! values, and when both `Content-Length` and `Transfer-Encoding` are present it drops the
//! length and carries on. This module looks at the raw head Pingora parsed and refuses all
//! three, refuses transfer codings other than a lone `chunked` (Pingora would drop them and
//! forward still-encoded bytes as plain), and enforces the configured header limits.

use crate::config::HeaderLimits;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadRejection {
    /// 400: framing that two HTTP parsers could read differently.
    Ambiguous(&'static str),
    /// 431: more header fields or bytes than the limits allow.
    TooLarge(&'static str),
    /// 414: the request line alone is longer than the head may be.
    UriTooLong,
    /// 501: a transfer coding other than a lone `chunked`.
    UnsupportedCoding,
}

/// Checks the raw request head (request line and header fields, up to the blank line) and the
/// number of header fields Pingora parsed from it.
pub fn check_head(
    raw: &[u8],
    header_count: usize,
    limits: &HeaderLimits,
) -> Result<(), HeadRejection> {
    if header_count > limits.max_count {
        return Err(HeadRejection::TooLarge("too many header fields"));
    }
    if raw.len() > limits.max_bytes {
        let request_line = raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len());
        if request_line > limits.max_bytes {
            return Err(HeadRejection::UriTooLong);
        }
        return Err(HeadRejection::TooLarge("the request head is too large"));
    }
    let mut content_lengths = 0;
    let mut transfer_encodings = 0;
    let mut only_chunked = true;
    // Every line ends with CRLF, the blank line that ends the head included; so splitting at
    // LF leaves exactly one empty piece, after the last LF.
    let mut lines = raw.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            break;
        }
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(HeadRejection::Ambiguous("line endings must be CRLF"));
        };
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths += 1;
            if value.contains(&b',') {
                return Err(HeadRejection::Ambiguous("Content-Length must be one value"));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encodings += 1;
            only_chunked &= value.trim_ascii().eq_ignore_ascii_case(b"chunked");
        }
    }
    if content_lengths > 1 {
        return Err(HeadRejection::Ambiguous("Content-Length must appear once"));
    }
    if content_lengths == 1 && transfer_encodings > 0 {
        return Err(HeadRejection::Ambiguous(
            "Content-Length and Transfer-Encoding must not both be sent",
        ));
    }
    if transfer_encodings > 1 || !only_chunked {
        return Err(HeadRejection::UnsupportedCoding);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<(), HeadRejection> {
        check_head(raw.as_bytes(), 3, &HeaderLimits::default())
    }

    #[test]
    fn a_plain_head_passes() {
        assert_eq!(check("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 3\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for raw in [
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\ncontent-LENGTH: 3\r\n\r\n",
        ] {
            assert!(
                matches!(check(raw), Err(HeadRejection::Ambiguous(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn transfer_codings_other_than_a_lone_chunked_are_not_implemented() {
        for raw in [
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(check(raw), Err(HeadRejection::UnsupportedCoding), "{raw:?}");
        }
        assert_eq!(
            check("POST / HTTP/1.1\r\nTransfer-Encoding:  CHUNKED \r\n\r\n"),
            Ok(())
        );
    }

    #[test]
    fn a_request_line_over_the_head_limit_is_414() {
        let limits = HeaderLimits {
            max_count: 10,
            max_bytes: 64,
        };
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(64));
        assert_eq!(
            check_head(long_target.as_bytes(), 1, &limits),
            Err(HeadRejection::UriTooLong)
        );
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64));
        assert!(matches!(
            check_head(long_header.as_bytes(), 1, &limits),
            Err(HeadRejection::TooLarge(_))
        ));
    }

    #[test]
    fn header_limits_give_431() {
        let limits = HeaderLimits {
            max_count: 2,
            max_bytes: 64,
        };
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(check_head(raw, 2, &limits), Ok(()));
        assert!(matches!(
            check_head(raw, 3, &limits),
            Err(HeadRejection::TooLarge(_))
        ));
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64));
        assert!(matches!(
            check_head(long.as_bytes(), 1, &limits),
            Err(HeadRejection::TooLarge(_))
        ));
    }
}
