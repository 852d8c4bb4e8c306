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

use crate::*;
use bytes::{BufMut, Bytes};
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// The name as a header map keys it, with the case it is written in.
    ///
    /// The default parses the cased name into a [`HeaderName`]; a [`HeaderName`] given as the
    /// name is already parsed and skips that (a parse allocates for every non-standard name).
    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)>
    where
        Self: Sized,
    {
        let case_header_name = self.into_case_header_name();
        let header_name = header_name_from_slice(case_header_name.as_slice())?;
        Ok((header_name, case_header_name))
    }

    /// The name alone, for a header that keeps no spelling of its names: none is made.
    fn into_header_name(self) -> Result<HeaderName>
    where
        Self: Sized,
    {
        Ok(self.into_header_names()?.0)
    }
}

/// A name from its bytes as they came.
fn header_name_from_slice(name: &[u8]) -> Result<HeaderName> {
    HeaderName::from_bytes(name).or_err(InvalidHTTPHeader, "invalid header name")
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }

    fn into_header_name(self) -> Result<HeaderName> {
        header_name_from_slice(&self.0)
    }
}

/// A name borrowed from a parsed head: a header that keeps the spelling of its names copies
/// it; one that keeps none only parses it.
impl IntoCaseHeaderName for &[u8] {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName::from_slice(self)
    }

    fn into_header_name(self) -> Result<HeaderName> {
        header_name_from_slice(self)
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        // A lowercase name (as most code writes one) is already the map's key: `from_static`
        // refers to it, where a parse would copy it into an allocation of its own.
        let header_name = if is_lowercase_token(self) {
            HeaderName::from_static(self)
        } else {
            HeaderName::from_bytes(self.as_bytes())
                .or_err(InvalidHTTPHeader, "invalid header name")?
        };
        Ok((header_name, CaseHeaderName(self.into())))
    }
}

/// Whether `name` is a header name as `HeaderName::from_static` takes it: lowercase token
/// characters only (RFC 9110 section 5.6.2), and not too long to be one.
fn is_lowercase_token(name: &str) -> bool {
    (1..=256).contains(&name.len())
        && name.bytes().all(|b| {
            matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'!' | b'#' | b'$' | b'%'
                | b'&' | b'\'' | b'*' | b'+' | b'^' | b'`' | b'|' | b'~')
        })
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        let case_header_name = CaseHeaderName(titled_header_name(&self));
        Ok((self, case_header_name))
    }

    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self)
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        self.clone().into_header_names()
    }

    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self.clone())
    }
}

/// A header name fixed when the program is built, checked and parsed once, as a `static`: to
/// insert it costs a clone of each of its two forms, no parse and no allocation. A `&'static str`
/// is checked and looked up among the standard names on every insert, and a non-standard
/// [`HeaderName`] has a copy of its text made for the case map.
///
/// The name is written as it is given, which is lowercase; its title-case spelling (as
/// [`put_titled_header_name`] writes a name) is made once too, for
/// [`crate::RequestHeader::append_unmapped_header`].
#[derive(Debug, Clone)]
pub struct StaticHeaderName {
    name: HeaderName,
    text: &'static str,
    /// The title-case spelling, in `titled[..titled_len]`; none (0) for a name longer than
    /// the room.
    titled: [u8; TITLED_ROOM],
    titled_len: usize,
}

/// Room for a static name's title-case spelling: every standard name fits.
const TITLED_ROOM: usize = 48;

impl StaticHeaderName {
    /// The name `text`. Like [`HeaderName::from_static`], this panics (at compile time, in a
    /// `static`) unless `text` is a valid lowercase header name.
    pub const fn new(text: &'static str) -> Self {
        let bytes = text.as_bytes();
        let mut titled = [0u8; TITLED_ROOM];
        let mut titled_len = 0;
        if bytes.len() <= TITLED_ROOM {
            let mut before = b'-';
            while titled_len < bytes.len() {
                let byte = bytes[titled_len];
                titled[titled_len] = if before == b'-' {
                    byte.to_ascii_uppercase()
                } else {
                    byte
                };
                before = byte;
                titled_len += 1;
            }
        }
        StaticHeaderName {
            name: HeaderName::from_static(text),
            text,
            titled,
            titled_len,
        }
    }

    /// The name as a header map keys it, to look it up or remove it.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// The name as it is given, lowercase.
    pub(crate) fn text(&self) -> &'static str {
        self.text
    }

    /// The name in title case, as [`put_titled_header_name`] writes it (`None` if it is too
    /// long to have been made when the program was built).
    pub(crate) fn titled(&self) -> Option<&[u8]> {
        (self.titled_len > 0).then(|| &self.titled[..self.titled_len])
    }
}

impl IntoCaseHeaderName for &StaticHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(Bytes::from_static(self.text.as_bytes()))
    }

    fn into_header_names(self) -> Result<(HeaderName, CaseHeaderName)> {
        Ok((self.name.clone(), self.into_case_header_name()))
    }

    fn into_header_name(self) -> Result<HeaderName> {
        Ok(self.name.clone())
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

/// Writes `header_name` to `buf` in title case, the way a header kept without its case goes on
/// the HTTP/1 wire: the standard spelling of a name `titled_header_name_str` knows, else the
/// first letter and each letter after a `-` in upper case (`x-request-id` as `X-Request-Id`), as
/// Go's `CanonicalMIMEHeaderKey` and most HTTP/1 software write names.
pub(crate) fn put_titled_header_name(header_name: &HeaderName, buf: &mut impl BufMut) {
    if let Some(titled) = titled_header_name_str(header_name) {
        buf.put_slice(titled.as_bytes());
        return;
    }
    // A `HeaderName` is lowercase already; it is titled through a small buffer, a piece at a
    // time, rather than a byte at a time into `buf`. Each byte is titled from itself and the
    // byte before it, with nothing carried from one byte's result to the next, so the compiler
    // can do many at once.
    let title = |before: u8, byte: u8| {
        if before == b'-' {
            byte.to_ascii_uppercase()
        } else {
            byte
        }
    };
    let mut before = b'-';
    let mut titled = [0u8; 32];
    for piece in header_name.as_str().as_bytes().chunks(titled.len()) {
        let out = &mut titled[..piece.len()];
        out[0] = title(before, piece[0]);
        for (out, pair) in out[1..].iter_mut().zip(piece.windows(2)) {
            *out = title(pair[0], pair[1]);
        }
        before = piece[piece.len() - 1];
        buf.put_slice(out);
    }
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_names_title_case_is_the_one_written_for_a_header_name() {
        static NAMES: [StaticHeaderName; 5] = [
            StaticHeaderName::new("x-request-id"),
            StaticHeaderName::new("forwarded"),
            StaticHeaderName::new("content-length"),
            StaticHeaderName::new("x--odd-"),
            StaticHeaderName::new("access-control-allow-credentials"),
        ];
        for name in &NAMES {
            let mut written = Vec::new();
            put_titled_header_name(name.name(), &mut written);
            assert_eq!(name.titled(), Some(&written[..]), "{}", name.text());
        }
        static LONG: StaticHeaderName =
            StaticHeaderName::new("x-a-name-longer-than-the-room-for-its-title-case-spelling");
        assert_eq!(LONG.titled(), None);
    }

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }

    #[test]
    fn test_into_header_names() {
        let (name, case) = "X-FoO".into_header_names().unwrap();
        assert_eq!((name.as_str(), case.as_slice()), ("x-foo", &b"X-FoO"[..]));
        let (name, case) = "x-foo".into_header_names().unwrap();
        assert_eq!((name.as_str(), case.as_slice()), ("x-foo", &b"x-foo"[..]));
        let (name, _) = "content-length".into_header_names().unwrap();
        assert_eq!(name, header::CONTENT_LENGTH);
        for name in ["", "x foo", "x:foo", "x-f\u{e9}e", &"x".repeat(257)] {
            let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
            assert_eq!(
                leaked.into_header_names().map(|(name, _)| name).ok(),
                HeaderName::from_bytes(name.as_bytes()).ok(),
                "{name:?}"
            );
        }
        let (name, case) = header::SERVER.into_header_names().unwrap();
        assert_eq!((name, case.as_slice()), (header::SERVER, &b"Server"[..]));
        let custom = HeaderName::from_static("x-foo");
        let (name, case) = (&custom).into_header_names().unwrap();
        assert_eq!((name, case.as_slice()), (custom, &b"x-foo"[..]));
        assert!("bad name".into_header_names().is_err());
    }

    #[test]
    fn test_static_header_name() {
        static X_FOO: StaticHeaderName = StaticHeaderName::new("x-foo");
        let (name, case) = (&X_FOO).into_header_names().unwrap();
        assert_eq!((name.as_str(), case.as_slice()), ("x-foo", &b"x-foo"[..]));
        assert_eq!(X_FOO.name(), &HeaderName::from_static("x-foo"));
        static HOST: StaticHeaderName = StaticHeaderName::new("host");
        assert_eq!(HOST.name(), &header::HOST);
    }
}
