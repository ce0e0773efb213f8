//! A replica of the fault suite: the worker binary at its default settings
//! (but the test's names, and the grant the workload's wide requests need),
//! logging JSON to a file, as two or more run side by side in production.

use std::path::PathBuf;

use disconnect_testkit::process::{worker_env, Logs};
use disconnect_testkit::WorkerProcess;

use super::process::{json_log_lines, message, BINARY};
use super::{eventually, scraped, TestContext};

/// A replica: the binary at its defaults (but the test's names and the
/// grant the workload's wide requests need), logging JSON to a file.
pub struct Replica {
    pub process: WorkerProcess,
    pub log: PathBuf,
}

impl Replica {
    pub fn start(test: &TestContext, name: &str, database_url: &str, amqp_url: &str) -> Self {
        let log = test.log_file(name);
        let mut env = worker_env(database_url, amqp_url, &test.topology);
        env.extend([
            ("AUTHORIZED_PUBLISHERS", "guest:*".to_string()),
            ("RUN_MIGRATIONS", "false".to_string()),
            ("LOG_FORMAT", "json".to_string()),
            ("RUST_LOG", "info".to_string()),
        ]);
        let process = WorkerProcess::spawn(BINARY.as_ref(), &env, Logs::File(log.clone()))
            .expect("starting the worker binary");
        Self { process, log }
    }

    pub async fn ready(&self) -> bool {
        matches!(self.process.get("/readyz").await, Some((200, _)))
    }

    pub async fn wait_ready(&self) {
        eventually("the replica to be ready", || async {
            self.ready().await.then_some(())
        })
        .await;
    }

    /// Requests this replica settled so far, by its own metrics.
    pub async fn settled(&self) -> f64 {
        let Some((_, scrape)) = self.process.get("/metrics").await else {
            return 0.0;
        };
        scrape
            .lines()
            .filter(|line| line.starts_with("disconnect_worker_requests_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub async fn metric(&self, series: &str) -> f64 {
        scraped(&self.process, series).await
    }

    pub fn messages(&self) -> Vec<String> {
        json_log_lines(&self.log)
            .iter()
            .map(|line| message(line).to_string())
            .collect()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}
