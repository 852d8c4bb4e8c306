//! Test certificates, made when the tests run (no private key is committed): a CA, and leaf
//! certificates it signs for given names, valid now or expired, written as PEM files; and a TLS
//! client that reports the certificate the server presented.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode, SslVersion};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From yesterday to tomorrow.
    Now,
    /// Two days ago to yesterday.
    Expired,
}

/// A certificate authority made for one test.
pub struct TestCa {
    cert: X509,
    key: PKey<Private>,
}

fn new_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn serial() -> Asn1Integer {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed) + std::process::id() * 1000;
    BigNum::from_u32(n).unwrap().to_asn1_integer().unwrap()
}

fn builder(common_name: &str, key: &PKey<Private>, validity: Validity) -> X509Builder {
    builder_numbered(common_name, key, validity, &serial())
}

fn builder_numbered(
    common_name: &str,
    key: &PKey<Private>,
    validity: Validity,
    serial: &Asn1Integer,
) -> X509Builder {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    builder.set_serial_number(serial).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_pubkey(key).unwrap();
    let (from, to) = match validity {
        Validity::Now => (-1, 1),
        Validity::Expired => (-2, -1),
    };
    let day = 24 * 3600;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    builder
        .set_not_before(&Asn1Time::from_unix(now + from * day).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::from_unix(now + to * day).unwrap())
        .unwrap();
    builder
}

fn pem(cert: &X509, key: &PKey<Private>) -> (Vec<u8>, Vec<u8>) {
    (
        cert.to_pem().unwrap(),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let key = new_key();
        let mut builder = builder(name, &key, Validity::Now);
        builder
            .set_issuer_name(builder_subject(name).as_ref())
            .unwrap();
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        TestCa {
            cert: builder.build(),
            key,
        }
    }

    /// Writes the CA certificate to `dir/<stem>.crt`.
    pub fn write(&self, dir: &Path, stem: &str) -> PathBuf {
        let path = dir.join(format!("{stem}.crt"));
        std::fs::write(&path, self.cert.to_pem().unwrap()).unwrap();
        path
    }

    /// A certificate for `names` (DNS names, or IP addresses), signed by this CA, written to
    /// `dir/<stem>.crt` and `dir/<stem>.key`.
    pub fn issue(&self, dir: &Path, stem: &str, names: &[&str], validity: Validity) -> CertFiles {
        self.issue_numbered(dir, stem, names, validity, &serial())
    }

    /// [`TestCa::issue`] with the serial number `number`: serials are unique only per issuer,
    /// so two CAs may well issue the same one.
    pub fn issue_with_serial(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        number: u32,
    ) -> CertFiles {
        let serial = BigNum::from_u32(number).unwrap().to_asn1_integer().unwrap();
        self.issue_numbered(dir, stem, names, Validity::Now, &serial)
    }

    /// [`TestCa::issue`] with the serial number `serial` (serials are only unique per issuer).
    fn issue_numbered(
        &self,
        dir: &Path,
        stem: &str,
        names: &[&str],
        validity: Validity,
        serial: &Asn1Integer,
    ) -> CertFiles {
        let key = new_key();
        let mut builder = builder_numbered(names[0], &key, validity, serial);
        builder.set_issuer_name(self.cert.subject_name()).unwrap();
        let mut san = SubjectAlternativeName::new();
        for name in names {
            if name.parse::<std::net::IpAddr>().is_ok() {
                san.ip(name);
            } else {
                san.dns(name);
            }
        }
        let san = san
            .build(&builder.x509v3_context(Some(&self.cert), None))
            .unwrap();
        builder.append_extension(san).unwrap();
        builder.sign(&self.key, MessageDigest::sha256()).unwrap();
        let cert = builder.build();
        let (cert_pem, key_pem) = pem(&cert, &key);
        let files = CertFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert_pem).unwrap();
        std::fs::write(&files.key, key_pem).unwrap();
        files
    }
}

fn builder_subject(name: &str) -> openssl::x509::X509Name {
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_nid(Nid::COMMONNAME, name).unwrap();
    subject.build()
}

/// A certificate and key as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    pub fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    pub fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

/// A TLS connection to `port` on loopback that sends `sni` (none when `None`), trusts nothing
/// (it only looks), and speaks at most `max_version`.
pub fn tls_connect(
    port: u16,
    sni: Option<&str>,
    max_version: SslVersion,
) -> Result<SslStream<TcpStream>, String> {
    tls_connect_offering(port, sni, max_version, &[])
}

/// [`tls_connect`], offering the ALPN protocols in `alpn` (wire format), if any.
pub fn tls_connect_offering(
    port: u16,
    sni: Option<&str>,
    max_version: SslVersion,
    alpn: &[u8],
) -> Result<SslStream<TcpStream>, String> {
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    if !alpn.is_empty() {
        connector.set_alpn_protos(alpn).unwrap();
    }
    connector.set_verify(SslVerifyMode::NONE);
    connector.set_max_proto_version(Some(max_version)).unwrap();
    // Let the client offer old versions at all, so that the server is the one refusing them.
    connector.set_security_level(0);
    connector.set_min_proto_version(None).unwrap();
    connector.set_cipher_list("DEFAULT@SECLEVEL=0").unwrap();
    let connector = connector.build();
    let mut config = connector.configure().unwrap();
    config.set_verify_hostname(false);
    config.set_use_server_name_indication(sni.is_some());
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(super::DEADLINE)).unwrap();
    config
        .connect(sni.unwrap_or("ignored"), stream)
        .map_err(|e| e.to_string())
}

/// The common name of the certificate the server presented on `stream`.
pub fn presented_name(stream: &SslStream<TcpStream>) -> String {
    let cert = stream
        .ssl()
        .peer_certificate()
        .expect("a server certificate");
    let name = cert
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .unwrap()
        .data()
        .to_string()
        .unwrap();
    name
}

/// Sends one keep-alive `GET path` on `stream` and returns the status.
pub fn get_on(stream: &mut SslStream<TcpStream>, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: gw\r\n\r\n").as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head.split(' ').nth(1).unwrap().parse().unwrap()
}
