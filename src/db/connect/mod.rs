//! Connecting to Postgres: the one way every part of the program does it
//! (the pool, migrations, the commands, the test kit and the benchmark).
//!
//! `DATABASE_URL` takes libpq's TLS settings with libpq's meanings, carried
//! out with rustls (tokio-postgres itself knows only `disable`, `prefer` and
//! `require`, and no `sslrootcert`):
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | no |
//! | `prefer` (default) | if the server offers TLS, else plaintext | no |
//! | `require` | yes | no; with `sslrootcert`, as `verify-ca` (as libpq does) |
//! | `verify-ca` | yes | chain to a trusted root |
//! | `verify-full` | yes | chain, and the host name |
//!
//! The trusted roots are the PEM file `sslrootcert` names, else the system's
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), or `sslrootcert=system`.
//! The URL is libpq's, several hosts included ([`libpq_url`]); each host is
//! checked against its own name (`verify-full`), and `target_session_attrs`
//! picks the one to use, as libpq does.
//! The connection's `application_name` is `disconnect-worker` unless the URL
//! sets one, so operators find the worker in `pg_stat_activity`. Every
//! connection carries [`SessionBounds`]: a parsed URL bounds the socket
//! only; [`DatabaseUrl::with_bounds`] adds the server-side timeouts.

mod bounds;
mod libpq_url;
mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use diesel_async::AsyncPgConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::observability::metrics;

pub use bounds::SessionBounds;
pub use libpq_url::{Host, LibpqUrl};

/// The application name the worker's connections carry unless the URL sets
/// `application_name`.
pub const DEFAULT_APPLICATION_NAME: &str = "disconnect-worker";

/// The setting every message names.
const SETTING: &str = "DATABASE_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        match value {
            "disable" => Ok(Self::Disable),
            "prefer" => Ok(Self::Prefer),
            "require" => Ok(Self::Require),
            "verify-ca" => Ok(Self::VerifyCa),
            "verify-full" => Ok(Self::VerifyFull),
            // `allow` tries plaintext first: a downgrade nobody should choose.
            other => Err(format!(
                "{SETTING}: sslmode must be disable, prefer, require, verify-ca or verify-full, not `{other}`"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where the trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    System,
    File(PathBuf),
}

/// A parsed, checked `DATABASE_URL`. Its `Display` masks the password and
/// names every host.
#[derive(Clone)]
pub struct DatabaseUrl {
    /// Without the parameters read here: what is shown, and what another
    /// database on the same servers is made from.
    shown: LibpqUrl,
    /// The URL's settings, without its `options` and without the bounds:
    /// each connection is opened with [`Self::session_config`].
    config: tokio_postgres::Config,
    /// The URL's own `options`, sent after ours.
    options: Option<String>,
    bounds: SessionBounds,
    ssl_mode: SslMode,
    roots: Option<Roots>,
    /// Built once, when the URL is parsed: a missing or unreadable root file
    /// is a bad setting, found at start-up.
    tls: Option<MakeRustlsConnect>,
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shown.fmt(f)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.shown)
    }
}

impl DatabaseUrl {
    /// Check `value` as `DATABASE_URL`; every error names the setting and
    /// never repeats the password.
    pub fn parse(value: &str) -> Result<Self, String> {
        let mut url = LibpqUrl::parse(SETTING, value)?;
        let shown = url.clone();
        let mut ssl_mode = SslMode::Prefer;
        let mut roots = None;
        let mut application_name = None;
        let mut options = None;
        let mut kept = Vec::new();
        for (key, value) in url.take_params() {
            match key.as_str() {
                "sslmode" => ssl_mode = SslMode::parse(&value)?,
                "sslrootcert" if value == "system" => roots = Some(Roots::System),
                "sslrootcert" => roots = Some(Roots::File(PathBuf::from(value))),
                "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                    return Err(format!(
                        "{SETTING}: {key} is not supported (client certificates and revocation lists)"
                    ))
                }
                "application_name" => application_name = Some(value),
                "options" => options = Some(value),
                _ => kept.push((key, value)),
            }
        }
        url.set_params(kept);
        let mut config = url.config().map_err(|error| {
            format!("{SETTING} is not a Postgres connection URL that can be used ({error})")
        })?;
        config.application_name(
            application_name
                .as_deref()
                .unwrap_or(DEFAULT_APPLICATION_NAME),
        );
        // `require` with a root file checks the chain, as libpq does.
        if ssl_mode == SslMode::Require && matches!(roots, Some(Roots::File(_))) {
            ssl_mode = SslMode::VerifyCa;
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        let tls = match ssl_mode {
            SslMode::Disable => None,
            mode => Some(MakeRustlsConnect::new(client_config(mode, roots.as_ref())?)),
        };
        Ok(Self {
            shown,
            config,
            options,
            bounds: SessionBounds::socket_only(),
            ssl_mode,
            roots,
            tls,
        })
    }

    /// The same URL, its connections opened with `bounds`.
    pub fn with_bounds(&self, bounds: SessionBounds) -> Self {
        Self {
            bounds,
            ..self.clone()
        }
    }

    pub fn bounds(&self) -> SessionBounds {
        self.bounds
    }

    /// What a connection is opened with: the URL's settings and the bounds.
    fn session_config(&self) -> tokio_postgres::Config {
        let mut config = self.config.clone();
        self.bounds.apply(&mut config, self.options.as_deref());
        config
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The database this URL names.
    pub fn database_name(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    /// The same servers, credentials and TLS settings, another database.
    pub fn with_database(&self, name: &str) -> Self {
        let mut other = self.clone();
        other.config.dbname(name);
        other.shown = self.shown.with_dbname(name);
        other
    }

    /// The servers, in the order they are tried.
    pub fn hosts(&self) -> &[Host] {
        self.shown.hosts()
    }

    /// The URL as given (its password included: not for logs).
    pub fn libpq_url(&self) -> &LibpqUrl {
        &self.shown
    }

    /// Open a connection, within the connect bound (TCP, TLS and the
    /// handshake: a server that accepts the TCP connection and then says
    /// nothing must not hold the caller). A TLS failure is reported as a bad
    /// setting ([`ConnectError::Tls`]), not as an unreachable server.
    pub async fn establish(&self) -> Result<AsyncPgConnection, ConnectError> {
        let limit = self.bounds.connect;
        metrics::within("database_connect", limit, self.establish_unbounded())
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Unreachable {
                    url: self.shown.to_string(),
                    reason: format!("no answer within {limit:?}"),
                    answered: false,
                })
            })
    }

    async fn establish_unbounded(&self) -> Result<AsyncPgConnection, ConnectError> {
        let config = self.session_config();
        let connected = match &self.tls {
            None => {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|error| self.connect_error(&error))?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = config
                    .connect(tls.clone())
                    .await
                    .map_err(|error| self.connect_error(&error))?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        };
        connected.map_err(|error| ConnectError::Unreachable {
            url: self.shown.to_string(),
            reason: error.to_string(),
            answered: false,
        })
    }

    fn connect_error(&self, error: &tokio_postgres::Error) -> ConnectError {
        match verify::tls_failure(error) {
            Some(reason) => ConnectError::Tls {
                settings: self.tls_settings(),
                host: self
                    .hosts()
                    .iter()
                    .map(|host| host.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                reason,
            },
            None => ConnectError::Unreachable {
                url: self.shown.to_string(),
                reason: error.to_string(),
                answered: error.as_db_error().is_some(),
            },
        }
    }

    fn tls_settings(&self) -> String {
        match &self.roots {
            Some(Roots::File(path)) => format!(
                "sslmode={}, sslrootcert={}",
                self.ssl_mode.as_str(),
                path.display()
            ),
            Some(Roots::System) => {
                format!("sslmode={}, sslrootcert=system", self.ssl_mode.as_str())
            }
            None => format!("sslmode={}", self.ssl_mode.as_str()),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server did not answer, or refused us: may pass by itself.
    #[error("cannot connect to {url}: {reason}")]
    Unreachable {
        url: String,
        reason: String,
        /// The server answered, with an error (too many clients, starting
        /// up, a refused login): the network path works.
        answered: bool,
    },
    /// The TLS handshake failed: the settings (or the server's certificate)
    /// are wrong, and waiting will not fix it.
    #[error("{SETTING} ({settings}): the TLS handshake with {host} failed: {reason}")]
    Tls {
        settings: String,
        host: String,
        reason: String,
    },
}

impl ConnectError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Unreachable { .. })
    }

    /// Whether the server answered: the network path to it works, whatever
    /// it said.
    pub fn server_answered(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { answered: true, .. } | Self::Tls { .. }
        )
    }
}

fn client_config(mode: SslMode, roots: Option<&Roots>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("{SETTING}: no TLS version available ({error})"))?;
    let config = match mode {
        // libpq's `prefer` and `require` encrypt without checking who answers.
        SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verify::AnyCertificate::new(provider))),
        SslMode::VerifyCa => {
            let chain = verify::chain_verifier(load_roots(roots)?, provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verify::ChainOnly::new(chain)))
        }
        SslMode::VerifyFull | SslMode::Disable => {
            builder.with_root_certificates(load_roots(roots)?)
        }
    };
    Ok(config.with_no_client_auth())
}

fn load_roots(roots: Option<&Roots>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(Roots::File(path)) => {
            let certificates = read_pem_certificates(path)?;
            let (added, _) = store.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(format!(
                    "{SETTING}: sslrootcert {} holds no usable certificate",
                    path.display()
                ));
            }
        }
        None | Some(Roots::System) => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(format!(
                    "{SETTING}: no trusted root certificates found on this system; \
                     name a CA file with sslrootcert=/path/to/ca.pem or SSL_CERT_FILE"
                ));
            }
        }
    }
    Ok(store)
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |error: &dyn fmt::Display| {
        format!(
            "{SETTING}: sslrootcert {} cannot be read: {error}",
            path.display()
        )
    };
    CertificateDer::pem_file_iter(path)
        .map_err(|error| unreadable(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unreadable(&error))
}

#[cfg(test)]
mod tests;
