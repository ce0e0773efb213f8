//! Domain types, parsed once at the edge: nothing past the decoder handles raw
//! strings, raw JSON or bare UUIDs.

pub mod authorization;
pub mod contract;
pub mod entity;
pub mod event;
pub mod ids;
pub mod outcome;
pub mod rejection;
pub mod request;
pub mod scope;
pub mod stored_label;
mod text_column;
pub mod token;

pub use authorization::Authorizations;
pub use entity::{EntityRef, EntityStatus};
pub use event::{DisconnectionKey, EventContext, OutcomeEvent};
pub use ids::{ConnectionId, EntityId, EventId, RequestId, TokenId};
pub use outcome::{ConnectionRef, ConnectionStatus, Outcome, OutcomeKind};
pub use rejection::{Rejection, RejectionCode};
pub use request::{DisconnectRequest, Provenance};
pub use scope::{ClientId, CompanyId, ReasonCode, Scope, Target};
pub use stored_label::StoredLabel;
pub use token::{AccessToken, IssuedToken, TokenHash};
