//! The ground floor: types and helpers every other module shares.
//!
//! Owns: the process allocator ([`allocator`]), time ([`clock`]), the job and its [`operation`], ledger, webhook and end-user models ([`job`], [`ledger`],
//! [`webhook`], [`user`]), the catalogue of job error codes ([`job_errors`]), secrets and their
//! sealing ([`secret`]), the network guard for addresses a client supplied ([`netguard`]) and
//! the redaction of URLs for logs ([`redact`]), what configuration sections share
//! ([`settings`]). Must not touch: anything else in the crate.
//! Nothing here imports a module above it, so every capability can depend on it without a
//! loop.

pub mod allocator;
pub mod clock;
pub mod image;
pub mod job;
pub mod job_errors;
pub mod ledger;
pub mod netguard;
pub mod operation;
pub mod redact;
pub mod secret;
pub mod settings;
pub mod user;
pub mod webhook;
