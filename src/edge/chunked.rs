//! A strict, incremental check of HTTP/1.1 chunked framing (RFC 9112 §7.1), fed a request
//! body as it arrives, so that the connection guard can refuse a malformed chunked body before
//! any of it, or its head, reaches a backend.
//!
//! Strict where parsers disagree: every line ends with CRLF (a bare LF is invalid), a chunk
//! size is 1 to 16 hex digits with no whitespace, and a chunk's data is followed by CRLF.
//! Extensions and trailer fields are skipped, not interpreted.

/// What the body fed so far comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Valid so far; more bytes are needed.
    Incomplete,
    /// The body is complete and valid; it ended this many bytes into the last input.
    Complete(usize),
    /// The framing is invalid, for this reason.
    Invalid(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// In a chunk-size line, before its first digit or among its digits.
    #[default]
    Size,
    /// In a chunk extension, up to the CR.
    Extension,
    /// After the size line's CR.
    SizeLf,
    /// In a chunk's data.
    Data,
    /// After a chunk's data: CR expected.
    DataCr,
    /// After that CR: LF expected.
    DataLf,
    /// At the start of a trailer line (or of the final blank line).
    TrailerStart,
    /// In a trailer line, up to the CR.
    Trailer,
    /// After a trailer line's CR.
    TrailerLf,
    /// After the final blank line's CR.
    FinalLf,
}

/// The checker's state between inputs. Feed it nothing more once it has answered
/// [`Framing::Complete`] or [`Framing::Invalid`].
#[derive(Debug, Clone, Default)]
pub struct ChunkedCheck {
    state: State,
    /// The chunk size read so far, or the data left of the current chunk.
    size: u64,
    digits: u8,
}

impl ChunkedCheck {
    /// Checks the next `bytes` of the body.
    pub fn feed(&mut self, bytes: &[u8]) -> Framing {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.state = match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == 16 {
                            return Framing::Invalid("a chunk size has more than 16 digits");
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size << 4 | u64::from(digit);
                        self.digits += 1;
                        State::Size
                    }
                    b';' if self.digits > 0 => State::Extension,
                    b'\r' if self.digits > 0 => State::SizeLf,
                    _ => return Framing::Invalid("a chunk size is not a hex number"),
                },
                State::Extension => match b {
                    b'\r' => State::SizeLf,
                    b'\n' => return Framing::Invalid("a chunk line ends without CR"),
                    _ => State::Extension,
                },
                State::SizeLf => match b {
                    b'\n' if self.size == 0 => State::TrailerStart,
                    b'\n' => State::Data,
                    _ => return Framing::Invalid("a chunk size line ends without LF"),
                },
                State::Data => {
                    let take = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len() - i);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => State::DataLf,
                    _ => return Framing::Invalid("a chunk's data is longer than its size"),
                },
                State::DataLf => match b {
                    b'\n' => {
                        self.digits = 0;
                        State::Size
                    }
                    _ => return Framing::Invalid("a chunk's data ends without CRLF"),
                },
                State::TrailerStart => match b {
                    b'\r' => State::FinalLf,
                    b'\n' => return Framing::Invalid("a trailer line ends without CR"),
                    _ => State::Trailer,
                },
                State::Trailer => match b {
                    b'\r' => State::TrailerLf,
                    b'\n' => return Framing::Invalid("a trailer line ends without CR"),
                    _ => State::Trailer,
                },
                State::TrailerLf => match b {
                    b'\n' => State::TrailerStart,
                    _ => return Framing::Invalid("a trailer line ends without LF"),
                },
                State::FinalLf => match b {
                    b'\n' => return Framing::Complete(i + 1),
                    _ => return Framing::Invalid("the chunked body ends without CRLF"),
                },
            };
            i += 1;
        }
        Framing::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &[u8]) -> Framing {
        ChunkedCheck::default().feed(body)
    }

    #[test]
    fn a_size_line_needs_a_digit_before_its_extension_or_end() {
        assert!(matches!(check(b";ext\r\n0\r\n\r\n"), Framing::Invalid(_)));
        assert!(matches!(check(b"\r\n0\r\n\r\n"), Framing::Invalid(_)));
    }

    #[test]
    fn valid_bodies_complete_where_they_end() {
        assert_eq!(check(b"0\r\n\r\n"), Framing::Complete(5));
        assert_eq!(
            check(b"4\r\nabcd\r\n0\r\n\r\nGET /next"),
            Framing::Complete(14)
        );
        assert_eq!(
            check(b"A;ext=1\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"),
            Framing::Complete(40)
        );
        assert_eq!(check(b"4\r\nab"), Framing::Incomplete);
    }

    #[test]
    fn any_split_of_a_valid_body_gives_the_same_answer() {
        let body = b"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\n";
        for split in 0..body.len() {
            let mut check = ChunkedCheck::default();
            let first = check.feed(&body[..split]);
            assert_eq!(first, Framing::Incomplete, "split at {split}");
            assert_eq!(
                check.feed(&body[split..]),
                Framing::Complete(body.len() - split),
                "split at {split}"
            );
        }
    }

    #[test]
    fn malformed_framing_is_invalid() {
        for body in [
            &b"zz\r\nabcd\r\n0\r\n\r\n"[..],
            b"\r\n",
            b" 4\r\nabcd\r\n0\r\n\r\n",
            b"4 \r\nabcd\r\n0\r\n\r\n",
            b"-1\r\n",
            b"4\nabcd\r\n0\r\n\r\n",
            b"4;x\nabcd\r\n",
            b"4\r\nabcdef\r\n0\r\n\r\n",
            b"4\r\nabcd\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nT: v\n\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(
                matches!(check(body), Framing::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
