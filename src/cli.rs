//! Start-up: Pingora's own command line (`-c`, `-d`, `-t`, `-u`), the shipped conf as the
//! default, and the order things must happen in.
//!
//! The order matters: the gateway's config is loaded and validated *before* Pingora's
//! bootstrap, because with `-t` the bootstrap exits the process as soon as Pingora's own conf
//! has been checked. Services are added before `run_forever`, which daemonizes with `-d`.

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::{background_service, Opt, Server};
use pingora::services::listening::Service;
use pingora_proxy::http_proxy;

use crate::admin::{self, AdminApp};
use crate::certificates::CertificateStore;
use crate::clock::MonotonicClock;
use crate::config::{self, ConfigError, GatewayConfig};
use crate::edge::{self, ConnectionGuard};
use crate::health_checks::{HealthCheckService, HealthChecks};
use crate::live::discovery::{DiscoveryService, DnsDiscovery};
use crate::live::{LiveTable, ReloadOnHangup};
use crate::proxy::{GatewayProxy, ProxySettings};
use crate::resolver::SystemResolver;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::logs;
use crate::telemetry::metrics::GatewayStats;

/// Conf files tried, in order, when `-c` is not given: the repository's, then the image's.
pub(crate) const DEFAULT_CONF_FILES: [&str; 2] = ["conf/gateway.yaml", "/etc/gateway/gateway.yaml"];

/// Why the gateway could not start.
#[derive(Debug)]
pub enum StartError {
    /// No `-c` was given and none of the default conf files exists.
    NoConfFile,
    /// The gateway's config is invalid.
    Config(ConfigError),
    /// Pingora rejected its server conf.
    Pingora(PathBuf, Box<pingora::Error>),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::NoConfFile => write!(
                f,
                "no conf file given (-c) and none found at {}",
                DEFAULT_CONF_FILES.join(" or ")
            ),
            StartError::Config(e) => e.fmt(f),
            StartError::Pingora(file, e) => {
                write!(f, "{}: invalid Pingora server conf: {e}", file.display())
            }
        }
    }
}

impl std::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

/// Runs the gateway as `opt` says. Returns only on a start-up error; with `-t` the process
/// exits inside Pingora's bootstrap once every check has passed.
pub fn run(mut opt: Opt) -> Result<Infallible, StartError> {
    let conf_file = match opt.conf.as_deref() {
        Some(file) => PathBuf::from(file),
        None => default_conf_file().ok_or(StartError::NoConfFile)?,
    };
    opt.conf = Some(conf_file.display().to_string());
    let config = config::load(&conf_file)?;
    logs::init_logging(config.log_format);
    log_loaded(&conf_file, &config);

    let mut server =
        Server::new(Some(opt)).map_err(|e| StartError::Pingora(conf_file.clone(), e))?;
    server.bootstrap();
    // Nothing here asks how long a socket's reads and writes waited, so they are not timed
    // (two clock reads a wait, about four a request).
    pingora::protocols::l4::stream::set_pending_time_tracking(false);

    let certificates = config
        .tls
        .as_ref()
        .map(|tls| Arc::new(CertificateStore::new(tls.certificates.clone())));
    let reloader = Arc::new(LiveTable::new(
        conf_file.clone(),
        &config,
        Arc::new(MonotonicClock::new()),
        certificates.clone(),
    ));
    let stats = Arc::new(GatewayStats::default());
    let gateway = GatewayProxy::new(
        reloader.table(),
        stats.clone(),
        ProxySettings {
            status_log: config.status_log.then_some(config.log_format),
            trust_forwarded_for: config.trust_forwarded_for,
            underscores_in_headers: config.underscores_in_headers,
            preserve_header_case: config.preserve_header_case,
            keepalive_timeout: config.keepalive_timeout,
            client_write_timeout: config.client_write_timeout,
            header_limits: config.header_limits,
        },
    );
    let gateway = match config.access_log {
        Some(format) => gateway.with_access_log(AccessLog::start(format)),
        None => gateway,
    };
    let mut app = http_proxy(&server.configuration, gateway);
    let mut server_options = HttpServerOptions::default();
    // HTTP/2 with prior knowledge on the plaintext listener; the guard bounds Pingora's peek
    // for its preface by the head deadline. (On TLS, ALPN decides.)
    server_options.h2c = config.h2c;
    // Request heads read with one header map, names forwarded in title case, unless the
    // conf asks for their spelling (responses: `upstream_peer`).
    server_options.h1_discard_header_case = !config.preserve_header_case;
    app.server_options = Some(server_options);
    let guarded = ConnectionGuard::new(app, config.connection_limits);
    let mut proxy = Service::new("gateway proxy".to_owned(), guarded);
    // No 64 KiB read buffer under each plaintext connection: Pingora reads a request head into
    // a buffer of its own, so the listener's would only sit on every idle keep-alive connection
    // (docs/performance.md, "Idle connections"). TLS keeps it: small record reads need it.
    proxy.add_listener(
        ListenerConfig::tcp(config.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(0)),
    );
    info!("gateway listening on {}", config.listen);
    if let (Some(tls), Some(store)) = (&config.tls, certificates) {
        let settings =
            edge::tls::tls_settings(store).map_err(|e| StartError::Pingora(conf_file, e))?;
        proxy.add_tls_with_settings(&tls.listen.to_string(), None, settings);
        info!(
            "gateway listening for TLS on {} ({} certificates)",
            tls.listen,
            tls.certificates.len()
        );
    }
    server.add_service(proxy);
    if let Some(admin_listen) = config.admin_listen {
        if !admin_listen.ip().is_loopback() && config.admin_token.is_none() {
            warn!(
                "the admin listener on {admin_listen} is not on loopback and has no token: \
                 anyone who reaches it can read and override the breakers; set \
                 gateway.admin_token or {}",
                config::ADMIN_TOKEN_ENV
            );
        }
        let app = AdminApp::new(reloader.clone(), stats, config.admin_token.clone());
        server.add_service(admin::admin_service(app, admin_listen));
        info!("admin listening on {admin_listen}");
    }
    server.add_service(background_service(
        "DNS discovery",
        DiscoveryService(Arc::new(DnsDiscovery::new(
            reloader.clone(),
            Arc::new(SystemResolver),
        ))),
    ));
    server.add_service(background_service(
        "health checks",
        HealthCheckService(Arc::new(HealthChecks::new(reloader.clone()))),
    ));
    server.add_service(background_service(
        "reload on SIGHUP",
        ReloadOnHangup(reloader),
    ));
    server.run_forever()
}

fn default_conf_file() -> Option<PathBuf> {
    DEFAULT_CONF_FILES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

fn log_loaded(conf_file: &Path, config: &GatewayConfig) {
    info!(
        "loaded {} ({} services, {} backends from {})",
        conf_file.display(),
        config.services.len(),
        config.backend_count(),
        config.services_file.display()
    );
    for service in &config.services {
        let has_tls_backends = service.backends.iter().any(|b| b.tls_host.is_some())
            || service
                .discovery
                .as_ref()
                .is_some_and(|d| d.targets.iter().any(|t| t.tls));
        if has_tls_backends && !service.tls.verify {
            warn!(
                "service \"{}\": tls_verify is false: its https backends' certificates are not \
                 verified, so anyone on the path can impersonate them",
                service.name
            );
        }
        if service.discovery.is_some() && service.backends.is_empty() {
            warn!(
                "service \"{}\": its hosts resolve to no address yet; it answers 503 until DNS \
                 discovery finds one",
                service.name
            );
        }
    }
}
