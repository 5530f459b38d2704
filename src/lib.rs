//! Easel: a self-hosted, asynchronous, multi-tenant image-generation gateway.

pub mod limits;
pub mod providers;
