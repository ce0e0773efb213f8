//! The product's operations, each one Postgres transaction: disconnecting
//! (a batch of requests, or a chunk of a fan-out), issuing a token,
//! introspecting a token, previewing a request.

pub mod disconnect;
pub mod fanout;
pub mod introspect;
pub mod issue;
pub mod preview;

pub use disconnect::{record_disconnect, record_disconnects, Committed, Policy, Processed};
pub use introspect::{introspect_token, Introspection};
pub use issue::{issue_token, TokenGrant};
