//! The bounds a Postgres connection carries, so that a link that fails
//! silently (no FIN, no RST: a node gone, a NAT entry dropped) costs
//! seconds, not the operating system's two hours:
//!
//! - on the client's socket: a connect timeout, TCP keepalives and
//!   `TCP_USER_TIMEOUT`;
//! - on the server's side of the session, sent in the startup packet's
//!   `options`: `statement_timeout`, `idle_in_transaction_session_timeout`
//!   (so the server itself ends the transaction of a client it no longer
//!   hears from, and releases its row locks), and the server's own
//!   keepalives and `tcp_user_timeout`.
//!
//! The client-side deadlines on pool checkout and on each transaction are
//! [`super::super::bounded`]'s.

use std::time::Duration;

/// Probes the kernel sends before it gives up on a silent peer (with
/// `TCP_USER_TIMEOUT` set, Linux ends the connection at that timeout
/// instead).
const KEEPALIVE_PROBES: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionBounds {
    /// Opening a connection: TCP, TLS and the Postgres handshake together.
    pub connect: Duration,
    /// The server's `statement_timeout`; `None` sends nothing (the server's
    /// or the role's setting applies).
    pub statement: Option<Duration>,
    /// The server's `idle_in_transaction_session_timeout`; `None` sends
    /// nothing.
    pub idle_in_transaction: Option<Duration>,
    /// TCP keepalive idle time and probe interval, on both ends; `None`:
    /// the operating system's (two hours).
    pub keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT` on both ends: how long sent data may stay
    /// unacknowledged before the kernel ends the connection; `None`: the
    /// operating system's (about fifteen minutes of retransmissions).
    pub tcp_user_timeout: Option<Duration>,
}

impl Default for SessionBounds {
    /// The defaults of the `DATABASE_*` settings.
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            statement: Some(Duration::from_secs(10)),
            idle_in_transaction: Some(Duration::from_secs(5)),
            keepalive: Some(Duration::from_secs(5)),
            tcp_user_timeout: Some(Duration::from_secs(15)),
        }
    }
}

impl SessionBounds {
    /// Bounds on the socket only, nothing sent to the server: what a URL
    /// parsed on its own carries (the test kit, the benchmark's seeding).
    pub fn socket_only() -> Self {
        Self {
            statement: None,
            idle_in_transaction: None,
            ..Self::default()
        }
    }

    /// The same, for a session that runs migrations or creates databases:
    /// a statement may take as long as it needs (an index build on a large
    /// table), so `statement_timeout` is set to 0 rather than left to a
    /// role's setting.
    pub fn for_schema_changes(self) -> Self {
        Self {
            statement: self.statement.map(|_| Duration::ZERO),
            ..self
        }
    }

    /// Apply to a connection's configuration; `user_options` are the URL's
    /// own `options`, kept after ours so that they win.
    pub(super) fn apply(&self, config: &mut tokio_postgres::Config, user_options: Option<&str>) {
        config.connect_timeout(self.connect);
        if let Some(keepalive) = self.keepalive {
            config
                .keepalives(true)
                .keepalives_idle(keepalive)
                .keepalives_interval(keepalive)
                .keepalives_retries(KEEPALIVE_PROBES);
        }
        if let Some(timeout) = self.tcp_user_timeout {
            config.tcp_user_timeout(timeout);
        }
        if let Some(options) = self.server_options(user_options) {
            config.options(options);
        }
    }

    /// The startup packet's `options`: `-c name=value` for each server
    /// setting, then the URL's own.
    fn server_options(&self, user_options: Option<&str>) -> Option<String> {
        let mut settings = Vec::new();
        if let Some(statement) = self.statement {
            settings.push(format!("statement_timeout={}", statement.as_millis()));
        }
        if let Some(idle) = self.idle_in_transaction {
            settings.push(format!(
                "idle_in_transaction_session_timeout={}",
                idle.as_millis()
            ));
        }
        if let Some(keepalive) = self.keepalive {
            let seconds = keepalive.as_secs().max(1);
            settings.push(format!("tcp_keepalives_idle={seconds}"));
            settings.push(format!("tcp_keepalives_interval={seconds}"));
            settings.push(format!("tcp_keepalives_count={KEEPALIVE_PROBES}"));
        }
        if let Some(timeout) = self.tcp_user_timeout {
            settings.push(format!("tcp_user_timeout={}", timeout.as_millis()));
        }
        let mut options: Vec<String> = settings
            .into_iter()
            .map(|setting| format!("-c {setting}"))
            .collect();
        options.extend(user_options.filter(|o| !o.is_empty()).map(String::from));
        (!options.is_empty()).then(|| options.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_is_told_every_bound_and_the_url_s_own_options_come_last() {
        let options = SessionBounds::default()
            .server_options(Some("-c search_path=app"))
            .expect("options");
        assert_eq!(
            options,
            "-c statement_timeout=10000 -c idle_in_transaction_session_timeout=5000 \
             -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 \
             -c tcp_user_timeout=15000 -c search_path=app"
        );
    }

    #[test]
    fn schema_changes_have_no_statement_timeout_and_socket_only_sends_no_timeouts() {
        let schema = SessionBounds::default().for_schema_changes();
        assert!(schema
            .server_options(None)
            .expect("options")
            .starts_with("-c statement_timeout=0 "));
        let socket = SessionBounds::socket_only()
            .server_options(None)
            .expect("options");
        assert!(!socket.contains("statement_timeout") && !socket.contains("idle_in_transaction"));
        let none = SessionBounds {
            keepalive: None,
            tcp_user_timeout: None,
            ..SessionBounds::socket_only()
        };
        assert_eq!(none.server_options(None), None);
    }
}
