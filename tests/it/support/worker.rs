//! An in-process worker, stopped when dropped.

use disconnect_worker::config::RunSettings;
use disconnect_worker::worker;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct RunningWorker {
    pub shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningWorker {
    pub fn spawn(settings: RunSettings) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker::run(settings, None, shutdown.clone()));
        Self {
            shutdown,
            task: Some(task),
        }
    }

    /// Ask for a graceful stop and return how the worker ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.expect("the worker task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
