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

use crate::base::ledger::Difference;
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
