//! Queries on the webhook tables: endpoints, the events taken in, their
//! deliveries and every attempt.

pub mod attempts;
pub mod deliveries;
pub mod endpoints;
