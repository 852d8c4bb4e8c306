//! The certificates the TLS listener serves: one set, swapped whole by a reload, and the pick
//! of one by the name a client asks for (SNI).
//!
//! A name picks the first certificate with that exact name, else the first whose wildcard
//! (`*.example.com`) covers it; a client that sends no name, or one no certificate has, gets
//! the first certificate. The set only changes at a reload, after every file of the new set
//! has loaded: a handshake always sees a whole set, and connections already open keep the
//! certificate they were given.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::ServedCertificate;

/// The served certificates, as the handshakes see them.
#[derive(Debug)]
pub(crate) struct CertificateStore {
    current: ArcSwap<Vec<Arc<ServedCertificate>>>,
}

impl CertificateStore {
    /// A store serving `certificates` (at least one).
    pub fn new(certificates: Vec<Arc<ServedCertificate>>) -> Self {
        assert!(
            !certificates.is_empty(),
            "a TLS listener needs a certificate"
        );
        Self {
            current: ArcSwap::from_pointee(certificates),
        }
    }

    /// Serves `certificates` from the next handshake on.
    pub fn replace(&self, certificates: Vec<Arc<ServedCertificate>>) {
        if !certificates.is_empty() {
            self.current.store(Arc::new(certificates));
        }
    }

    /// The certificate for a client that asked for `server_name` (lower-case), if any.
    pub fn pick(&self, server_name: Option<&str>) -> Arc<ServedCertificate> {
        let certificates = self.current.load();
        let index = server_name
            .and_then(|name| pick_index(certificates.iter().map(|c| c.names.as_slice()), name))
            .unwrap_or(0);
        Arc::clone(&certificates[index])
    }
}

/// Which of the certificates (given by their names) serves `name`: an exact match first, then
/// a wildcard one.
fn pick_index<'a>(
    mut names: impl Clone + Iterator<Item = &'a [String]>,
    name: &str,
) -> Option<usize> {
    names
        .clone()
        .position(|names| names.iter().any(|n| n == name))
        .or_else(|| names.position(|names| names.iter().any(|n| wildcard_covers(n, name))))
}

/// Whether `pattern` is a wildcard (`*.example.com`) that covers `name`: exactly one label in
/// place of the `*`.
fn wildcard_covers(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    name.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter()
            .map(|names| names.iter().map(|n| (*n).to_owned()).collect())
            .collect()
    }

    #[test]
    fn exact_names_win_over_wildcards_and_the_first_is_the_default() {
        let certs = names(&[
            &["a.test"],
            &["*.example.com"],
            &["www.example.com", "b.test"],
        ]);
        let pick = |name| pick_index(certs.iter().map(Vec::as_slice), name);
        assert_eq!(pick("a.test"), Some(0));
        assert_eq!(pick("www.example.com"), Some(2));
        assert_eq!(pick("api.example.com"), Some(1));
        assert_eq!(pick("b.test"), Some(2));
        assert_eq!(pick("unknown.test"), None);
    }

    #[test]
    fn a_wildcard_covers_exactly_one_label() {
        assert!(wildcard_covers("*.example.com", "api.example.com"));
        assert!(!wildcard_covers("*.example.com", "example.com"));
        assert!(!wildcard_covers("*.example.com", "a.b.example.com"));
        assert!(!wildcard_covers("*.example.com", ".example.com"));
        assert!(!wildcard_covers("example.com", "example.com"));
    }
}
