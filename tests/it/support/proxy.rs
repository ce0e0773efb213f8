//! The test kit's TCP proxy: cuts, refusals and silent freezes of the links
//! between a worker and a service.

pub use disconnect_testkit::proxy::Proxy;
