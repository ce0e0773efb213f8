//! One HTTP attempt: POST the event's bytes with the signature headers,
//! within the attempt timeout, never following a redirect; and what the
//! answer means for the delivery.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::{redirect, Client, StatusCode};

use super::address::AddressPolicy;
use super::resolver::{refusal_in, FilteringResolver};
use super::schedule::{parse_retry_after, Failure};
use super::EndpointUrl;

/// How much of a receiver's answer is kept with the attempt: enough to
/// tell an error page from another, never a whole body.
const EXCERPT_BYTES: usize = 256;

/// The HTTP client every attempt uses: no redirects (a 3xx is a failure, as
/// Standard Webhooks says: following one would send the signed body where
/// the endpoint was not registered), no proxy from the environment (the
/// filter must judge the receiver, not a proxy), names resolved through
/// the address filter.
pub fn client(policy: Arc<AddressPolicy>, timeout: Duration) -> reqwest::Result<Client> {
    Client::builder()
        .redirect(redirect::Policy::none())
        .no_proxy()
        .timeout(timeout)
        .connect_timeout(timeout)
        .dns_resolver(Arc::new(FilteringResolver::new(policy)))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptResult {
    pub verdict: Verdict,
    pub status_code: Option<u16>,
    pub duration: Duration,
    /// Why it failed, in a line (no body, no secret).
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 410 Gone: the receiver asks for no more; the endpoint is disabled.
    Gone,
    /// Anything else: tried again on the schedule.
    Failed { slow_down: bool },
}

impl Verdict {
    /// The `result` label of the attempts metric.
    pub fn label(self, result: &AttemptResult) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Gone => "gone",
            Self::Failed { .. } => match (result.status_code, result.error.as_deref()) {
                (Some(code), _) if (300..400).contains(&code) => "redirect",
                (Some(_), _) => "http_error",
                (None, Some(error)) if error.starts_with("refused") => "refused_address",
                (None, Some(error)) if error.starts_with("timed out") => "timeout",
                _ => "connect_error",
            },
        }
    }
}

impl AttemptResult {
    pub fn failure(&self) -> Failure {
        Failure {
            slow_down: matches!(self.verdict, Verdict::Failed { slow_down: true }),
            retry_after: self.retry_after,
        }
    }

    fn refused(error: String) -> Self {
        Self {
            verdict: Verdict::Failed { slow_down: false },
            status_code: None,
            duration: Duration::ZERO,
            error: Some(format!("refused: {error}")),
            response_excerpt: None,
            retry_after: None,
        }
    }
}

/// POST `body` to `url` with `headers`.
pub async fn attempt(
    client: &Client,
    policy: &AddressPolicy,
    url: &EndpointUrl,
    headers: &[(&'static str, String)],
    body: &str,
) -> AttemptResult {
    // A literal address is not resolved, so the resolver never sees it:
    // judged here, every attempt (the allow-list may have changed since).
    if let Some(address) = url.literal_address() {
        if let Err(refused) = policy.check(address) {
            return AttemptResult::refused(refused.to_string());
        }
    }
    let mut map = HeaderMap::new();
    map.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    map.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("disconnect-worker/", env!("CARGO_PKG_VERSION"))),
    );
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            map.insert(HeaderName::from_static(name), value);
        }
    }
    let started = Instant::now();
    let sent = client
        .post(url.as_url().clone())
        .headers(map)
        .body(body.to_string())
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            let duration = started.elapsed();
            if let Some(refused) = refusal_in(&error) {
                return AttemptResult {
                    duration,
                    ..AttemptResult::refused(refused)
                };
            }
            let timed_out = error.is_timeout();
            return AttemptResult {
                verdict: Verdict::Failed {
                    slow_down: timed_out,
                },
                status_code: None,
                duration,
                error: Some(if timed_out {
                    format!("timed out after {:.1} s", duration.as_secs_f64())
                } else {
                    describe(&error)
                }),
                response_excerpt: None,
                retry_after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, chrono::Utc::now()));
    let excerpt = read_excerpt(&mut response).await;
    let duration = started.elapsed();
    let verdict = if status.is_success() {
        Verdict::Delivered
    } else if status == StatusCode::GONE {
        Verdict::Gone
    } else {
        Verdict::Failed {
            slow_down: matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS
                    | StatusCode::BAD_GATEWAY
                    | StatusCode::GATEWAY_TIMEOUT
            ),
        }
    };
    let error = match verdict {
        Verdict::Delivered => None,
        _ if status.is_redirection() => Some(format!(
            "HTTP {}: redirects are not followed",
            status.as_u16()
        )),
        _ => Some(format!("HTTP {}", status.as_u16())),
    };
    AttemptResult {
        verdict,
        status_code: Some(status.as_u16()),
        duration,
        error,
        response_excerpt: excerpt,
        retry_after,
    }
}

/// The first bytes of the answer's body, as text; the rest is not read
/// (the connection is then not reused, which is the price of not reading a
/// receiver's arbitrarily long error page).
async fn read_excerpt(response: &mut reqwest::Response) -> Option<String> {
    let mut bytes = Vec::new();
    while bytes.len() < EXCERPT_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    if bytes.is_empty() {
        return None;
    }
    bytes.truncate(EXCERPT_BYTES);
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// A transport error in a line: reqwest's outer message says only "error
/// sending request", the cause is further down.
fn describe(error: &reqwest::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    // The URL reqwest puts in its message may hold a receiver's token.
    let line = parts.join(": ");
    match line.find(" for url (") {
        Some(start) => {
            let end = line[start..]
                .find(')')
                .map_or(line.len(), |end| start + end + 1);
            format!("{}{}", &line[..start], &line[end..])
        }
        None => line,
    }
}
