//! A shared list of event ids waiting for a background step.

use std::sync::Mutex;

use crate::domain::EventId;

/// Most ids held. Past it the oldest are dropped, which loses no event: an
/// unmarked or unsent event is still unpublished in the outbox table, and
/// the relay publishes it once it is older than the relay delay.
const MAX_IDS: usize = 100_000;

#[derive(Debug, Default)]
pub struct EventIds {
    ids: Mutex<Vec<EventId>>,
}

impl EventIds {
    pub fn push(&self, ids: impl IntoIterator<Item = EventId>) {
        let mut held = self.lock();
        held.extend(ids);
        if held.len() > MAX_IDS {
            let excess = held.len() - MAX_IDS;
            held.drain(..excess);
        }
    }

    /// Take every id held; give back with [`EventIds::push`] what could not
    /// be handled.
    pub fn take(&self) -> Vec<EventId> {
        std::mem::take(&mut *self.lock())
    }

    /// Take the oldest `limit` ids held, at most; give back with
    /// [`EventIds::push`] what could not be handled.
    pub fn take_up_to(&self, limit: usize) -> Vec<EventId> {
        let mut held = self.lock();
        let taken = limit.min(held.len());
        held.drain(..taken).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EventId>> {
        // A panic while holding the lock cannot leave the list half-changed
        // in a way that matters: every id in it is still a valid id.
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_empties_the_list_and_pushing_gives_back() {
        let ids = EventIds::default();
        let first = EventId::generate();
        ids.push([first]);
        assert_eq!(ids.take(), vec![first]);
        assert!(ids.take().is_empty());
    }

    #[test]
    fn taking_up_to_a_limit_takes_the_oldest_and_leaves_the_rest() {
        let ids = EventIds::default();
        let all: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        ids.push(all.iter().copied());
        assert_eq!(ids.take_up_to(3), all[..3]);
        assert!(!ids.is_empty());
        assert_eq!(ids.take_up_to(3), all[3..]);
        assert!(ids.is_empty());
        assert!(ids.take_up_to(3).is_empty());
    }

    #[test]
    fn past_the_bound_the_oldest_ids_are_dropped() {
        let ids = EventIds::default();
        let all: Vec<EventId> = (0..MAX_IDS + 3).map(|_| EventId::generate()).collect();
        ids.push(all.iter().copied());
        let held = ids.take();
        assert_eq!(held.len(), MAX_IDS);
        assert_eq!(held[0], all[3]);
        assert_eq!(held.last(), all.last());
    }
}
