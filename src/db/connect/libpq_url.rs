//! libpq's connection URI, which HA setups (Patroni, CloudNativePG, the
//! managed services' docs) hand out with several hosts:
//! `postgres[ql]://[user[:password]@][host[:port][,host[:port]]...][/dbname][?param=value&...]`,
//! or one host with `host=h1,h2&port=p1,p2` lists in the query, which
//! replace the authority's. The `url` crate takes one host only, and
//! tokio-postgres reads a `host=` list in a URI's query as one name, so the
//! URI is taken apart here, as libpq does (percent-decoding, no `+` for a
//! space), and the connection settings are built from the parts.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// The port libpq uses for a host that names none.
const DEFAULT_PORT: u16 = 5432;

/// What is percent-encoded when a part is written back: the URI's own
/// delimiters.
const DELIMITERS: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'@')
    .add(b':')
    .add(b'&')
    .add(b'=')
    .add(b',')
    .add(b'[')
    .add(b']');

/// One server of the list, tried in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// A name, an IP address, or (starting with `/`) a Unix socket directory.
    pub name: String,
    pub port: u16,
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.contains(':') {
            write!(f, "[{}]:{}", self.name, self.port)
        } else {
            write!(
                f,
                "{}:{}",
                utf8_percent_encode(&self.name, DELIMITERS),
                self.port
            )
        }
    }
}

/// A parsed URI. Its `Display` masks the password (in the authority and in
/// a `password` parameter) and names every host.
#[derive(Clone, PartialEq, Eq)]
pub struct LibpqUrl {
    scheme: String,
    user: Option<String>,
    password: Option<String>,
    hosts: Vec<Host>,
    dbname: Option<String>,
    /// The other parameters, decoded, in order.
    params: Vec<(String, String)>,
}

impl LibpqUrl {
    /// Take `value` apart; every error names `setting` and never repeats
    /// the password.
    pub fn parse(setting: &str, value: &str) -> Result<Self, String> {
        let (scheme, rest) = value
            .split_once("://")
            .ok_or_else(|| format!("{setting} is not a postgres:// URL"))?;
        if scheme != "postgres" && scheme != "postgresql" {
            return Err(format!(
                "{setting} must start with postgres:// or postgresql://, not {scheme}://"
            ));
        }
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = match before_query.find('/') {
            Some(at) => before_query.split_at(at),
            None => (before_query, ""),
        };
        // The password may hold an `@`: the authority's last one ends it.
        let (userinfo, host_list) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let decode = |part: &str, what: &str| {
            percent_decode_str(part)
                .decode_utf8()
                .map(|text| text.into_owned())
                .map_err(|_| format!("{setting}: the {what} is not UTF-8 once decoded"))
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => match userinfo.split_once(':') {
                Some((user, password)) => (
                    Some(decode(user, "user")?),
                    Some(decode(password, "password")?),
                ),
                None => (Some(decode(userinfo, "user")?), None),
            },
        };
        let mut hosts = parse_hosts(setting, host_list)?;
        let dbname = match path.strip_prefix('/') {
            Some(name) if !name.is_empty() => Some(decode(name, "database name")?),
            _ => None,
        };
        let mut params = Vec::new();
        let mut host_param = None;
        let mut port_param = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("{setting}: a query parameter without `=` (`key=value&...`)")
            })?;
            let key = decode(key, "parameter name")?;
            let value = decode(value, "parameter value")?;
            match key.as_str() {
                "host" => host_param = Some(value),
                "port" => port_param = Some(value),
                _ => params.push((key, value)),
            }
        }
        if let Some(names) = host_param {
            hosts = names
                .split(',')
                .map(|name| Host {
                    name: name.to_string(),
                    port: DEFAULT_PORT,
                })
                .collect();
        }
        if let Some(ports) = port_param {
            apply_ports(setting, &mut hosts, &ports)?;
        }
        if hosts.is_empty() || hosts.iter().any(|host| host.name.is_empty()) {
            return Err(format!(
                "{setting} must name a host (host[:port], comma-separated)"
            ));
        }
        Ok(Self {
            scheme: scheme.to_string(),
            user,
            password,
            hosts,
            dbname,
            params,
        })
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn dbname(&self) -> Option<&str> {
        self.dbname.as_deref()
    }

    /// The same URI naming another database.
    pub fn with_dbname(&self, name: &str) -> Self {
        Self {
            dbname: Some(name.to_string()),
            params: self
                .params
                .iter()
                .filter(|(key, _)| key != "dbname")
                .cloned()
                .collect(),
            ..self.clone()
        }
    }

    /// The same URI with one more parameter (replacing one of that name).
    pub fn with_param(&self, key: &str, value: &str) -> Self {
        let mut params: Vec<(String, String)> = self
            .params
            .iter()
            .filter(|(name, _)| name != key)
            .cloned()
            .collect();
        params.push((key.to_string(), value.to_string()));
        Self {
            params,
            ..self.clone()
        }
    }

    /// The URI with its password, for a client or a child process only:
    /// never for a log line or an error (`Display` masks it).
    pub fn expose(&self) -> String {
        self.write(false)
    }

    /// Take the parameters out, to read the ones the caller handles and
    /// give the rest back with [`Self::set_params`].
    pub fn take_params(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.params)
    }

    pub fn set_params(&mut self, params: Vec<(String, String)>) {
        self.params = params;
    }

    /// tokio-postgres's settings: the parameters through its own
    /// key-value parser (every one it knows, `target_session_attrs` among
    /// them), then the authority's parts; a `user`, `password` or `dbname`
    /// parameter wins over the authority's, as in libpq (the later one).
    pub fn config(&self) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        let pairs: Vec<String> = self
            .params
            .iter()
            .map(|(key, value)| format!("{key}='{}'", quoted(value)))
            .collect();
        let mut config = tokio_postgres::Config::from_str(&pairs.join(" "))?;
        if let (Some(user), None) = (&self.user, config.get_user()) {
            config.user(user);
        }
        if let (Some(password), None) = (&self.password, config.get_password()) {
            config.password(password);
        }
        if let (Some(dbname), None) = (&self.dbname, config.get_dbname()) {
            config.dbname(dbname);
        }
        for host in &self.hosts {
            add_host(&mut config, &host.name);
            config.port(host.port);
        }
        Ok(config)
    }
}

/// `name`: a host, or (starting with `/`) a Unix socket directory.
#[cfg(unix)]
fn add_host(config: &mut tokio_postgres::Config, name: &str) {
    if name.starts_with('/') {
        config.host_path(name);
    } else {
        config.host(name);
    }
}

#[cfg(not(unix))]
fn add_host(config: &mut tokio_postgres::Config, name: &str) {
    config.host(name);
}

/// A value for tokio-postgres's key-value form: in single quotes, with
/// `\` and `'` escaped.
fn quoted(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The authority's hosts: `host[:port]`, comma-separated, an IPv6 address
/// in brackets.
fn parse_hosts(setting: &str, list: &str) -> Result<Vec<Host>, String> {
    if list.is_empty() {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|chunk| {
            let (name, port) = match chunk.strip_prefix('[') {
                Some(bracketed) => {
                    let (address, after) = bracketed.split_once(']').ok_or_else(|| {
                        format!("{setting}: an IPv6 host without its closing `]`")
                    })?;
                    (address, after.strip_prefix(':'))
                }
                None => match chunk.split_once(':') {
                    Some((name, port)) => (name, Some(port)),
                    None => (chunk, None),
                },
            };
            let name = percent_decode_str(name)
                .decode_utf8()
                .map_err(|_| format!("{setting}: a host is not UTF-8 once decoded"))?
                .into_owned();
            let port = match port {
                None | Some("") => DEFAULT_PORT,
                Some(port) => parse_port(setting, port)?,
            };
            Ok(Host { name, port })
        })
        .collect()
}

/// A `port=` list: one for every host, or one per host.
fn apply_ports(setting: &str, hosts: &mut [Host], ports: &str) -> Result<(), String> {
    let ports: Vec<u16> = ports
        .split(',')
        .map(|port| {
            if port.is_empty() {
                Ok(DEFAULT_PORT)
            } else {
                parse_port(setting, port)
            }
        })
        .collect::<Result<_, _>>()?;
    match ports.as_slice() {
        [one] => hosts.iter_mut().for_each(|host| host.port = *one),
        many if many.len() == hosts.len() => {
            for (host, port) in hosts.iter_mut().zip(many) {
                host.port = *port;
            }
        }
        many => {
            return Err(format!(
                "{setting}: {} ports for {} hosts (give one, or one per host)",
                many.len(),
                hosts.len()
            ))
        }
    }
    Ok(())
}

fn parse_port(setting: &str, port: &str) -> Result<u16, String> {
    port.parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("{setting}: `{port}` is not a port number"))
}

impl LibpqUrl {
    /// The URI written back, its password masked or not.
    fn write(&self, masked: bool) -> String {
        let secret = |value: &str| {
            if masked {
                "***".to_string()
            } else {
                utf8_percent_encode(value, DELIMITERS).to_string()
            }
        };
        let mut out = format!("{}://", self.scheme);
        if let Some(user) = &self.user {
            out.push_str(&utf8_percent_encode(user, DELIMITERS).to_string());
            if let Some(password) = &self.password {
                out.push(':');
                out.push_str(&secret(password));
            }
            out.push('@');
        }
        let hosts: Vec<String> = self.hosts.iter().map(ToString::to_string).collect();
        out.push_str(&hosts.join(","));
        if let Some(dbname) = &self.dbname {
            out.push('/');
            out.push_str(&utf8_percent_encode(dbname, DELIMITERS).to_string());
        }
        for (index, (key, value)) in self.params.iter().enumerate() {
            out.push(if index == 0 { '?' } else { '&' });
            out.push_str(&utf8_percent_encode(key, DELIMITERS).to_string());
            out.push('=');
            if key == "password" {
                out.push_str(&secret(value));
            } else {
                out.push_str(&utf8_percent_encode(value, DELIMITERS).to_string());
            }
        }
        out
    }
}

impl fmt::Display for LibpqUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.write(true))
    }
}

impl fmt::Debug for LibpqUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LibpqUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> LibpqUrl {
        LibpqUrl::parse("DATABASE_URL", value).expect("valid")
    }

    fn hosts(url: &LibpqUrl) -> Vec<(String, u16)> {
        url.hosts()
            .iter()
            .map(|host| (host.name.clone(), host.port))
            .collect()
    }

    #[test]
    fn several_hosts_in_the_authority_each_with_its_port_or_the_default() {
        let url = parse(
            "postgres://app:s3cret@db-1:5433,db-2,[::1]:6432/dw?target_session_attrs=read-write",
        );
        assert_eq!(
            hosts(&url),
            [
                ("db-1".into(), 5433),
                ("db-2".into(), 5432),
                ("::1".into(), 6432)
            ]
        );
        assert_eq!(url.dbname(), Some("dw"));
        let config = url.config().expect("config");
        assert_eq!(
            config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        assert_eq!(config.get_ports(), [5433, 5432, 6432]);
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
    }

    #[test]
    fn host_and_port_lists_in_the_query_replace_the_authority_s() {
        let url = parse("postgresql://app@/dw?host=db-1,db-2&port=5432,5433&sslmode=disable");
        assert_eq!(hosts(&url), [("db-1".into(), 5432), ("db-2".into(), 5433)]);
        let url = parse("postgresql://app@ignored:1/dw?host=db-1,db-2&port=6000");
        assert_eq!(hosts(&url), [("db-1".into(), 6000), ("db-2".into(), 6000)]);
        let config = url.config().expect("config");
        assert_eq!(config.get_hosts().len(), 2);
    }

    #[test]
    fn it_is_shown_with_every_host_and_no_password_anywhere() {
        let url = parse(
            "postgres://app:p%40ss%3Aword@db-1:5432,db-2:5433/dw?password=other&application_name=x",
        );
        let shown = url.to_string();
        assert_eq!(
            shown,
            "postgres://app:***@db-1:5432,db-2:5433/dw?password=***&application_name=x"
        );
        assert!(!format!("{url:?}").contains("p@ss"));
        assert_eq!(
            url.config().expect("config").get_password(),
            Some(&b"other"[..]),
            "the query's password, as libpq: the later setting wins"
        );
    }

    #[test]
    fn exposed_it_parses_back_to_the_same_uri() {
        let url =
            parse("postgres://app:p%40ss%2Cw@db-1:5433,db-2/d%20w?options=-c%20x%3D1&password=q");
        let again = parse(&url.expose());
        assert_eq!(again, url);
        assert!(url.expose().contains("p%40ss%2Cw"));
        assert_eq!(
            url.with_param("application_name", "kit").to_string(),
            "postgres://app:***@db-1:5433,db-2:5432/d%20w?options=-c%20x%3D1&password=***&application_name=kit"
        );
    }

    #[test]
    fn a_password_holding_an_at_sign_ends_at_the_last_one() {
        let url = parse("postgres://app:a@b@db:5432/dw");
        assert_eq!(hosts(&url), [("db".into(), 5432)]);
        assert_eq!(
            url.config().expect("config").get_password(),
            Some(&b"a@b"[..])
        );
    }

    #[test]
    fn another_database_keeps_every_host_and_parameter() {
        let url = parse("postgres://app@db-1,db-2:5433/dw?sslmode=require");
        let other = url.with_dbname("postgres");
        assert_eq!(other.dbname(), Some("postgres"));
        assert_eq!(hosts(&other), hosts(&url));
        assert_eq!(
            other.to_string(),
            "postgres://app@db-1:5432,db-2:5433/postgres?sslmode=require"
        );
    }

    #[test]
    fn bad_uris_are_refused_naming_the_setting_never_the_password() {
        for bad in [
            "mysql://app:hunter2@db/dw",
            "postgres://app:hunter2@db:notaport/dw",
            "postgres://app:hunter2@db:70000/dw",
            "postgres://app:hunter2@/dw",
            "postgres://app:hunter2@db-1,,db-2/dw",
            "postgres://app:hunter2@db-1,db-2/dw?port=1,2,3",
            "postgres://app:hunter2@[::1/dw",
            "postgres://app:hunter2@db/dw?sslmode",
            "hunter2",
        ] {
            let error = LibpqUrl::parse("DATABASE_URL", bad).expect_err(bad);
            assert!(error.contains("DATABASE_URL"), "{bad}: {error}");
            assert!(!error.contains("hunter2"), "{bad}: {error}");
        }
    }
}
