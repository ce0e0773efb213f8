//! Webhook receivers on loopback, the dispatcher binary, and the official
//! verifiers (`scripts/webhook-verify`: the `standardwebhooks` library and
//! Finch's SDK, in Python).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use disconnect_testkit::process::Logs;
use disconnect_testkit::WorkerProcess;
use serde_json::Value;
use uuid::Uuid;

use super::process::{succeeded, BINARY};
use super::TestContext;

/// The operator's key in every test (32 bytes of 0x2a).
pub const TEST_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: BTreeMap<String, String>,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// What a receiver answers to its n-th request (0-based).
pub type Answer = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    WithHeader(u16, &'static str, String),
    /// Never answers (the dispatcher's timeout ends the attempt).
    Hang,
    /// Answers with this status after a while.
    After(Duration, u16),
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
}

/// An HTTP receiver on 127.0.0.1, recording every request.
pub struct Receiver {
    pub url: String,
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    answer: Arc<Mutex<Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                value.to_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let nth = {
        let mut received = state.received.lock().expect("lock");
        received.push(Received {
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
            at: Instant::now(),
        });
        received.len() - 1
    };
    let answer = state.answer.lock().expect("lock").clone();
    match answer(nth) {
        Reply::Status(code) => status(code).into_response(),
        Reply::WithHeader(code, name, value) => (status(code), [(name, value)], "").into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        Reply::After(wait, code) => {
            tokio::time::sleep(wait).await;
            status(code).into_response()
        }
    }
}

fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).expect("a status code")
}

impl Receiver {
    pub async fn answering(answer: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a receiver");
        let port = listener.local_addr().expect("address").port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Mutex<Answer>> = Arc::new(Mutex::new(Arc::new(answer)));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(ReceiverState {
                received: received.clone(),
                answer: answer.clone(),
            });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            received,
            answer,
            task,
        }
    }

    pub async fn ok() -> Self {
        Self::answering(|_| Reply::Status(200)).await
    }

    /// Answer from now on as `answer` says.
    pub fn answer_with(&self, answer: impl Fn(usize) -> Reply + Send + Sync + 'static) {
        *self.answer.lock().expect("lock") = Arc::new(answer);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Wait until it has received `count` requests; returns them.
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        super::eventually(
            &format!("{count} webhook requests at {}", self.url),
            || async {
                let received = self.received();
                (received.len() >= count).then_some(received)
            },
        )
        .await
    }
}

/// The dispatcher's settings in tests: loopback receivers allowed, plain
/// HTTP, a short schedule without jitter, a queue of the test's own.
pub fn dispatcher_env(context: &TestContext) -> Vec<(&'static str, String)> {
    let mut env = context.binary_env();
    env.extend([
        ("WEBHOOK_SECRET_KEY", TEST_KEY.to_string()),
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8".to_string()),
        ("WEBHOOK_ALLOW_HTTP", "true".to_string()),
        (
            "WEBHOOK_QUEUE",
            format!("{}.webhooks", context.topology.event_exchange),
        ),
        ("WEBHOOK_RETRY_SCHEDULE_SECS", "1,1,1".to_string()),
        ("WEBHOOK_RETRY_JITTER", "0".to_string()),
        ("WEBHOOK_SLOW_DOWN_SECS", "1".to_string()),
        ("WEBHOOK_TIMEOUT_SECS", "5".to_string()),
        ("WEBHOOK_POLL_MILLIS", "100".to_string()),
    ]);
    env
}

impl TestContext {
    /// `disconnect-worker deliver` with the test settings and `extra`.
    pub fn spawn_dispatcher(&self, extra: &[(&str, &str)]) -> WorkerProcess {
        let logs = if std::env::var_os("TEST_LOG").is_some() {
            Logs::Inherit
        } else {
            Logs::Quiet
        };
        self.spawn_dispatcher_logging(extra, logs)
    }

    /// As [`Self::spawn_dispatcher`], its logs where `logs` says.
    pub fn spawn_dispatcher_logging(&self, extra: &[(&str, &str)], logs: Logs) -> WorkerProcess {
        let mut env = dispatcher_env(self);
        env.extend(extra.iter().map(|(key, value)| (*key, value.to_string())));
        WorkerProcess::spawn_command(BINARY.as_ref(), "deliver", &env, logs)
            .expect("starting the dispatcher")
    }

    /// `disconnect-worker webhooks <args>` with the test settings.
    pub fn webhooks(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BINARY);
        command
            .arg("webhooks")
            .args(args)
            .envs(dispatcher_env(self));
        command
    }

    /// Add an endpoint; its id and secret.
    pub fn add_endpoint(&self, client_id: &str, url: &str, headers: &str) -> (Uuid, String) {
        let output = succeeded(self.webhooks(&[
            "add",
            "--client-id",
            client_id,
            "--url",
            url,
            "--headers",
            headers,
            "--json",
        ]));
        let added: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        (
            added["id"].as_str().expect("id").parse().expect("uuid"),
            added["secret"].as_str().expect("secret").to_string(),
        )
    }

    /// `webhooks attempts --json` with `args`.
    pub fn attempts(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["attempts", "--json"];
        all.extend_from_slice(args);
        let output = succeeded(self.webhooks(&all));
        serde_json::from_slice(&output.stdout).expect("JSON")
    }

    /// `webhooks list --json`: the endpoint `id`.
    pub fn endpoint(&self, id: Uuid) -> Value {
        let output = succeeded(self.webhooks(&["list", "--json"]));
        let all: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
        all.into_iter()
            .find(|endpoint| endpoint["id"] == id.to_string())
            .expect("the endpoint is listed")
    }
}

/// Every request verifies with every secret, by the official library of
/// `format` (`standard`: standardwebhooks; `finch`: Finch's SDK).
pub fn verify_with_official_library(format: &str, secrets: &[&str], requests: &[Received]) {
    let input = serde_json::json!({
        "format": format,
        "secrets": secrets,
        "requests": requests
            .iter()
            .map(|request| serde_json::json!({ "headers": request.headers, "body": request.body }))
            .collect::<Vec<_>>(),
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/webhook-verify");
    let mut child = Command::new(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running scripts/webhook-verify");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("writing to the verifier");
    let output = child.wait_with_output().expect("the verifier's output");
    assert!(
        output.status.success(),
        "{format} verification failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The `webhook.endpoint_disabled` events of a test's event exchange.
pub struct Announcements {
    _channel: lapin::Channel,
    consumer: lapin::Consumer,
}

impl Announcements {
    /// The next one within `wait`, as JSON.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        use futures_util::StreamExt;
        let delivery = tokio::time::timeout(wait, self.consumer.next())
            .await
            .ok()??;
        let delivery = delivery.expect("a delivery");
        Some(serde_json::from_slice(&delivery.data).expect("JSON"))
    }
}

impl TestContext {
    /// Subscribe to the announcements of disabled endpoints, before they come.
    pub async fn announcements(&self) -> Announcements {
        let channel = self.channel().await;
        let consumer = disconnect_worker::broker::subscribe::subscribe(
            &channel,
            &self.topology.event_exchange,
            &[disconnect_worker::webhooks::ENDPOINT_DISABLED],
            disconnect_worker::broker::subscribe::Acks::Automatic,
        )
        .await
        .expect("subscribing");
        Announcements {
            _channel: channel,
            consumer,
        }
    }
}

/// The gaps between consecutive requests.
pub fn gaps(received: &[Received]) -> Vec<Duration> {
    received
        .windows(2)
        .map(|pair| pair[1].at.duration_since(pair[0].at))
        .collect()
}
