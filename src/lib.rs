//! Easel: a self-hosted, asynchronous, multi-tenant image-generation gateway.

pub mod accounts;
pub mod config;
pub mod jobs;
pub mod providers;
pub mod storage;
pub mod store;
