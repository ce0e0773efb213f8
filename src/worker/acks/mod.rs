//! Acknowledgements coalesced per channel: a batch's committed deliveries
//! are acknowledged with one `basic.ack(multiple)` rather than one frame
//! each, when nothing before them on the channel is still being worked on.
//! Every ack used to be its own round trip through lapin's I/O loop and its
//! own command for RabbitMQ's channel process, a large part of what a
//! request cost the worker (see docs/performance.md).

mod window;

use std::sync::{Mutex, PoisonError};

use lapin::options::BasicAckOptions;
use lapin::Channel;

pub use window::DeliveryTag;
use window::{AckFrames, AckWindow};

/// The acknowledgements of one consume channel.
pub struct CoalescedAcks {
    channel: Channel,
    window: Mutex<AckWindow>,
    /// Held from deciding the frames to sending them. Two `multiple` acks
    /// sent out of order would have the later one name a tag already
    /// acknowledged, which RabbitMQ answers by closing the channel
    /// (PRECONDITION_FAILED, unknown delivery tag). Not held by `received`,
    /// so the consume loop never waits on a frame being sent.
    sending: tokio::sync::Mutex<()>,
}

impl CoalescedAcks {
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            window: Mutex::new(AckWindow::default()),
            sending: tokio::sync::Mutex::new(()),
        }
    }

    /// Deliveries taken from the consumer, in the order received, before
    /// their batch starts.
    pub fn received(&self, tags: impl IntoIterator<Item = DeliveryTag>) {
        self.window().received(tags);
    }

    /// A delivery's own settling frame has been sent.
    pub fn settled_alone(&self, tag: DeliveryTag) {
        self.window().settled_alone(tag);
    }

    /// Whether the channel can still carry an acknowledgement.
    pub fn connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Acknowledge `tags`, whose work is committed: in one `multiple` frame
    /// with any earlier ones they waited behind, or one frame each if an
    /// earlier delivery is still being worked on.
    pub async fn ack(&self, tags: &[DeliveryTag]) -> lapin::Result<()> {
        let _sending = self.sending.lock().await;
        let AckFrames {
            multiple_up_to,
            single,
        } = self.window().ready(tags);
        if let Some(tag) = multiple_up_to {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        // Polled in order, so the frames go out in order.
        let singles = single.into_iter().map(|tag| {
            self.channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
        });
        futures_util::future::try_join_all(singles).await?;
        Ok(())
    }

    fn window(&self) -> std::sync::MutexGuard<'_, AckWindow> {
        // The window's state is consistent between calls; a panic elsewhere
        // while it was held does not make it wrong.
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
