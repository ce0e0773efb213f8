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
        let mut env: Vec<(&str, String)> = self.binary_env();
        env.push(("RUN_MIGRATIONS", "false".into()));
        env.extend(extra.iter().map(|(key, value)| (*key, value.to_string())));
        let logs = if std::env::var_os("TEST_LOG").is_some() {
            Logs::Inherit
        } else {
            Logs::Quiet
        };
        WorkerProcess::spawn(BINARY.as_ref(), &env, logs).expect("starting the worker binary")
    }
}
