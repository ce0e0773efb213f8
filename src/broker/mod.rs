//! RabbitMQ: the session (connection and channels), the topology, and
//! publishing with confirms.

pub mod publish;
pub mod session;
pub mod subscribe;
pub mod topology;

pub use session::BrokerSession;
pub use topology::Topology;
