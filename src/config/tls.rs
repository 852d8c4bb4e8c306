//! TLS material named by the config files: the listener's certificates (`gateway.tls`) and a
//! service's upstream CA and client certificate. Each file is read, parsed and checked here,
//! once, so a missing, unreadable, mismatched or expired one is a config error that names the
//! file, at start, with `-t`, and at a reload (which then keeps what is in use).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::asn1::Asn1Time;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate, then any intermediates.
    pub cert: PathBuf,
    /// The private key of the first certificate.
    pub key: PathBuf,
}

/// A certificate the TLS listener serves: its chain, key and the names it is valid for.
pub struct ServedCertificate {
    /// Where it was read from.
    pub files: CertificateFiles,
    /// The leaf certificate first, then its intermediates.
    pub chain: Vec<X509>,
    /// The leaf's private key.
    pub key: PKey<Private>,
    /// DNS names (subject alternative names, else the common name), lower-case; wildcards as
    /// written (`*.example.com`).
    pub names: Vec<String>,
}

impl fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("files", &self.files)
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServedCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.files == other.files && self.names == other.names
    }
}

/// The TLS listener: where it listens and what it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsListener {
    /// The listening address.
    pub listen: std::net::SocketAddr,
    /// The certificates; the first is served to clients that send no SNI or a name none has.
    pub certificates: Vec<Arc<ServedCertificate>>,
}

/// How a service talks TLS to its `https://` backends.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Roots to verify backend certificates against, instead of the system's (`tls_ca_file`).
    pub ca: Option<Arc<Box<[X509]>>>,
    /// Where `ca` came from.
    pub ca_file: Option<PathBuf>,
    /// Whether backend certificates are verified, chain and name (`tls_verify`, default on).
    pub verify: bool,
    /// A client certificate for backends that require one (`tls_client_cert`/`_key`).
    pub client: Option<Arc<CertKey>>,
    /// Where `client` came from.
    pub client_files: Option<CertificateFiles>,
    /// What the connection's trust rests on, by content: the roots, the verification flag
    /// and the client certificate. Two services' connections to one backend may share a pool
    /// only when this is the same (see [`UpstreamTls::configure`]), and they share a breaker
    /// only then.
    pub(crate) trust: u64,
}

impl UpstreamTls {
    /// Settings as read: `trust` is computed from them.
    pub(crate) fn new(
        ca: Option<(PathBuf, Box<[X509]>)>,
        verify: bool,
        client: Option<(CertificateFiles, CertKey)>,
    ) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        verify.hash(&mut hasher);
        let roots = ca.as_ref().map(|(_, roots)| &roots[..]);
        let chain = client.as_ref().map(|(_, key)| {
            std::iter::once(key.leaf())
                .chain(key.intermediates())
                .collect::<Vec<_>>()
        });
        for certificates in [roots.map(|r| r.iter().collect()), chain] {
            // The marker keeps "no roots, a client certificate" apart from the reverse.
            certificates.is_some().hash(&mut hasher);
            for cert in certificates.into_iter().flatten() {
                // A certificate's DER encoding is the certificate; it is hashed once, here.
                cert.to_der().unwrap_or_default().hash(&mut hasher);
            }
        }
        let (ca_file, ca) = ca.map(|(file, roots)| (file, Arc::new(roots))).unzip();
        let (client_files, client) = client.map(|(files, key)| (files, Arc::new(key))).unzip();
        Self {
            ca,
            ca_file,
            verify,
            client,
            client_files,
            trust: hasher.finish(),
        }
    }

    /// Sets `peer` up to speak TLS as this service does, and keys its pooled connections by
    /// this service's trust. Pingora's pool key (`HttpPeer`'s `Hash`) covers the address,
    /// SNI, the verify flags and the client certificate's serial, but not the CA roots, and a
    /// serial is unique only per issuer: without `group_key`, a connection verified against
    /// one service's CA would be handed to a service whose CA refuses that backend.
    pub(crate) fn configure(&self, peer: &mut HttpPeer) {
        peer.options.verify_cert = self.verify;
        peer.options.verify_hostname = self.verify;
        peer.options.ca.clone_from(&self.ca);
        peer.client_cert_key.clone_from(&self.client);
        peer.group_key = self.trust;
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_file", &self.ca_file)
            .field("verify", &self.verify)
            .field("client_files", &self.client_files)
            .finish()
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.client_files == other.client_files
            && self.trust == other.trust
    }
}

/// Reads and checks a certificate chain and its key: both parse, the key is the leaf's, and the
/// leaf is valid now. Errors name the file at fault.
pub(crate) fn load_certificate(files: &CertificateFiles) -> Result<ServedCertificate, String> {
    let chain = read_chain(&files.cert)?;
    let key = read_key(&files.key)?;
    let leaf = &chain[0];
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(format!(
            "{}: the key does not belong to the certificate in {}",
            files.key.display(),
            files.cert.display()
        ));
    }
    check_validity(&files.cert, leaf)?;
    let names = names_of(leaf);
    Ok(ServedCertificate {
        files: files.clone(),
        chain,
        key,
        names,
    })
}

/// Reads a CA bundle (one or more PEM certificates).
pub(crate) fn load_ca(file: &Path) -> Result<Box<[X509]>, String> {
    Ok(read_chain(file)?.into_boxed_slice())
}

/// Reads a client certificate chain and key, checked as [`load_certificate`] checks.
pub(crate) fn load_client_certificate(files: &CertificateFiles) -> Result<CertKey, String> {
    let served = load_certificate(files)?;
    Ok(CertKey::new(served.chain, served.key))
}

fn read_chain(file: &Path) -> Result<Vec<X509>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    let chain = X509::stack_from_pem(&pem)
        .map_err(|e| format!("{}: not a PEM certificate: {e}", file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: holds no PEM certificate", file.display()));
    }
    Ok(chain)
}

fn read_key(file: &Path) -> Result<PKey<Private>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("{}: cannot read: {e}", file.display()))?;
    PKey::private_key_from_pem(&pem)
        .map_err(|e| format!("{}: not a PEM private key: {e}", file.display()))
}

fn check_validity(file: &Path, cert: &X509) -> Result<(), String> {
    let now = Asn1Time::days_from_now(0).map_err(|e| e.to_string())?;
    if cert.not_after() < now {
        return Err(format!(
            "{}: the certificate expired on {}",
            file.display(),
            cert.not_after()
        ));
    }
    if cert.not_before() > now {
        return Err(format!(
            "{}: the certificate is not valid before {}",
            file.display(),
            cert.not_before()
        ));
    }
    Ok(())
}

/// The DNS names a certificate is for: its subject alternative names, else its common name.
fn names_of(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .into_iter()
        .flatten()
        .filter_map(|name| name.dnsname().map(str::to_ascii_lowercase))
        .collect();
    if names.is_empty() {
        names.extend(
            cert.subject_name()
                .entries_by_nid(Nid::COMMONNAME)
                .filter_map(|entry| entry.data().to_string().ok())
                .map(|name| name.to_ascii_lowercase()),
        );
    }
    names
}
