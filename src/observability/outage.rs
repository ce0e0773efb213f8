//! Logging an outage as an operator wants to read it: one line when it
//! starts, a reminder while it lasts, one line when it ends. Every task that
//! finds the same server unreachable reports to one `Outage`, so a Postgres
//! restart under load is three lines, not one per failed attempt; the retries
//! themselves are counted in `disconnect_worker_retries_total`.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a lasting outage is logged again.
const REMINDER_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Outage {
    /// What is unreachable, for the log line: "database", "broker".
    server: &'static str,
    /// A cheap check for the common case, nothing wrong, on every success.
    ongoing: AtomicBool,
    state: Mutex<Option<OutageState>>,
}

#[derive(Debug, Clone, Copy)]
struct OutageState {
    since: Instant,
    last_logged: Instant,
    failures: u64,
}

/// What [`Outage`] logs for an event, decided apart from the logging so the
/// rules are tested on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Report {
    Started,
    Ongoing { failures: u64, for_secs: u64 },
    Ended { failures: u64, after_secs: u64 },
    Nothing,
}

impl Outage {
    pub fn new(server: &'static str) -> Self {
        Self {
            server,
            ongoing: AtomicBool::new(false),
            state: Mutex::new(None),
        }
    }

    /// A call to the server failed because it is unreachable.
    pub fn failed(&self, error: &dyn Display) {
        match self.record_failure(Instant::now()) {
            Report::Started => tracing::warn!(
                server = self.server,
                error = %error,
                "{} unavailable; retrying until it answers",
                self.server
            ),
            Report::Ongoing { failures, for_secs } => tracing::warn!(
                server = self.server,
                error = %error,
                outage.failures = failures,
                outage.seconds = for_secs,
                "{} still unavailable",
                self.server
            ),
            Report::Ended { .. } | Report::Nothing => {}
        }
    }

    /// A call to the server, made just now, succeeded.
    pub fn recovered(&self) {
        self.recovered_since(Instant::now());
    }

    /// A call to the server that started at `attempt_started` succeeded.
    /// It ends an outage only if it started after the outage did: a call
    /// already in flight when the server went away may still finish, and
    /// says nothing about the server now. Returns whether the server counts
    /// as available.
    pub fn recovered_since(&self, attempt_started: Instant) -> bool {
        if !self.ongoing.load(Ordering::Relaxed) {
            return true;
        }
        match self.record_success(Instant::now(), attempt_started) {
            Report::Ended {
                failures,
                after_secs,
            } => {
                tracing::info!(
                    server = self.server,
                    outage.failures = failures,
                    outage.seconds = after_secs,
                    "{} available again",
                    self.server
                );
                true
            }
            Report::Nothing => false,
            Report::Started | Report::Ongoing { .. } => true,
        }
    }

    fn record_failure(&self, now: Instant) -> Report {
        let mut state = self.lock();
        match state.as_mut() {
            None => {
                *state = Some(OutageState {
                    since: now,
                    last_logged: now,
                    failures: 1,
                });
                self.ongoing.store(true, Ordering::Relaxed);
                Report::Started
            }
            Some(outage) => {
                outage.failures += 1;
                if now.duration_since(outage.last_logged) < REMINDER_INTERVAL {
                    return Report::Nothing;
                }
                outage.last_logged = now;
                Report::Ongoing {
                    failures: outage.failures,
                    for_secs: now.duration_since(outage.since).as_secs(),
                }
            }
        }
    }

    fn record_success(&self, now: Instant, attempt_started: Instant) -> Report {
        let mut state = self.lock();
        match *state {
            Some(outage) if attempt_started < outage.since => Report::Nothing,
            Some(outage) => {
                *state = None;
                self.ongoing.store(false, Ordering::Relaxed);
                Report::Ended {
                    failures: outage.failures,
                    after_secs: now.duration_since(outage.since).as_secs(),
                }
            }
            None => {
                self.ongoing.store(false, Ordering::Relaxed);
                Report::Nothing
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OutageState>> {
        // The state is plain data, valid whatever a panicking holder did.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_when_it_starts_every_reminder_interval_and_when_it_ends() {
        let outage = Outage::new("database");
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);

        assert_eq!(outage.record_failure(at(0)), Report::Started);
        for second in 1..30 {
            assert_eq!(outage.record_failure(at(second)), Report::Nothing);
        }
        assert_eq!(
            outage.record_failure(at(30)),
            Report::Ongoing {
                failures: 31,
                for_secs: 30
            }
        );
        assert_eq!(outage.record_failure(at(45)), Report::Nothing);
        assert_eq!(
            outage.record_success(at(50), at(50)),
            Report::Ended {
                failures: 32,
                after_secs: 50
            }
        );
        assert_eq!(outage.record_success(at(51), at(51)), Report::Nothing);
        assert_eq!(
            outage.record_failure(at(60)),
            Report::Started,
            "a new outage"
        );
    }

    #[test]
    fn a_call_in_flight_when_the_outage_started_does_not_end_it() {
        let outage = Outage::new("database");
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);

        assert_eq!(outage.record_failure(at(10)), Report::Started);
        assert_eq!(
            outage.record_success(at(11), at(9)),
            Report::Nothing,
            "started before the outage"
        );
        assert_eq!(
            outage.record_failure(at(12)),
            Report::Nothing,
            "the same outage"
        );
        assert_eq!(
            outage.record_success(at(13), at(13)),
            Report::Ended {
                failures: 2,
                after_secs: 3
            }
        );
    }
}
