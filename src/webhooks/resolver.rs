//! The HTTP client's name resolution, with the address filter inside it:
//! the addresses a name resolves to are checked here, and only those that
//! pass are handed to the connector, so the address checked is the address
//! dialled (a name cannot resolve to a public address for a check and to a
//! private one for the connection). Names resolve through the system's
//! resolver (getaddrinfo, on a blocking thread), so the pod's `/etc/hosts`,
//! search domains and `ndots` apply as they do for every other client.

use std::net::SocketAddr;
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::address::{AddressPolicy, RefusedAddress};

pub struct FilteringResolver {
    policy: Arc<AddressPolicy>,
}

impl FilteringResolver {
    pub fn new(policy: Arc<AddressPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused: Option<RefusedAddress> = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|address| match policy.check(address.ip()) {
                    Ok(()) => true,
                    Err(refusal) => {
                        refused.get_or_insert(refusal);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), refused) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(refusal)) => Err(Box::new(NameRefused { host, refusal }) as _),
                (true, None) => Err(format!("{host} resolved to no address").into()),
            }
        })
    }
}

/// Every address of a name is refused.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to refused addresses: {refusal}")]
pub struct NameRefused {
    pub host: String,
    pub refusal: RefusedAddress,
}

/// The refusal inside an HTTP client's error, if that is what it was.
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<NameRefused>() {
            return Some(refused.to_string());
        }
        current = error.source();
    }
    None
}
