//! The worker binary as a child process, killed if the test ends early, and
//! a minimal HTTP client for its endpoints.

use std::process::{Child, Command, ExitStatus, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::TestContext;

pub const BINARY: &str = env!("CARGO_BIN_EXE_disconnect-worker");

pub struct WorkerProcess {
    child: Option<Child>,
    pub http_port: u16,
}

impl TestContext {
    /// `disconnect-worker` with this test's settings plus `extra` variables.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command.args(args).envs(self.binary_env());
        command
    }

    /// Start `disconnect-worker run` with its HTTP listener on a free port.
    pub fn spawn_worker_process(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let http_port = free_port();
        let child = self
            .command(&["run"])
            .env("HTTP_PORT", http_port.to_string())
            .env("RUN_MIGRATIONS", "false")
            .envs(extra.iter().copied())
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("starting the worker binary");
        WorkerProcess {
            child: Some(child),
            http_port,
        }
    }
}

impl WorkerProcess {
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
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A port nothing listens on now (the OS picks it; released for the child).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}
