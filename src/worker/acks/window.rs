//! Which acknowledgements one `basic.ack` with `multiple` may carry. Such an
//! ack settles every outstanding delivery of the channel up to its tag, so
//! it may reach no further than the first delivery still being worked on:
//! batches run concurrently on one channel, and a later batch may commit
//! before an earlier one. Pure bookkeeping, no AMQP.

use std::collections::BTreeMap;

/// A delivery tag, as AMQP numbers the deliveries of one channel (from 1,
/// in the order the broker sent them).
pub type DeliveryTag = u64;

/// The AMQP frames that acknowledge what has become ready.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AckFrames {
    /// One `basic.ack(multiple)` up to this tag: every delivery up to it is
    /// committed or settled alone already.
    pub multiple_up_to: Option<DeliveryTag>,
    /// One `basic.ack` each: committed, but behind a delivery still being
    /// worked on. Sent at once rather than held, so a slow batch never keeps
    /// another's deliveries unacknowledged (and its prefetch window full).
    pub single: Vec<DeliveryTag>,
}

impl AckFrames {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.multiple_up_to.is_none() && self.single.is_empty()
    }
}

/// The deliveries of one channel received and not yet acknowledged, in tag
/// order; `true` once ready to be acknowledged.
#[derive(Debug, Default)]
pub struct AckWindow {
    outstanding: BTreeMap<DeliveryTag, bool>,
}

impl AckWindow {
    /// Deliveries handed to a batch. Every delivery taken from the consumer
    /// must be registered before any later one is acknowledged: an
    /// unregistered delivery is not protected from a `multiple` ack.
    pub fn received(&mut self, tags: impl IntoIterator<Item = DeliveryTag>) {
        for tag in tags {
            self.outstanding.insert(tag, false);
        }
    }

    /// A delivery whose own frame (a reject, a nack, or a dead letter's
    /// ack) has been sent: it no longer holds back the ones after it.
    pub fn settled_alone(&mut self, tag: DeliveryTag) {
        self.outstanding.remove(&tag);
    }

    /// `tags` are committed: the frames that acknowledge them, and any
    /// earlier ready deliveries they were waiting behind. The tags in the
    /// result are no longer outstanding, so the caller must send the frames
    /// before it next asks (see `CoalescedAcks`).
    pub fn ready(&mut self, tags: &[DeliveryTag]) -> AckFrames {
        for tag in tags {
            if let Some(ready) = self.outstanding.get_mut(tag) {
                *ready = true;
            }
        }
        let mut frames = AckFrames::default();
        while let Some(entry) = self.outstanding.first_entry() {
            if !*entry.get() {
                break;
            }
            frames.multiple_up_to = Some(*entry.key());
            entry.remove();
        }
        for tag in tags {
            if self.outstanding.remove(tag).is_some() {
                frames.single.push(*tag);
            }
        }
        frames
    }

    /// Deliveries received and not yet acknowledged or settled.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.outstanding.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(multiple_up_to: Option<DeliveryTag>, single: &[DeliveryTag]) -> AckFrames {
        AckFrames {
            multiple_up_to,
            single: single.to_vec(),
        }
    }

    fn window(tags: std::ops::RangeInclusive<DeliveryTag>) -> AckWindow {
        let mut window = AckWindow::default();
        window.received(tags);
        window
    }

    #[test]
    fn batches_committed_in_order_are_acknowledged_with_one_frame_each() {
        let mut window = window(1..=6);
        assert_eq!(window.ready(&[1, 2, 3]), frames(Some(3), &[]));
        assert_eq!(window.ready(&[4, 5, 6]), frames(Some(6), &[]));
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn a_batch_committed_before_an_earlier_one_is_acknowledged_one_by_one() {
        let mut window = window(1..=6);
        // Deliveries 1 to 3 are still being worked on: a multiple ack up to
        // 6 would acknowledge them uncommitted.
        assert_eq!(window.ready(&[4, 5, 6]), frames(None, &[4, 5, 6]));
        assert_eq!(window.ready(&[1, 2, 3]), frames(Some(3), &[]));
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn a_multiple_ack_stops_before_a_delivery_being_settled_alone() {
        let mut window = window(1..=4);
        // 2 is being dead-lettered: its ack is its own, sent later.
        assert_eq!(window.ready(&[1, 3, 4]), frames(Some(1), &[3, 4]));
        window.settled_alone(2);
        assert!(window.ready(&[]).is_empty());
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn a_delivery_settled_alone_lets_the_multiple_ack_reach_past_it() {
        let mut window = window(1..=4);
        window.settled_alone(1);
        window.settled_alone(2);
        assert_eq!(window.ready(&[3, 4]), frames(Some(4), &[]));
    }

    #[test]
    fn a_multiple_ack_never_covers_a_delivery_received_later() {
        let mut window = window(1..=2);
        window.received(3..=4);
        assert_eq!(window.ready(&[1, 2]), frames(Some(2), &[]));
        assert_eq!(window.len(), 2);
    }

    #[test]
    fn a_tag_unknown_to_the_window_is_not_acknowledged() {
        // A delivery of a closed session's channel, say: its window is gone.
        let mut window = window(1..=2);
        assert!(window.ready(&[7]).is_empty());
        assert_eq!(window.len(), 2);
    }
}
