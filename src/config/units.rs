//! Durations and sizes as the config files write them: `250ms`, `10s`, `2m`; `512`, `64KiB`,
//! `10MiB`.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration written with a unit: `250ms`, `10s`, `2m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConfigDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like \"250ms\", \"10s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigDuration, E> {
                parse_duration(text).map(ConfigDuration).ok_or_else(|| {
                    E::custom(format!(
                        "\"{text}\" is not a duration like \"250ms\", \"10s\" or \"2m\""
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!(
                    "`{n}` has no unit; write \"{n}s\" or \"{n}ms\""
                )))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!("`{n}` is not a duration with a unit")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!("`{n}` is not a duration with a unit")))
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// A size in bytes: a whole number, or one with a unit: `512KiB`, `10MiB`, `1GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ConfigSize(pub(super) u64);

impl<'de> Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ConfigSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size in bytes, like 65536, \"64KiB\" or \"10MiB\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<ConfigSize, E> {
                parse_size(text).map(ConfigSize).ok_or_else(|| {
                    E::custom(format!(
                        "\"{text}\" is not a size like 65536, \"64KiB\" or \"10MiB\""
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ConfigSize, E> {
                Ok(ConfigSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ConfigSize, E> {
                Err(E::custom(format!("`{n}` is not a size in bytes")))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<ConfigSize, E> {
                Err(E::custom(format!("`{n}` is not a whole number of bytes")))
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// Parses a whole number, optionally followed by `KiB`, `MiB` or `GiB`.
pub(super) fn parse_size(text: &str) -> Option<u64> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// Parses a whole number followed by `ms`, `s` or `m`.
pub(super) fn parse_duration(text: &str) -> Option<Duration> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(digits_end);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_or_binary_units() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(64 * 1024));
        assert_eq!(parse_size("10MiB"), Some(10 << 20));
        assert_eq!(parse_size("1GiB"), Some(1 << 30));
        for bad in [
            "",
            "MiB",
            "1.5MiB",
            "10 MiB",
            "10MB",
            "-1",
            "99999999999GiB",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        for bad in ["", "10", "s", "1.5s", "-1s", "10 s", "10h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
