//! What each call's outcome does to the key it used, and an operator's enable / disable.
//!
//! Owns: turning a classified [`ProviderError`] into an [`Outcome`], and applying it under the
//! pool's lock: counters, cool-downs, daily-quota parking, the breaker, and disabling a key
//! (in memory and in the store). Must not touch: which key a call gets ([`super::selection`]).
//! It matches on the catalogue's codes ([`crate::base::job_errors`]), never on one
//! provider's own.
//!
//! # Policy
//! * **429 (`UPSTREAM_RATE_LIMITED`)** is a rate signal, not a health signal: the key cools
//!   down for the upstream's `Retry-After` (or 5 s, doubling with each consecutive 429 that
//!   carries none, up to `max_cooldown`) and the breaker does not count it. So no number of
//!   429s opens a breaker; they only slow the key down.
//! * **Daily quota (`UPSTREAM_QUOTA_EXHAUSTED_DAILY`)** parks the key's whole project (or the
//!   key alone if it has none) until the next daily reset: midnight Pacific time, which is
//!   when Google resets per-day quotas. The offset is fixed (UTC-8 by default, configurable):
//!   under daylight saving time that unparks one hour late, which is the safe side. A daily
//!   429 within a grace period after the reset parks only until the grace ends, so a reset
//!   that lands a little late upstream does not cost a whole day.
//! * **5xx, timeouts, connection errors, malformed bodies** are failures for the breaker (and
//!   a `Retry-After` on them is honoured as a cool-down too).
//! * **Key rejected (401/403)** disables the key at once, in memory and in the store
//!   (`enabled = false`, `last_error` = the reason). [`KeyPool::enable`] brings it back without
//!   a restart, and [`KeyPool::probe_disabled`] re-tests the keys the pool disabled itself
//!   (keys an operator disabled, with no `last_error`, are left alone).
//! * **Final errors and content blocks** are the request's fault and say nothing about the key.

use std::time::Duration;

use super::breaker::BreakerState;
use super::{micros, Inner, KeyEntry, KeyLease, KeyPool, KeyPoolError};
use crate::base::clock::Millis;
use crate::base::job_errors;
use crate::providers::ProviderError;

/// Longest error text kept per key (upstream messages can be long).
const MAX_ERROR_CHARS: usize = 500;

/// When per-day upstream quotas reset, as a fixed offset from UTC and an hour of that day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyReset {
    /// Minutes east of UTC; Google resets at midnight Pacific time: -480 (UTC-8).
    pub utc_offset_minutes: i32,
    /// Hour of the local day at which the reset happens (0-23).
    pub hour: u32,
    /// A daily-quota 429 this soon after a reset parks only until the grace ends.
    pub grace: Duration,
}

impl Default for DailyReset {
    fn default() -> Self {
        DailyReset {
            utc_offset_minutes: -8 * 60,
            hour: 0,
            grace: Duration::from_secs(10 * 60),
        }
    }
}

impl DailyReset {
    /// Until when (Unix milliseconds) a project whose daily quota ran out at `now` is parked.
    pub fn park_until(&self, now: Millis) -> Millis {
        const DAY: i64 = 86_400_000;
        let shift =
            i64::from(self.utc_offset_minutes) * 60_000 - i64::from(self.hour.min(23)) * 3_600_000;
        let since_reset = (now + shift).rem_euclid(DAY);
        let grace = i64::try_from(self.grace.as_millis())
            .unwrap_or(DAY)
            .min(DAY);
        let last_reset = now - since_reset;
        if since_reset < grace {
            last_reset + grace
        } else {
            last_reset + DAY
        }
    }
}

/// What one provider call said about the key it used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// 429 on a short-term rate: cool down, not a health failure.
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// 429 on a per-day quota: park the project until the daily reset.
    DailyQuotaExhausted,
    /// 5xx, timeout, connection error, malformed body: counts against the breaker.
    Failure {
        error: String,
        retry_after: Option<Duration>,
    },
    /// 401/403: disable the key.
    KeyRejected {
        message: String,
    },
    /// The request's own fault (bad request, safety block): nothing about the key.
    Neutral,
}

impl Outcome {
    /// Classifies a provider error by its kind and its stable `code`.
    pub fn from_error(err: &ProviderError) -> Outcome {
        match err {
            ProviderError::Retryable { code, .. }
                if code == job_errors::UPSTREAM_QUOTA_EXHAUSTED_DAILY =>
            {
                Outcome::DailyQuotaExhausted
            }
            ProviderError::Retryable {
                code, retry_after, ..
            } if code == job_errors::UPSTREAM_RATE_LIMITED => Outcome::RateLimited {
                retry_after: *retry_after,
            },
            ProviderError::Retryable { retry_after, .. } => Outcome::Failure {
                error: err.to_string(),
                retry_after: *retry_after,
            },
            ProviderError::KeyRejected { .. } => Outcome::KeyRejected {
                message: err.to_string(),
            },
            ProviderError::Final { .. } | ProviderError::ContentBlocked { .. } => Outcome::Neutral,
        }
    }

    /// The outcome of a finished provider call.
    pub fn of<T>(result: &Result<T, ProviderError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(err) => Outcome::from_error(err),
        }
    }
}

impl KeyEntry {
    fn cool_down(&mut self, until: u64) {
        self.cooldown_until = Some(self.cooldown_until.map_or(until, |t| t.max(until)));
    }

    /// Back to a clean, enabled key (operator or probe re-enabled it).
    pub(super) fn revive(&mut self) {
        self.key.enabled = true;
        self.last_error = None;
        self.breaker.reset();
        self.cooldown_until = None;
        self.rate_limited_streak = 0;
    }

    fn set_error(&mut self, error: &str) {
        self.last_error = Some(scrub(error, &self.key.secret));
    }
}

/// An error text safe to keep and show: bounded, and without the secret should an upstream
/// have echoed it back.
fn scrub(error: &str, secret: &str) -> String {
    let cleaned = if secret.is_empty() {
        error.to_owned()
    } else {
        error.replace(secret, "****")
    };
    match cleaned.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &cleaned[..cut]),
        None => cleaned,
    }
}

impl KeyPool {
    /// Gives the key back with what the call said about it (see the module docs for what each
    /// outcome does). The permit is always released, whatever else fails. An error here is
    /// about bookkeeping (the limiter or the store), never about the job.
    pub async fn report(&self, lease: KeyLease, outcome: Outcome) -> Result<(), KeyPoolError> {
        let released = self.limiter.permit_release(&lease.permit).await;
        self.released.notify_one();
        let disable = {
            let now = self.now();
            let wall_now = self.wall(now);
            let mut inner = self.lock();
            self.apply(&mut inner, &lease, outcome, now, wall_now)
        };
        if let Some(reason) = disable {
            self.store
                .provider_key_set_enabled(&lease.key_id, false, Some(&reason))
                .await?;
        }
        released?;
        Ok(())
    }

    /// Applies one outcome under the lock; returns the reason to persist if the key was
    /// disabled.
    fn apply(
        &self,
        inner: &mut Inner,
        lease: &KeyLease,
        outcome: Outcome,
        now: u64,
        wall_now: Millis,
    ) -> Option<String> {
        let config = &self.config;
        let entry = inner.keys.get_mut(&lease.key_id)?;
        entry.leases.remove(&lease.permit.id);
        let admission = lease.admission;
        let mut park = None;
        let mut disabled = None;
        match outcome {
            Outcome::Success => {
                entry.counts.successes += 1;
                entry.rate_limited_streak = 0;
                if entry.breaker.record_success(now, admission) == Some(BreakerState::Closed) {
                    tracing::info!(key_id = %entry.key.id, "provider key breaker closed");
                }
            }
            Outcome::RateLimited { retry_after } => {
                entry.counts.rate_limited += 1;
                entry.rate_limited_streak = entry.rate_limited_streak.saturating_add(1);
                let wait = retry_after
                    .unwrap_or_else(|| {
                        let doublings = (entry.rate_limited_streak - 1).min(16);
                        config.rate_limited_cooldown.saturating_mul(1 << doublings)
                    })
                    .min(config.max_cooldown);
                entry.cool_down(now.saturating_add(micros(wait)));
                entry.set_error(&format!(
                    "{}: rate limited upstream, cooling down for {:.1} s",
                    job_errors::UPSTREAM_RATE_LIMITED,
                    wait.as_secs_f64()
                ));
                entry.breaker.release(admission);
            }
            Outcome::DailyQuotaExhausted => {
                entry.counts.rate_limited += 1;
                let until_wall = config.daily_reset.park_until(wall_now);
                let wait_ms = u64::try_from(until_wall.saturating_sub(wall_now)).unwrap_or(0);
                let until = now.saturating_add(wait_ms.saturating_mul(1000));
                entry.set_error(&format!(
                    "{}: daily quota exhausted, parked until the daily reset",
                    job_errors::UPSTREAM_QUOTA_EXHAUSTED_DAILY
                ));
                entry.breaker.release(admission);
                match entry.key.project_key() {
                    Some(project) => park = Some((project, until)),
                    None => entry.parked_until = Some(entry.parked_until.unwrap_or(0).max(until)),
                }
                tracing::warn!(key_id = %entry.key.id, project = ?entry.key.project,
                    until_ms = until_wall, "daily quota exhausted; parked");
            }
            Outcome::Failure { error, retry_after } => {
                entry.counts.failures += 1;
                entry.set_error(&error);
                if let Some(wait) = retry_after {
                    entry.cool_down(now.saturating_add(micros(wait.min(config.max_cooldown))));
                }
                if entry.breaker.record_failure(now, admission) == Some(BreakerState::Open) {
                    tracing::warn!(key_id = %entry.key.id, fingerprint = %entry.fingerprint,
                        "provider key breaker opened");
                }
            }
            Outcome::KeyRejected { message } => {
                entry.counts.failures += 1;
                entry.key.enabled = false;
                entry.set_error(&message);
                entry.breaker.release(admission);
                tracing::warn!(key_id = %entry.key.id, fingerprint = %entry.fingerprint,
                    "provider key rejected upstream; disabled");
                disabled = entry.last_error.clone();
            }
            Outcome::Neutral => entry.breaker.release(admission),
        }
        if let Some((project, until)) = park {
            if let Some(p) = inner.projects.get_mut(&project) {
                p.parked_until = Some(p.parked_until.unwrap_or(0).max(until));
            }
        }
        disabled
    }

    /// Enables a key again, now and in the store, with a clean breaker and no cool-down.
    pub async fn enable(&self, key_id: &str) -> Result<(), KeyPoolError> {
        if !self.lock().keys.contains_key(key_id) {
            return Err(KeyPoolError::UnknownKey(key_id.to_owned()));
        }
        // The store first: if it fails, nothing changed and the operator can retry.
        self.store
            .provider_key_set_enabled(key_id, true, None)
            .await?;
        if let Some(entry) = self.lock().keys.get_mut(key_id) {
            entry.revive();
        }
        tracing::info!(key_id, "provider key enabled");
        Ok(())
    }

    /// Disables a key by hand, now and in the store. With no `last_error`, the scheduled probe
    /// leaves it disabled.
    pub async fn disable(&self, key_id: &str) -> Result<(), KeyPoolError> {
        if !self.lock().keys.contains_key(key_id) {
            return Err(KeyPoolError::UnknownKey(key_id.to_owned()));
        }
        self.store
            .provider_key_set_enabled(key_id, false, None)
            .await?;
        if let Some(entry) = self.lock().keys.get_mut(key_id) {
            entry.key.enabled = false;
            entry.last_error = None;
        }
        tracing::info!(key_id, "provider key disabled by an operator");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn daily_reset_is_midnight_pacific_with_grace() {
        let reset = DailyReset::default();
        // 2026-11-10 12:00 UTC is 04:00 at UTC-8: parked until 2026-11-11 08:00 UTC.
        let noon_utc: Millis = 1_794_312_000_000;
        assert_eq!(noon_utc % (24 * HOUR), 12 * HOUR);
        assert_eq!(reset.park_until(noon_utc), noon_utc + 20 * HOUR);
        // One millisecond before the reset: parked for that millisecond.
        let before = noon_utc - 4 * HOUR - 1;
        assert_eq!(reset.park_until(before), noon_utc - 4 * HOUR);
        // Just after the reset: only until the grace ends, then a whole day again.
        let after = noon_utc - 4 * HOUR + 1000;
        assert_eq!(reset.park_until(after), noon_utc - 4 * HOUR + 10 * 60_000);
        let later = noon_utc - 4 * HOUR + 10 * 60_000;
        assert_eq!(reset.park_until(later), noon_utc + 20 * HOUR);
        // A configured reset hour and offset (UTC+1, 03:00).
        let custom = DailyReset {
            utc_offset_minutes: 60,
            hour: 3,
            grace: Duration::ZERO,
        };
        // 12:00 UTC = 13:00 local; the next 03:00 local is 02:00 UTC tomorrow.
        assert_eq!(custom.park_until(noon_utc), noon_utc + 14 * HOUR);
    }

    #[test]
    fn outcomes_from_provider_errors() {
        let retryable = |code: &str, retry_after| ProviderError::Retryable {
            code: code.into(),
            message: "m".into(),
            retry_after,
        };
        let five = Some(Duration::from_secs(5));
        assert_eq!(
            Outcome::from_error(&retryable(job_errors::UPSTREAM_RATE_LIMITED, five)),
            Outcome::RateLimited { retry_after: five }
        );
        assert_eq!(
            Outcome::from_error(&retryable(job_errors::UPSTREAM_QUOTA_EXHAUSTED_DAILY, five)),
            Outcome::DailyQuotaExhausted
        );
        assert!(matches!(
            Outcome::from_error(&retryable(job_errors::UPSTREAM_UNAVAILABLE, None)),
            Outcome::Failure {
                retry_after: None,
                ..
            }
        ));
        assert!(matches!(
            Outcome::from_error(&ProviderError::KeyRejected {
                message: "403".into()
            }),
            Outcome::KeyRejected { .. }
        ));
        assert_eq!(
            Outcome::from_error(&ProviderError::ContentBlocked {
                reason: "SAFETY".into()
            }),
            Outcome::Neutral
        );
        assert_eq!(
            Outcome::from_error(&ProviderError::Final {
                code: job_errors::UPSTREAM_BAD_REQUEST.into(),
                message: "m".into()
            }),
            Outcome::Neutral
        );
        assert_eq!(Outcome::of::<()>(&Ok(())), Outcome::Success);
    }

    #[test]
    fn scrub_removes_the_secret_and_bounds_length() {
        assert_eq!(
            scrub("bad key AIzaXYZ here", "AIzaXYZ"),
            "bad key **** here"
        );
        let long = "é".repeat(MAX_ERROR_CHARS + 10);
        assert_eq!(scrub(&long, "").chars().count(), MAX_ERROR_CHARS + 1);
    }
}
