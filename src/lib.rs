//! Easel: a self-hosted, asynchronous, multi-tenant image-generation gateway.
//!
//! A job's path through the modules:
//!
//! 1. [`api`] authenticates the tenant's key ([`accounts::auth`], cached), validates the
//!    request ([`api::submit_request`]), takes a token from the tenant's rate ([`limits`])
//!    and calls [`store::Store::job_submit`], which writes the idempotency record, the job
//!    (QUEUED) and its first event in one transaction. The client gets `202 {jobId}` at once.
//! 2. A [`jobs::worker`] claims jobs round-robin over tenants ([`store::Store::job_claim`]),
//!    each with a lease and a fencing token, and runs an attempt beside a heartbeat.
//! 3. The attempt calls a [`providers::Provider`] (the local renderer by default), stores the
//!    images through [`storage::ObjectStore`] and ends the attempt with
//!    [`store::Store::job_finish`]: SUCCEEDED, RETRYING (backoff from [`jobs::retry`]) or
//!    FAILED. A worker whose lease was lost cannot write.
//! 4. [`jobs::maintenance`] requeues jobs of dead workers, applies `Cancel-After` and deadlines.
//! 5. Clients read the job through [`api`]; result links are signed by [`storage::urls`].
//!    Every committed status change is announced on the [`events`] bus, and live SSE and
//!    WebSocket streams re-read the job events table from their last event id.
//!    A status change the tenant's webhook wants also wrote an outbox row in its transaction;
//!    the [`webhooks`] dispatcher sends it, signed, with retries.
//!
//! [`config`] loads settings, [`app`] builds the shared parts, [`server`] runs the roles of a
//! process, [`telemetry`] counts what happens for `GET /metrics` and [`cli`] is the `easel`
//! command line.
//!
//! ## Floors
//! Every import points down this list (or stays on its own floor, where noted):
//!
//! 1. [`base`]: time, the job and webhook models, job error codes, secrets, the network guard
//!    for addresses a client supplied. Imports nothing from the crate.
//! 2. Engines: [`store`], [`storage`], [`limits`], [`events`], [`telemetry`]. Each imports
//!    only `base`; none knows another engine.
//! 3. Capabilities: [`accounts`], [`providers`], [`uploads`] (the image library), then
//!    [`keypool`] (which probes through `providers`), then [`jobs`] and [`webhooks`]. They
//!    use the engines through their traits and never import `api`, `app`, `server`,
//!    `config` or `cli`.
//! 4. [`api`] (with [`error`]): HTTP, one file per resource, on top of the capabilities.
//! 5. The composition root: [`config`] (which gathers each module's own section), [`app`] and
//!    [`server`], which build every dependency and hand it in; then [`cli`] on top.
//!
//! [`testing`] holds fake upstreams for tests and benchmarks; it may use any floor below 4.

pub mod accounts;
pub mod api;
pub mod app;
pub mod base;
pub mod cli;
pub mod config;
pub mod error;
pub mod events;
pub mod jobs;
pub mod keypool;
pub mod limits;
pub mod providers;
pub mod server;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod uploads;
pub mod webhooks;
