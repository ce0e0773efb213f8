//! The product's operations, each one Postgres transaction: disconnecting a
//! connection, issuing a token, introspecting a token.

pub mod disconnect;
pub mod introspect;
pub mod issue;

pub use disconnect::{record_disconnect, record_disconnects, Committed, Processed};
pub use introspect::{introspect_token, Introspection};
pub use issue::{issue_token, TokenGrant};
