//! A Postgres primary and a streaming standby of the test's own, made from
//! the server installed on this machine (`initdb`, `pg_basebackup -R`,
//! `pg_ctl`), on free ports and in a directory of their own, run as the
//! `postgres` user. The machine's own cluster is never touched. Dropping
//! the pair stops both servers and removes their directories, also when a
//! test fails.
//!
//! The standby streams through a [`Proxy`] of the pair's, so a test can
//! make replication lag (freeze the link) without touching either server.
//! Both servers speak TLS with the machine's `localhost` certificate, as the
//! shared server does.
//!
//! Servers are numbered as started: 0 is the first primary, 1 its standby.
//! A failover is [`PostgresPair::stop_immediately`] of 0 and
//! [`PostgresPair::promote`] of 1; [`PostgresPair::rebuild_as_standby`]
//! brings 0 back as a read-only standby of 1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use disconnect_worker::db::connect::LibpqUrl;
use tokio::process::Command;

use crate::process::free_port;
use crate::proxy::Proxy;
use crate::server_user::{chown_to, command_as};

/// The user Postgres's files and processes belong to.
const POSTGRES_USER: &str = "postgres";
/// The certificate and key the machine's own server uses.
const CERTIFICATE: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
const KEY: &str = "/etc/ssl/private/ssl-cert-snakeoil.key";
/// How long a standby may take to catch up and stream.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(60);

/// How the primary acknowledges a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replication {
    /// `synchronous_standby_names = '*'`: a commit returns once the standby
    /// has flushed it.
    Synchronous,
    /// No synchronous standby: a commit returns once the primary has it.
    Asynchronous,
}

pub struct PostgresServer {
    pub port: u16,
    dir: PathBuf,
}

pub struct PostgresPair {
    pub servers: [PostgresServer; 2],
    pub replication: Replication,
    /// The standby's replication connection to the primary goes through it.
    replication_link: Proxy,
    bin: PathBuf,
    dir: PathBuf,
}

impl PostgresPair {
    /// Whether this machine can make one: Postgres's server programs
    /// installed, and we are root (to act as `postgres`) or not root.
    pub fn available() -> bool {
        bin_dir().is_some()
            && std::process::Command::new("id")
                .arg(POSTGRES_USER)
                .output()
                .is_ok_and(|output| output.status.success())
    }

    /// A primary with `replication`, and a standby streaming from it.
    pub async fn start(replication: Replication) -> anyhow::Result<Self> {
        let bin = bin_dir().context("no Postgres server programs under /usr/lib/postgresql")?;
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let dir = std::env::temp_dir().join(format!("dwtest-pg-{id}"));
        std::fs::create_dir_all(&dir).context("creating the pair's directory")?;
        let servers = [
            PostgresServer {
                port: free_port()?,
                dir: dir.join("server0"),
            },
            PostgresServer {
                port: free_port()?,
                dir: dir.join("server1"),
            },
        ];
        let replication_link = Proxy::start(servers[0].address()).await;
        let pair = Self {
            servers,
            replication,
            replication_link,
            bin,
            dir,
        };
        chown_to(POSTGRES_USER, &pair.dir)?;
        let primary = &pair.servers[0];
        pair.run(
            "initdb",
            &[
                "-D",
                &primary.data(),
                "-U",
                POSTGRES_USER,
                "--auth=trust",
                "--no-sync",
            ],
        )
        .await?;
        append(
            &primary.dir.join("postgresql.conf"),
            &pair.primary_settings(),
        )
        .await?;
        pair.start_server(0).await?;
        pair.base_backup(1, 0).await?;
        pair.start_server(1).await?;
        pair.wait_streaming(0).await?;
        Ok(pair)
    }

    /// The URL of server `index`'s `postgres` database.
    pub fn admin_url(&self, index: usize) -> LibpqUrl {
        self.url_of(&[self.servers[index].address()], "")
    }

    /// The URL of the `postgres` database on `addresses`, in that order,
    /// with `query` (without its `?`).
    pub fn url_of(&self, addresses: &[SocketAddr], query: &str) -> LibpqUrl {
        let hosts = addresses
            .iter()
            .map(|address| format!("localhost:{}", address.port()))
            .collect::<Vec<_>>()
            .join(",");
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        LibpqUrl::parse(
            "test",
            &format!("postgres://postgres@{hosts}/postgres{query}"),
        )
        .expect("a URL the pair makes is valid")
    }

    pub fn address(&self, index: usize) -> SocketAddr {
        self.servers[index].address()
    }

    /// The proxy the standby's replication connection goes through.
    pub fn replication_link(&self) -> &Proxy {
        &self.replication_link
    }

    /// Stop server `index` at once, as a crash does (`pg_ctl -m immediate`):
    /// no checkpoint, and every client's connection ends.
    pub async fn stop_immediately(&self, index: usize) -> anyhow::Result<()> {
        let data = self.servers[index].data();
        self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"])
            .await
            .map(drop)
    }

    /// Promote standby `index` to primary, and wait until it takes writes.
    /// It has no standby of its own yet, so it waits for none (as Patroni's
    /// `synchronous_mode` leaves a primary with no standby left): otherwise
    /// every commit would wait until one is rebuilt.
    pub async fn promote(&self, index: usize) -> anyhow::Result<()> {
        let data = self.servers[index].data();
        self.run("pg_ctl", &["-D", &data, "-w", "promote"]).await?;
        self.set_synchronous(index, false).await
    }

    /// Make primary `index` wait for a standby's flush at each commit, or
    /// not.
    pub async fn set_synchronous(&self, index: usize, synchronous: bool) -> anyhow::Result<()> {
        let names = if synchronous { "*" } else { "" };
        self.query(
            index,
            &format!("ALTER SYSTEM SET synchronous_standby_names = '{names}'"),
        )
        .await?;
        self.query(index, "SELECT pg_reload_conf()").await.map(drop)
    }

    /// Bring stopped server `index` back as a standby of `primary`: a new
    /// base backup on its port (what a failover manager does when the old
    /// primary cannot be rewound), streaming directly.
    pub async fn rebuild_as_standby(&self, index: usize, primary: usize) -> anyhow::Result<()> {
        tokio::fs::remove_dir_all(&self.servers[index].dir)
            .await
            .context("removing the old data directory")?;
        self.base_backup(index, primary).await?;
        append(
            &self.servers[index].dir.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user={POSTGRES_USER} application_name=server{index}'\n",
                self.servers[primary].port
            ),
        )
        .await?;
        self.start_server(index).await?;
        if self.replication == Replication::Synchronous {
            self.set_synchronous(primary, true).await?;
        }
        self.wait_streaming(primary).await
    }

    /// `sql` run by `psql` on server `index`; its output, unaligned.
    pub async fn query(&self, index: usize, sql: &str) -> anyhow::Result<String> {
        let port = self.servers[index].port.to_string();
        let output = self
            .run(
                "psql",
                &[
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-U",
                    POSTGRES_USER,
                    "-d",
                    "postgres",
                    "-XAtc",
                    sql,
                ],
            )
            .await?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    }

    fn primary_settings(&self) -> String {
        let primary = &self.servers[0];
        let synchronous = match self.replication {
            Replication::Synchronous => "*",
            Replication::Asynchronous => "",
        };
        // fsync is off: the tests kill processes, never the machine, so
        // the page cache keeps what was written.
        format!(
            "\n# disconnect-worker test pair\n\
             port = {port}\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sockets}'\n\
             max_connections = 100\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             wal_level = replica\n\
             max_wal_senders = 5\n\
             hot_standby = on\n\
             synchronous_standby_names = '{synchronous}'\n\
             ssl = on\n\
             ssl_cert_file = '{CERTIFICATE}'\n\
             ssl_key_file = '{KEY}'\n",
            port = primary.port,
            sockets = self.dir.display(),
        )
    }

    /// A base backup of server `from` into server `into`'s directory, set up
    /// as its standby through the replication link, on its own port.
    async fn base_backup(&self, into: usize, from: usize) -> anyhow::Result<()> {
        let port = self.servers[from].port.to_string();
        let data = self.servers[into].data();
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                POSTGRES_USER,
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )
        .await?;
        append(
            &self.servers[into].dir.join("postgresql.auto.conf"),
            &format!(
                "port = {}\nprimary_conninfo = 'host=127.0.0.1 port={} user={POSTGRES_USER} application_name=server{into}'\n",
                self.servers[into].port,
                self.replication_link.address.port(),
            ),
        )
        .await
    }

    async fn start_server(&self, index: usize) -> anyhow::Result<()> {
        let server = &self.servers[index];
        let log = server.dir.with_extension("log").display().to_string();
        self.run("pg_ctl", &["-D", &server.data(), "-l", &log, "-w", "start"])
            .await
            .map(drop)
    }

    /// Wait until `primary` streams to a standby (synchronously, if the
    /// pair is synchronous).
    async fn wait_streaming(&self, primary: usize) -> anyhow::Result<()> {
        let wanted = match self.replication {
            Replication::Synchronous => "sync",
            Replication::Asynchronous => "async",
        };
        let sql = "SELECT string_agg(state || ':' || sync_state, ',') FROM pg_stat_replication";
        let deadline = tokio::time::Instant::now() + STREAMING_TIMEOUT;
        loop {
            let states = self.query(primary, sql).await.unwrap_or_default();
            if states.contains(&format!("streaming:{wanted}")) {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no standby streaming from server {primary} ({states})");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `program` from the server's directory, as the `postgres` user.
    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let output = Command::from(command_as(POSTGRES_USER, self.bin.join(program)))
            .args(args)
            .env("PGSSLMODE", "disable")
            .kill_on_drop(true)
            .output()
            .await
            .with_context(|| format!("running {program}"))?;
        if !output.status.success() {
            bail!(
                "{program} {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }
}

impl Drop for PostgresPair {
    fn drop(&mut self) {
        for server in &self.servers {
            let _ = command_as(POSTGRES_USER, self.bin.join("pg_ctl"))
                .args(["-D", &server.data(), "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PostgresServer {
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn data(&self) -> String {
        self.dir.display().to_string()
    }
}

/// The newest installed server's programs.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

async fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(text.as_bytes()).await?;
    Ok(())
}
