//! When a failed attempt is tried again: Svix's schedule (5 s, 5 min,
//! 30 min, 2 h, 5 h, 10 h, 10 h after each failure) with ±20 % jitter, so
//! an endpoint's backlog does not come back as one burst. A receiver that
//! asks to slow down (429, 502, 504) or does not answer in time waits at
//! least `slow_down`; its `Retry-After` is honoured within [delay, 2 × delay]
//! so that a receiver can stretch the schedule but neither shorten it nor
//! park a delivery for days.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, PartialEq)]
pub struct RetrySchedule {
    /// The wait after the first, second, ... failed attempt; after the last
    /// the delivery has failed.
    pub delays: Vec<Duration>,
    /// ±this fraction of each delay, at random.
    pub jitter: f64,
    /// The least wait after a timeout or a slow-down answer.
    pub slow_down: Duration,
}

/// What the receiver said, as far as the schedule cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// A timeout, 429, 502 or 504.
    pub slow_down: bool,
    pub retry_after: Option<Duration>,
}

impl RetrySchedule {
    /// Comma-separated seconds (`5,300,1800`).
    pub fn parse_delays(setting: &str, value: &str) -> Result<Vec<Duration>, String> {
        let delays = value
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<f64>()
                    .ok()
                    .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs <= 7.0 * 86_400.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        format!("{setting}: `{part}` is not a number of seconds from 0 to 604800")
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if delays.is_empty() {
            return Err(format!(
                "{setting} needs at least one delay (seconds, comma-separated)"
            ));
        }
        Ok(delays)
    }

    /// The total number of attempts: the first and one per delay.
    pub fn attempts(&self) -> u32 {
        u32::try_from(self.delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// After `attempts_made` attempts (the failed one included), the wait
    /// before the next, or `None` when that was the last.
    pub fn next_delay(&self, attempts_made: u32, failure: Failure) -> Option<Duration> {
        let index = usize::try_from(attempts_made.checked_sub(1)?).ok()?;
        let planned = *self.delays.get(index)?;
        let jittered = if self.jitter > 0.0 {
            let factor = rand::rng().random_range((1.0 - self.jitter)..=(1.0 + self.jitter));
            planned.mul_f64(factor.max(0.0))
        } else {
            planned
        };
        let mut delay = if failure.slow_down {
            jittered.max(self.slow_down)
        } else {
            jittered
        };
        if let Some(asked) = failure.retry_after {
            delay = asked.clamp(delay, delay.saturating_mul(2));
        }
        Some(delay)
    }
}

/// A `Retry-After` value: seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    (at.with_timezone(&chrono::Utc) - now).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(delays: &[u64], jitter: f64) -> RetrySchedule {
        RetrySchedule {
            delays: delays.iter().copied().map(Duration::from_secs).collect(),
            jitter,
            slow_down: Duration::from_secs(60),
        }
    }

    const PLAIN: Failure = Failure {
        slow_down: false,
        retry_after: None,
    };

    #[test]
    fn each_failure_waits_its_delay_and_the_last_ends_it() {
        let schedule = schedule(&[5, 300], 0.0);
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(schedule.next_delay(1, PLAIN), Some(Duration::from_secs(5)));
        assert_eq!(
            schedule.next_delay(2, PLAIN),
            Some(Duration::from_secs(300))
        );
        assert_eq!(schedule.next_delay(3, PLAIN), None);
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let schedule = schedule(&[100], 0.2);
        for _ in 0..200 {
            let delay = schedule.next_delay(1, PLAIN).expect("delay");
            assert!(delay >= Duration::from_secs(80) && delay <= Duration::from_secs(120));
        }
    }

    #[test]
    fn slow_down_and_retry_after_stretch_the_wait_within_bounds() {
        let schedule = schedule(&[5, 300], 0.0);
        let slow = Failure {
            slow_down: true,
            retry_after: None,
        };
        assert_eq!(schedule.next_delay(1, slow), Some(Duration::from_secs(60)));
        let asked = |secs| Failure {
            slow_down: false,
            retry_after: Some(Duration::from_secs(secs)),
        };
        assert_eq!(
            schedule.next_delay(2, asked(450)),
            Some(Duration::from_secs(450))
        );
        assert_eq!(
            schedule.next_delay(2, asked(9_999)),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            schedule.next_delay(2, asked(1)),
            Some(Duration::from_secs(300))
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn a_bad_schedule_names_its_setting() {
        assert!(RetrySchedule::parse_delays("S", "5, 300").is_ok());
        assert!(RetrySchedule::parse_delays("S", "")
            .expect_err("empty")
            .contains('S'));
        assert!(RetrySchedule::parse_delays("S", "5,x")
            .expect_err("x")
            .contains("`x`"));
    }
}
