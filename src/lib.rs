//! Easel: a self-hosted, asynchronous, multi-tenant image-generation gateway.

pub mod accounts;
pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod error;
pub mod jobs;
pub mod limits;
pub mod providers;
pub mod server;
pub mod storage;
pub mod store;
