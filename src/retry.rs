//! Retry policies: exponential backoff with jitter, through `backon`.

use std::time::Duration;

use backon::ExponentialBuilder;

#[derive(Debug, Clone)]
pub struct RetrySettings {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Attempts at an operation failing for a reason that is not an outage.
    pub max_attempts: usize,
}

impl RetrySettings {
    /// For outages (database or broker unreachable): retried until they end or
    /// the worker is told to stop, at most `max_delay` apart.
    pub fn until_recovered(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
    }

    /// For failures that may or may not pass: a few attempts, then give up.
    pub fn bounded(&self) -> ExponentialBuilder {
        self.until_recovered()
            .with_max_times(self.max_attempts.saturating_sub(1))
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backon::BackoffBuilder;

    #[test]
    fn bounded_backoff_allows_max_attempts_in_all() {
        let settings = RetrySettings {
            max_attempts: 3,
            ..RetrySettings::default()
        };
        // The first attempt is not a retry: two delays for three attempts.
        assert_eq!(settings.bounded().build().count(), 2);
    }

    #[test]
    fn outage_backoff_never_gives_up_and_never_exceeds_the_cap() {
        let settings = RetrySettings {
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(200),
            max_attempts: 1,
        };
        let delays: Vec<Duration> = settings.until_recovered().build().take(1000).collect();
        assert_eq!(delays.len(), 1000);
        // Jitter adds up to one more base delay on top of the cap.
        assert!(delays
            .iter()
            .all(|delay| *delay <= Duration::from_millis(400)));
    }
}
