//! Webhook rows as the rest of Easel sees them: a tenant's endpoint, a delivery of the outbox,
//! and what one attempt reports back to the store.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::base::job::JobStatus;

use crate::base::clock::Millis;

/// Which status changes a tenant's receiver hears about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvents {
    /// SUCCEEDED, FAILED and CANCELED (the origin's "when a job ends").
    #[default]
    Terminal,
    /// Every status change, QUEUED and RUNNING included.
    All,
}

impl WebhookEvents {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvents::Terminal => "terminal",
            WebhookEvents::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<WebhookEvents> {
        match s {
            "terminal" => Some(WebhookEvents::Terminal),
            "all" => Some(WebhookEvents::All),
            _ => None,
        }
    }
}

/// A signing secret sealed by [`crate::base::secret::Sealer`], with its fingerprint.
#[derive(Clone, PartialEq)]
pub struct SealedSecret {
    pub sealed: Vec<u8>,
    pub fingerprint: String,
}

impl fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSecret({})", self.fingerprint)
    }
}

/// A tenant's webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantWebhook {
    pub tenant_id: String,
    /// `None`: only jobs with their own `webhookUrl` get deliveries.
    pub url: Option<String>,
    pub events: WebhookEvents,
    /// Cleared by a 410 Gone from the receiver.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub secret: SealedSecret,
    /// The secret before the last rotation, still signing until `prev_secret_expires_at`.
    pub prev_secret: Option<SealedSecret>,
    pub prev_secret_expires_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// What `PUT /v1/webhook` and `set-webhook` write.
#[derive(Debug, Clone)]
pub struct WebhookSet {
    pub url: Option<String>,
    pub events: WebhookEvents,
    /// Used only when the tenant has no secret yet (the first set creates it).
    pub secret_if_missing: SealedSecret,
}

/// A delivery's place in its life: `pending` → `delivering` → `succeeded` | `failed` |
/// `disabled` (the receiver answered 410), or back to `pending` for the next attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivering,
    Succeeded,
    Failed,
    Disabled,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 5] = [
        DeliveryState::Pending,
        DeliveryState::Delivering,
        DeliveryState::Succeeded,
        DeliveryState::Failed,
        DeliveryState::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivering => "delivering",
            DeliveryState::Succeeded => "succeeded",
            DeliveryState::Failed => "failed",
            DeliveryState::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryState> {
        DeliveryState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose URL a delivery goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverySource {
    /// The job's own `webhookUrl`.
    Job,
    /// The tenant's webhook URL.
    Tenant,
}

impl DeliverySource {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliverySource::Job => "job",
            DeliverySource::Tenant => "tenant",
        }
    }

    pub fn parse(s: &str) -> Option<DeliverySource> {
        match s {
            "job" => Some(DeliverySource::Job),
            "tenant" => Some(DeliverySource::Tenant),
            _ => None,
        }
    }
}

/// One row of the outbox: a status change of a job, to be told to one receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Insertion order; pagination uses it.
    pub seq: i64,
    /// `evt_` + ULID: the payload's `eventId` and the `webhook-id` header.
    pub id: String,
    pub job_id: String,
    pub tenant_id: String,
    pub url: String,
    pub source: DeliverySource,
    /// The job's status in the event (the payload's `status`).
    pub status: JobStatus,
    /// The job's error message in the event (the payload's `error`).
    pub error: Option<String>,
    /// Object-store keys of the results (SUCCEEDED only); links are signed at send time.
    pub result_keys: Vec<String>,
    /// When the status changed (the payload's `timestamp`).
    pub event_at: Millis,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: Millis,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub last_latency_ms: Option<u64>,
    pub last_attempt_at: Option<Millis>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub delivered_at: Option<Millis>,
    /// A body sent as is instead of the contract payload (a `/mj` task's notifyHook call).
    pub body: Option<String>,
}

/// A delivery handed to a dispatcher, with the claim's fencing token and the tenant's live
/// signing secrets (sealed), newest first.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub claim_token: i64,
    pub secrets: Vec<SealedSecret>,
}

/// What a dispatcher asks a claim for (see [`crate::store::Store::webhook_claim`]).
#[derive(Debug, Clone)]
pub struct DeliveryClaim {
    /// The dispatcher's id, recorded as the lease's owner.
    pub owner: String,
    /// At most this many deliveries.
    pub max: u32,
    pub lease: Duration,
    /// At most this many in flight to one URL, across all dispatchers.
    pub per_endpoint: u32,
}

/// How an attempt ended, as the dispatcher decided.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered,
    /// Back to `pending`, due again at this time.
    Retry { next_attempt_at: Millis },
    /// Out of attempts (or undeliverable): `failed`.
    Failed,
    /// 410 Gone: this delivery and the tenant's other pending deliveries to the same URL are
    /// `disabled`; if the URL is the tenant's webhook URL, the tenant's webhook is disabled.
    Gone,
}

/// What one attempt reports to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u64,
    pub at: Millis,
}

/// Filter and position of one page of a delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryListQuery {
    pub tenant_id: String,
    pub job_id: Option<String>,
    pub state: Option<DeliveryState>,
    pub limit: u32,
    /// Only deliveries with `seq` below this (the previous page's last).
    pub before_seq: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub has_more: bool,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplayOutcome {
    /// Back to `pending`, due now, with a fresh attempt budget.
    Queued(Box<Delivery>),
    /// An attempt is under way right now; replaying it would send it twice at once.
    InFlight,
    NotFound,
}
