//! Jobs: the model and its status rules, the worker that runs attempts, retry timing, and the
//! maintenance pass that rescues, cancels and expires, and the follow-ups that tell whoever
//! made a job that it ended.
//!
//! Owns: what happens to a job between submit and its terminal status. Must not touch: HTTP
//! or SQL (it speaks to the store through the `Store` trait only).

pub mod followups;
pub mod gate;
pub mod input_image;
pub mod maintenance;
pub mod operations;
pub mod retry;
pub mod worker;
