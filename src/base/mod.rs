//! The ground floor: types and helpers every other module shares.
//!
//! Owns: time ([`clock`]), the job and webhook models ([`job`], [`webhook`]), secrets and their
//! sealing ([`secret`]). Must not touch: anything else in the crate. Nothing here imports a
//! module above it, so every capability can depend on it without a loop.

pub mod clock;
pub mod job;
pub mod secret;
pub mod webhook;
