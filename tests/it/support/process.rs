//! The worker binary as a child process, through the test kit.

use std::process::Command;

use disconnect_testkit::process::Logs;
use disconnect_testkit::WorkerProcess;

use super::TestContext;

pub const BINARY: &str = env!("CARGO_BIN_EXE_disconnect-worker");

impl TestContext {
    /// `disconnect-worker` with this test's settings.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command.args(args).envs(self.binary_env());
        command
    }

    /// Start `disconnect-worker run` with this test's settings plus `extra`
    /// variables, its HTTP listener on a free port; killed when dropped.
    pub fn spawn_worker_process(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let logs = if std::env::var_os("TEST_LOG").is_some() {
            Logs::Inherit
        } else {
            Logs::Quiet
        };
        self.spawn_worker_process_logging(extra, logs)
    }

    /// As [`Self::spawn_worker_process`], with its logs where `logs` says.
    pub fn spawn_worker_process_logging(
        &self,
        extra: &[(&str, &str)],
        logs: Logs,
    ) -> WorkerProcess {
        let mut env: Vec<(&str, String)> = self.binary_env();
        env.push(("RUN_MIGRATIONS", "false".into()));
        env.extend(extra.iter().map(|(key, value)| (*key, value.to_string())));
        WorkerProcess::spawn(BINARY.as_ref(), &env, logs).expect("starting the worker binary")
    }
}

/// Wait until a worker process answers `/readyz` with 200.
pub async fn until_ready(worker: &WorkerProcess) {
    super::eventually("the worker to be ready", || async {
        matches!(worker.get("/readyz").await, Some((200, _))).then_some(())
    })
    .await;
}

/// Run `command` to its end and return its output, which must be a
/// success (its stderr is the failure message otherwise).
pub fn succeeded(mut command: Command) -> std::process::Output {
    let output = command.output().expect("running the binary");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A JSON log file written by a worker with `LOG_FORMAT=json`: one object
/// per line.
pub fn json_log_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The message of a JSON log line.
pub fn message(line: &serde_json::Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

impl TestContext {
    /// A file for a worker's logs, removed with the test's temporary files.
    pub fn log_file(&self, name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("{}-{name}.log", self.database.name))
    }
}

/// Run `command` to its end, which must come within [`super::PATIENCE`]: for
/// start-ups that must fail rather than wait.
pub async fn run_to_exit(mut command: Command) -> std::process::Output {
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().expect("starting the binary");
    let pid = child.id();
    let output = tokio::time::timeout(
        super::PATIENCE,
        tokio::task::spawn_blocking(move || child.wait_with_output()),
    )
    .await;
    match output {
        Ok(output) => output.expect("joined").expect("waited"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the process did not exit within {:?}", super::PATIENCE)
        }
    }
}
