//! A request head's bytes: where a head ends in a stream of reads, whether its chunked body is
//! to be checked ahead, its target's form, and the strict checks on the head Pingora parsed.
//!
//! Pingora's HTTP/1 parser already rejects the worst (obs-fold, invalid tokens, a
//! `Transfer-Encoding` whose last coding is not chunked, differing `Content-Length` values)
//! with a bare 400. It is lenient where a gateway in front of other HTTP implementations must
//! not be, because two parsers that disagree on where a request ends are how requests get
//! smuggled: it accepts bare LF line endings, collapses repeated identical `Content-Length`
//! values, and when both `Content-Length` and `Transfer-Encoding` are present it drops the
//! length and carries on. [`check_head`] looks at the raw head Pingora parsed and refuses all
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
    // Every line ends with CRLF, the blank line that ends the head included.
    for line in lines(raw) {
        let Some(line) = line.strip_suffix(b"\r") else {
            return Err(HeadRejection::Ambiguous("line endings must be CRLF"));
        };
        if let Some(value) = field_value(line, b"content-length") {
            content_lengths += 1;
            if value.contains(&b',') {
                return Err(HeadRejection::Ambiguous("Content-Length must be one value"));
            }
        } else if let Some(value) = field_value(line, b"transfer-encoding") {
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

/// Whether the head declares a chunked body that the guard should check before Pingora sees
/// it: `Transfer-Encoding` names `chunked` and the client does not wait for `100 Continue`.
pub(super) fn has_chunked_body_to_check(head: &[u8]) -> bool {
    if !mentions_chunked(head) {
        return false;
    }
    let mut chunked = false;
    let contains = |value: &[u8], needle: &[u8]| {
        value
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    for line in lines(head).skip(1) {
        if let Some(value) = field_value(line, b"transfer-encoding") {
            chunked |= contains(value, b"chunked");
        } else if let Some(value) = field_value(line, b"expect") {
            if contains(value, b"100-continue") {
                return false;
            }
        }
    }
    chunked
}

/// Whether `head` holds `chunked`, in any case, anywhere: one that does not declares no chunked
/// body, and most heads do not. One search for the word's rare `k` spares looking at each line.
fn mentions_chunked(head: &[u8]) -> bool {
    // `k` is the word's fifth letter.
    memchr::memchr2_iter(b'k', b'K', head).any(|k| {
        k.checked_sub(4)
            .and_then(|start| head.get(start..k + 3))
            .is_some_and(|word| word.eq_ignore_ascii_case(b"chunked"))
    })
}

/// Rewrites a request line at the start of `bytes` whose target is in absolute form
/// (`http://authority/path?query`, any method but `CONNECT`) into origin form (`/path?query`)
/// in place; returns how many bytes are left. Anything else, or a request line not whole in
/// `bytes`, is left as it is.
pub(super) fn origin_form(bytes: &mut [u8]) -> usize {
    let len = bytes.len();
    // The usual target, a path, is told at its first byte: no need to find the line's end.
    let method_end = bytes.iter().position(|&b| matches!(b, b' ' | b'\n'));
    if method_end.is_some_and(|end| bytes.get(end + 1) == Some(&b'/')) {
        return len;
    }
    let Some(line_end) = memchr::memchr(b'\n', bytes) else {
        return len;
    };
    let line = &bytes[..line_end];
    let Some(method_end) = line.iter().position(|&b| b == b' ') else {
        return len;
    };
    if &line[..method_end] == b"CONNECT" {
        return len;
    }
    let target_start = method_end + 1;
    let target = &line[target_start..];
    let scheme = [&b"http://"[..], b"https://"].into_iter().find(|scheme| {
        target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme)
    });
    let Some(scheme) = scheme else {
        return len;
    };
    let authority_end = target[scheme.len()..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b' '))
        .map_or(target.len(), |i| scheme.len() + i);
    // What is cut: the scheme and authority, less one byte kept for a `/` when the target
    // has no path of its own.
    let mut cut = authority_end;
    if target.get(authority_end) != Some(&b'/') {
        cut -= 1;
        bytes[target_start + cut] = b'/';
    }
    bytes.copy_within(target_start + cut.., target_start);
    len - cut
}

/// Where in `bytes` the head ends (just past its blank line: CRLF CRLF, or a bare-LF one,
/// which is refused later with an answer), if it does; `last_two` carries the bytes before
/// them across reads.
pub(super) fn head_end_in(last_two: &mut [u8; 2], bytes: &[u8]) -> Option<usize> {
    // The two bytes before `bytes[i]`, reaching back into the previous reads.
    let two_before = |i: usize| match i {
        0 => *last_two,
        1 => [last_two[1], bytes[0]],
        _ => [bytes[i - 2], bytes[i - 1]],
    };
    let end = memchr::memchr_iter(b'\n', bytes).find(|&i| {
        let [before, last] = two_before(i);
        last == b'\n' || (last == b'\r' && before == b'\n')
    });
    // What the next read's scan looks back at: the two bytes up to the end, or the last two.
    let upto = end.map_or(bytes.len(), |i| i + 1);
    *last_two = two_before(upto);
    end.map(|i| i + 1)
}

/// The lines of `bytes` that end in LF, without it (a CR before it stays).
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', bytes).map(move |end| {
        let line = &bytes[start..end];
        start = end + 1;
        line
    })
}

/// The value (untrimmed) of a header line whose name is `name` in any case. A name has no
/// colon in it, so the line's first colon must follow it at once; no search for it is needed.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (head, value) = line.split_at_checked(name.len())?;
    let value = value.strip_prefix(b":")?;
    head.eq_ignore_ascii_case(name).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str) -> Result<(), HeadRejection> {
        check_head(raw.as_bytes(), 3, &HeaderLimits::default())
    }

    #[test]
    fn the_limits_are_inclusive() {
        let head = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let limits = HeaderLimits {
            max_count: 1,
            max_bytes: head.len(),
        };
        assert_eq!(check_head(head.as_bytes(), 1, &limits), Ok(()));
        assert!(check_head(head.as_bytes(), 2, &limits).is_err());
        let limits = HeaderLimits {
            max_bytes: head.len() - 1,
            ..limits
        };
        assert!(check_head(head.as_bytes(), 1, &limits).is_err());
        // A head over the limit is a 414 only when its request line alone is.
        let line_end = head.find('\n').unwrap();
        let limits = HeaderLimits {
            max_bytes: line_end,
            ..limits
        };
        assert_eq!(
            check_head(head.as_bytes(), 1, &limits),
            Err(HeadRejection::TooLarge("the request head is too large"))
        );
        let limits = HeaderLimits {
            max_bytes: line_end - 1,
            ..limits
        };
        assert_eq!(
            check_head(head.as_bytes(), 1, &limits),
            Err(HeadRejection::UriTooLong)
        );
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

    #[test]
    fn the_end_of_a_head_is_found_across_reads() {
        let ends = |chunks: &[&[u8]]| {
            let mut last_two = [0; 2];
            chunks
                .iter()
                .position(|c| head_end_in(&mut last_two, c).is_some())
        };
        assert_eq!(ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"]), Some(0));
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r", b"\n", b"\r", b"\n"]),
            Some(3)
        );
        assert_eq!(ends(&[b"GET / HTTP/1.1\nHost: a\n", b"\n"]), Some(1));
        assert_eq!(
            ends(&[b"GET / HTTP/1.1\r\nHost: a\r\n", b"X: \r\r\n"]),
            None
        );
    }

    #[test]
    fn the_end_of_a_head_is_found_wherever_the_reads_split_it() {
        // One byte at a time, as the scan was first written.
        let byte_by_byte = |chunks: &[&[u8]]| {
            let mut last_two = [0u8; 2];
            for (n, chunk) in chunks.iter().enumerate() {
                for (i, &b) in chunk.iter().enumerate() {
                    let [before, last] = last_two;
                    last_two = [last, b];
                    if b == b'\n' && (last == b'\n' || (last == b'\r' && before == b'\n')) {
                        return Some((n, i + 1));
                    }
                }
            }
            None
        };
        let found = |chunks: &[&[u8]]| {
            let mut last_two = [0u8; 2];
            chunks
                .iter()
                .enumerate()
                .find_map(|(n, chunk)| head_end_in(&mut last_two, chunk).map(|end| (n, end)))
        };
        for head in [
            &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"[..],
            b"GET / HTTP/1.1\nHost: a\n\nrest",
            b"GET / HTTP/1.1\r\nX: \r\r\nY: \n\r\r\n\r\n",
            b"\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
        ] {
            for first in 0..=head.len() {
                for second in first..=head.len() {
                    let chunks = [&head[..first], &head[first..second], &head[second..]];
                    assert_eq!(
                        found(&chunks),
                        byte_by_byte(&chunks),
                        "{head:?} {first} {second}"
                    );
                }
            }
        }
    }

    #[test]
    fn absolute_form_targets_become_origin_form() {
        let rewritten = |line: &str| {
            let mut bytes = line.as_bytes().to_vec();
            let kept = origin_form(&mut bytes);
            String::from_utf8(bytes[..kept].to_vec()).unwrap()
        };
        for (line, expected) in [
            (
                "GET http://example.com/v1/proxy/a/x?q=1 HTTP/1.1\r\nHost: b\r\n\r\n",
                "GET /v1/proxy/a/x?q=1 HTTP/1.1\r\nHost: b\r\n\r\n",
            ),
            ("GET HTTPS://h:1 HTTP/1.1\r\n", "GET / HTTP/1.1\r\n"),
            ("GET http://h?q HTTP/1.1\r\n", "GET /?q HTTP/1.1\r\n"),
            (
                "GET /v1/proxy/a HTTP/1.1\r\n",
                "GET /v1/proxy/a HTTP/1.1\r\n",
            ),
            (
                "CONNECT http://h:1 HTTP/1.1\r\n",
                "CONNECT http://h:1 HTTP/1.1\r\n",
            ),
            ("GET http://h/a HTTP/1.1", "GET http://h/a HTTP/1.1"),
            ("GET /a HTTP/1.1", "GET /a HTTP/1.1"),
            (
                "GET\n/http://h/a HTTP/1.1\r\n",
                "GET\n/http://h/a HTTP/1.1\r\n",
            ),
            ("GET ftp://h/a HTTP/1.1\r\n", "GET ftp://h/a HTTP/1.1\r\n"),
        ] {
            assert_eq!(rewritten(line), expected, "{line:?}");
        }
    }

    #[test]
    fn only_chunked_heads_without_expect_continue_are_held() {
        assert!(has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST /transfer-encoding:chunked HTTP/1.1\r\n\r\n"
        ));
        // The name and the value must both match, on the same line.
        assert!(!has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, deflate\r\nX-Note: chunked\r\n\r\n"
        ));
        assert!(has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: something-else\r\n\
              X-Note: 100-continue\r\n\r\n"
        ));
        // Found however it is spelled, at the very start of a value or the end of one.
        assert!(has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding:cHuNkEd\r\n\r\n"
        ));
        assert!(has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n"
        ));
        assert!(!has_chunked_body_to_check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunke\r\nKeep-Alive: k\r\n\r\n"
        ));
        let mut last_two = [0; 2];
        assert_eq!(
            head_end_in(&mut last_two, b"GET / HTTP/1.1\r\n\r\nbody"),
            Some(18)
        );
    }
}
