//! What disconnect-worker's integration tests and its benchmark share, so
//! that both set up the world the same way:
//!
//! - [`services`]: where Postgres and RabbitMQ are;
//! - [`database`]: a database of one's own, cloned from a migrated template;
//! - [`broker`]: connections, topologies with unique names, and their cleanup;
//! - [`cluster`]: a RabbitMQ cluster of its own, from the installed server;
//! - [`otlp`]: an OTLP/HTTP receiver, to see what the worker exports;
//! - [`postgres_pair`]: a Postgres primary and standby of its own, to fail
//!   over;
//! - [`proxy`]: a TCP proxy that cuts, refuses or silently freezes links;
//! - [`server_user`]: an installed server's programs run as its own user;
//! - [`process`]: the worker binary as a child process, with its environment
//!   made from the same names its configuration reads.

pub mod broker;
pub mod cluster;
pub mod database;
pub mod otlp;
pub mod postgres_pair;
pub mod process;
pub mod proxy;
pub mod server_user;
pub mod services;

pub use database::TestDatabase;
pub use process::WorkerProcess;
pub use services::Services;
