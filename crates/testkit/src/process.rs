//! The worker binary as a child process, stopped when dropped, and a minimal
//! HTTP client for its endpoints.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use disconnect_worker::broker::Topology;
use disconnect_worker::config::topology_env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The environment that points the worker binary at a database, a broker
/// and a topology: the variable names come from the worker's configuration.
pub fn worker_env(
    database_url: &str,
    amqp_url: &str,
    topology: &Topology,
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database_url.to_string()),
        ("AMQP_URL", amqp_url.to_string()),
    ];
    env.extend(topology_env(topology));
    env
}

/// Where a child process's stderr (its logs) goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Logs {
    /// The parent's stderr.
    Inherit,
    /// Nowhere.
    Quiet,
    /// This file, created or truncated, to be read afterwards.
    File(PathBuf),
}

pub struct WorkerProcess {
    child: Option<Child>,
    pub http_port: u16,
    /// How it is stopped when dropped: `KILL` for tests (nothing to wait
    /// for), `TERM` for a benchmark (a clean exit).
    stop_signal: &'static str,
}

impl WorkerProcess {
    /// `binary run` with `env` and its HTTP listener on a free port.
    pub fn spawn(binary: &Path, env: &[(&str, String)], logs: Logs) -> std::io::Result<Self> {
        Self::spawn_command(binary, "run", env, logs)
    }

    /// `binary <command>` (`run`, `deliver`) with `env` and its HTTP
    /// listener on a free port.
    pub fn spawn_command(
        binary: &Path,
        command: &str,
        env: &[(&str, String)],
        logs: Logs,
    ) -> std::io::Result<Self> {
        let http_port = free_port()?;
        let child = Command::new(binary)
            .arg(command)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .env("HTTP_PORT", http_port.to_string())
            .stdout(Stdio::null())
            .stderr(match logs {
                Logs::Inherit => Stdio::inherit(),
                Logs::Quiet => Stdio::null(),
                Logs::File(path) => Stdio::from(std::fs::File::create(path)?),
            })
            .spawn()?;
        Ok(Self {
            child: Some(child),
            http_port,
            stop_signal: "KILL",
        })
    }

    /// Stop with SIGTERM rather than SIGKILL when dropped.
    pub fn terminate_on_drop(mut self) -> Self {
        self.stop_signal = "TERM";
        self
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "could not send {signal}");
    }

    /// Wait for the process to exit.
    pub async fn wait(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || child.wait().expect("wait"))
            .await
            .expect("waiting for the worker")
    }

    /// GET a path on the worker's HTTP port: the status code and body, or
    /// `None` while nothing listens.
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.http_port))
            .await
            .ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_string())?;
        Some((status, body))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([format!("-{}", self.stop_signal), child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// A port nothing listens on now (the OS picks it; released for the child).
pub fn free_port() -> std::io::Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
}
