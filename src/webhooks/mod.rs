//! Webhooks: tells a tenant's receiver when its jobs change, signed, at least once.
//!
//! Owns: delivery, signing, retries, the SSRF rules for receivers, and the management of a
//! tenant's endpoint and secrets. Must not touch: job state. The outbox rows it sends are
//! written by the store in the transaction of each status change (see migration
//! `0003_webhooks.sql`); the [`dispatcher`] only reads their snapshot of the event and
//! records its attempts, so a slow or broken receiver can never hold a job back.
//!
//! The path of one event: a status change inserts a job event → the outbox trigger inserts a
//! `webhook_deliveries` row (terminal statuses, or all of them if the tenant subscribed to
//! `all`; to the job's `webhookUrl`, else the tenant's URL) → a dispatcher claims it with a
//! lease → POSTs the contract payload with `X-Signature` and the Standard Webhooks headers
//! ([`signing`]) to the address it checked ([`target`]) → records the attempt: 2xx ends it,
//! 410 Gone disables the endpoint, anything else is retried on the Standard Webhooks schedule
//! with jitter (and never sooner than a `Retry-After`), until the last attempt fails it.

pub mod model;
