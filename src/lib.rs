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
//! Every import points down this list; `tests/layout.rs` checks it on every test run.
//!
//! 1. [`base`]: time, the job and webhook models, job error codes, secrets, the network guard
//!    for addresses a client supplied. Imports nothing from the crate.
//! 2. Engines: [`store`], [`storage`], [`limits`], [`telemetry`]. Each imports only `base`;
//!    none knows another.
//! 3. [`events`]: the bus, and the feeds that re-read the store's job events.
//! 4. Capabilities that stand alone: [`accounts`], [`providers`], [`uploads`] (the image
//!    library), then [`ledger`] (prices,
//!    app keys and payments; it makes app keys through `accounts`).
//! 5. [`keypool`]: upstream keys, which it probes through `providers`.
//! 6. [`jobs`] and [`webhooks`]: the worker, maintenance and the dispatcher.
//!    Then, side by side, [`sessions`]: the editor's sessions, their live events and the
//!    follower that answers a generating message when its job ends; [`photo`]: the photo
//!    app's scenes, tasks (batches of jobs) and works; and [`mj_tasks`]: the `/mj` facade's
//!    task objects, buttons and notifyHook calls.
//! 7. [`config`]: gathers each module's own section (the sections live with their owners).
//! 8. [`app`]: builds every dependency from the config and hands it in; nothing below it
//!    imports it.
//! 9. [`api`] (with [`error`]): HTTP, one file per resource, grouped by contract, on `App`.
//! 10. [`server`] runs a process's roles; [`testing`] holds fake upstreams for tests and
//!     benchmarks; [`cli`] is on top.

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
pub mod ledger;
pub mod limits;
pub mod mj_tasks;
pub mod photo;
pub mod providers;
pub mod server;
pub mod sessions;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod uploads;
pub mod webhooks;
