//! The credit ledger as a capability (DESIGN decision 9): what a job costs and who pays it
//! ([`pricing`]), the Midjourney app keys with their token quotas ([`mj`]), recharge orders and
//! the signed payment notifications that pay them ([`payments`]), and the typed refusal every
//! contract maps to its own error form ([`InsufficientCredits`]).
//!
//! Owns: prices and their defaults, the payer rules, app keys' token arithmetic, payment
//! verification. Must not touch: HTTP, SQL, or job state: the store holds, settles and
//! releases a job's price in the transactions of its status changes, and this module only
//! decides the [`Charge`](crate::base::ledger::Charge) that `job_submit` carries.

pub mod mj;
pub mod payments;
pub mod pricing;

use serde_json::{json, Value};

use crate::base::clock::now_millis;
use crate::base::ledger::{AccountRef, Difference, Entry, EntryKind, NewEntry, PostOutcome};
use crate::store::{Store, StoreResult};

/// An account could not pay for what was asked; nothing was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InsufficientCredits {
    pub required: i64,
    pub current: i64,
}

impl InsufficientCredits {
    pub fn shortage(&self) -> i64 {
        (self.required - self.current).max(0)
    }

    /// The job API's message (`402 {"error": "INSUFFICIENT_CREDITS", "message": ...}`).
    pub fn message(&self) -> String {
        format!(
            "this job costs {} credits and the account has {}",
            self.required, self.current
        )
    }

    /// The photo contract's body (HTTP 400).
    pub fn photo_body(&self) -> Value {
        json!({
            "success": false,
            "message": "积分不足",
            "data": {
                "required": self.required,
                "current": self.current,
                "shortage": self.shortage(),
            },
        })
    }
}

/// The Midjourney contract's refusal (HTTP 429, `{"detail": ...}`).
pub const MJ_TOKEN_LIMIT_DETAIL: &str = "Token limit exceeded. Please contact administrator.";

/// `easel ledger check`: every cached balance and every job's hold recomputed from the
/// entries; empty when the ledger adds up.
pub async fn check(store: &dyn Store) -> StoreResult<Vec<Difference>> {
    store.ledger_check().await
}

/// An account named the way operators write it: `tenant`, `user:<id>` or `key:<api key id>`.
pub fn parse_account(tenant_id: &str, name: &str) -> Option<AccountRef> {
    if name == "tenant" {
        return Some(AccountRef::tenant(tenant_id));
    }
    match name.split_once(':') {
        Some(("user", id)) if !id.is_empty() => Some(AccountRef::user(tenant_id, id)),
        Some(("key", id)) if !id.is_empty() => Some(AccountRef::app_key(tenant_id, id)),
        _ => None,
    }
}

/// A hand-made change of a balance.
#[derive(Debug, Clone)]
pub struct Adjustment {
    pub account: AccountRef,
    /// Credits to add (negative: to remove; a gift must add).
    pub amount: i64,
    /// A `gift` entry rather than an `adjustment`.
    pub gift: bool,
    pub reason: String,
    /// Who made it (an admin's id, `cli`).
    pub actor: String,
    /// The caller's idempotency key, so a retried request adjusts once; a fresh one if `None`.
    pub idem_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error("{0}")]
    Invalid(&'static str),
    #[error("the balance is {available}; it cannot go below zero")]
    Insufficient { available: i64 },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Writes an admin's `adjustment` or `gift` entry with its reason and actor; the entry
/// (the first one, for a key used before).
pub async fn adjust(store: &dyn Store, a: Adjustment) -> Result<Entry, AdjustError> {
    if a.amount == 0 || (a.gift && a.amount < 0) {
        return Err(AdjustError::Invalid(
            "the amount must not be 0, and a gift must be positive",
        ));
    }
    if a.reason.trim().is_empty() || a.reason.chars().count() > 500 {
        return Err(AdjustError::Invalid(
            "a reason of 1-500 characters is required",
        ));
    }
    let entry = NewEntry {
        account: a.account,
        kind: if a.gift {
            EntryKind::Gift
        } else {
            EntryKind::Adjustment
        },
        amount: a.amount,
        idem_key: a
            .idem_key
            .map(|k| format!("manual:{k}"))
            .unwrap_or_else(|| format!("manual:{}", ulid::Ulid::new())),
        reason: Some(a.reason),
        actor: Some(a.actor),
        at: now_millis(),
    };
    match store.ledger_post(entry).await? {
        PostOutcome::Posted(e) | PostOutcome::Duplicate(e) => Ok(e),
        PostOutcome::Insufficient { available, .. } => Err(AdjustError::Insufficient { available }),
    }
}
