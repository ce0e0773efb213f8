//! RabbitMQ: the addresses, the session (connection and channels), the
//! topology, and publishing with confirms.

pub mod addresses;
pub mod dead_letters;
pub mod publish;
pub mod session;
pub mod subscribe;
pub mod topology;

pub use addresses::{BrokerUrls, ConnectionLimits};
pub use session::{BrokerSession, TopologyMode};
pub use topology::{Topology, TopologyError};
