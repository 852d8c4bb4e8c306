//! The `gateway:` section of the Pingora conf file, and the services file it names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::services::{parse_services_with, RawOverrides};
use super::tls::load_certificate;
use super::units::{ConfigDuration, ConfigSize};
use super::*;
use crate::resolver::{Resolver, SystemResolver};

/// Loads the `gateway:` section of the Pingora conf file at `conf_file` and the services file
/// it names (relative paths are relative to the conf file's folder).
pub fn load(conf_file: &Path) -> Result<GatewayConfig, ConfigError> {
    load_with(conf_file, &SystemResolver)
}

/// [`load`] with hosts resolved by `resolver`.
pub fn load_with(conf_file: &Path, resolver: &dyn Resolver) -> Result<GatewayConfig, ConfigError> {
    let text = read(conf_file)?;
    let conf: RawConfFile = serde_yaml::from_str(&text)
        .map_err(|e| ConfigError::new(conf_file, None, format!("invalid YAML: {e}")))?;
    let section = conf.gateway.unwrap_or_default();

    let listen_text = section.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = listen_text.parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            conf_file,
            None,
            format!("gateway.listen \"{listen_text}\" is not an address like 0.0.0.0:8080"),
        )
    })?;

    let admin_text = section
        .admin_listen
        .as_deref()
        .unwrap_or(DEFAULT_ADMIN_LISTEN);
    let admin_listen = match admin_text {
        "off" => None,
        text => Some(text.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new(
                conf_file,
                None,
                format!(
                    "gateway.admin_listen \"{text}\" is not an address like 127.0.0.1:9091 \
                     (or \"off\")"
                ),
            )
        })?),
    };
    if admin_listen == Some(listen) {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.admin_listen must differ from gateway.listen: admin paths are never \
             served on the proxy port",
        ));
    }

    let admin_token = std::env::var(ADMIN_TOKEN_ENV)
        .ok()
        .or(section.admin_token)
        .filter(|token| !token.is_empty());

    let log_format = match section.log_format.as_deref() {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(other) => {
            return Err(ConfigError::new(
                conf_file,
                None,
                format!("gateway.log_format \"{other}\" is neither \"text\" nor \"json\""),
            ))
        }
    };

    let access_log = match section.access_log.as_deref() {
        None | Some("off") => None,
        Some("text") => Some(LogFormat::Text),
        Some("json") => Some(LogFormat::Json),
        Some(other) => {
            return Err(ConfigError::new(
                conf_file,
                None,
                format!("gateway.access_log \"{other}\" is none of \"off\", \"text\", \"json\""),
            ))
        }
    };

    let header_limits = HeaderLimits {
        max_count: section.max_header_count.unwrap_or(DEFAULT_MAX_HEADER_COUNT),
        max_bytes: section
            .max_header_size
            .map_or(Ok(DEFAULT_MAX_HEADER_BYTES), |ConfigSize(n)| {
                usize::try_from(n)
            })
            .unwrap_or(usize::MAX),
    };
    if header_limits.max_count == 0 || header_limits.max_bytes < 64 {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.max_header_count must be at least 1 and gateway.max_header_size at least \
             64 bytes",
        ));
    }

    let defaults_limits = ConnectionLimits::default();
    let connection_limits = ConnectionLimits {
        max_connections: section
            .max_connections
            .unwrap_or(defaults_limits.max_connections),
        request_header_timeout: section
            .request_header_timeout
            .map_or(defaults_limits.request_header_timeout, |d| d.0),
    };
    if connection_limits.max_connections == 0 || connection_limits.request_header_timeout.is_zero()
    {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.max_connections and gateway.request_header_timeout must be more than zero",
        ));
    }

    let keepalive_timeout = section
        .keepalive_timeout
        .map_or(DEFAULT_KEEPALIVE_TIMEOUT, |d| d.0);
    // Pingora counts it in whole seconds, and takes 0 for "forever".
    if keepalive_timeout.subsec_nanos() != 0 || keepalive_timeout.is_zero() {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.keepalive_timeout must be whole seconds, at least 1s",
        ));
    }

    let client_write_timeout = section
        .client_write_timeout
        .map_or(DEFAULT_CLIENT_WRITE_TIMEOUT, |d| d.0);
    if client_write_timeout.is_zero() {
        return Err(ConfigError::new(
            conf_file,
            None,
            "gateway.client_write_timeout must be more than zero",
        ));
    }

    let defaults = section
        .defaults
        .unwrap_or_default()
        .apply(ServiceDefaults::default())
        .map_err(|message| {
            ConfigError::new(conf_file, None, format!("gateway.defaults: {message}"))
        })?;

    let services_file = conf_file.parent().unwrap_or(Path::new("")).join(
        section
            .services
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_SERVICES_FILE)),
    );
    let services =
        parse_services_with(&services_file, &read(&services_file)?, &defaults, resolver)?;
    let tls = section
        .tls
        .map(|raw| tls_listener(conf_file, raw, listen, admin_listen))
        .transpose()?;

    Ok(GatewayConfig {
        listen,
        admin_listen,
        admin_token,
        status_log: section.status_log.unwrap_or(true),
        log_format,
        access_log,
        services_file,
        trust_forwarded_for: section.trust_forwarded_for.unwrap_or(false),
        underscores_in_headers: section.underscores_in_headers.unwrap_or(false),
        preserve_header_case: section.preserve_header_case.unwrap_or(false),
        h2c: section.h2c.unwrap_or(true),
        keepalive_timeout,
        client_write_timeout,
        header_limits,
        connection_limits,
        tls,
        services,
    })
}

/// The TLS listener of `gateway.tls`, its certificates read and checked; their paths are
/// relative to the conf file's folder.
fn tls_listener(
    conf_file: &Path,
    raw: RawTls,
    listen: SocketAddr,
    admin_listen: Option<SocketAddr>,
) -> Result<TlsListener, ConfigError> {
    let error = |message: String| ConfigError::new(conf_file, None, message);
    let tls_listen = raw.listen.parse::<SocketAddr>().map_err(|_| {
        error(format!(
            "gateway.tls.listen \"{}\" is not an address like 0.0.0.0:8443",
            raw.listen
        ))
    })?;
    if tls_listen == listen || Some(tls_listen) == admin_listen {
        return Err(error(
            "gateway.tls.listen must differ from gateway.listen and gateway.admin_listen"
                .to_owned(),
        ));
    }
    if raw.certificates.is_empty() {
        return Err(error(
            "gateway.tls.certificates lists no certificate".to_owned(),
        ));
    }
    let folder = conf_file.parent().unwrap_or(Path::new(""));
    let certificates = raw
        .certificates
        .into_iter()
        .map(|files| {
            let files = CertificateFiles {
                cert: folder.join(files.cert),
                key: folder.join(files.key),
            };
            load_certificate(&files)
                .map(Arc::new)
                .map_err(|message| error(format!("gateway.tls: {message}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(TlsListener {
        listen: tls_listen,
        certificates,
    })
}

/// `gateway.tls`: the TLS listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    listen: String,
    certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCertificate {
    cert: PathBuf,
    key: PathBuf,
}

/// The parts of the Pingora conf file that are ours; Pingora ignores them, we ignore its keys.
#[derive(Debug, Default, Deserialize)]
struct RawConfFile {
    #[serde(default)]
    gateway: Option<RawGatewaySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGatewaySection {
    listen: Option<String>,
    admin_listen: Option<String>,
    admin_token: Option<String>,
    log_format: Option<String>,
    access_log: Option<String>,
    services: Option<PathBuf>,
    status_log: Option<bool>,
    trust_forwarded_for: Option<bool>,
    underscores_in_headers: Option<bool>,
    preserve_header_case: Option<bool>,
    h2c: Option<bool>,
    max_header_count: Option<usize>,
    max_header_size: Option<ConfigSize>,
    max_connections: Option<usize>,
    request_header_timeout: Option<ConfigDuration>,
    keepalive_timeout: Option<ConfigDuration>,
    client_write_timeout: Option<ConfigDuration>,
    tls: Option<RawTls>,
    defaults: Option<RawOverrides>,
}
