//! Domain types, parsed once at the edge: nothing past the decoder handles raw
//! strings or JSON.

pub mod event;
pub mod outcome;
pub mod request;
pub mod token;

pub use event::OutcomeEvent;
pub use outcome::{ConnectionRef, Outcome};
pub use request::{DisconnectRequest, Rejection, RejectionCode, RequestId};
pub use token::{AccessToken, IssuedToken, TokenHash};
