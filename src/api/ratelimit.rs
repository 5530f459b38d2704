//! The tenant rate limit at submit, and the IETF `RateLimit-Policy` / `RateLimit` headers
//! (draft-ietf-httpapi-ratelimit-headers) plus `Retry-After` that tell a client where it is.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderName, HeaderValue};

use crate::app::App;
use crate::error::{ApiError, ErrorCode};
use crate::limits::{RateDecision, RateQuota, MAX_PER_MINUTE};
use crate::store::Tenant;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// A tenant's submit quota: up to `burst` submits at once, and never more than `rpm` in any
/// 60 s window. The bucket holds `burst` and refills at `rpm - burst + 1` a minute, so the
/// burst is paid for by a slower steady rate; it is capped at half the RPM (at least 1) so the
/// steady rate never falls below half the RPM.
pub fn tenant_quota(rpm: u32, burst: u32) -> RateQuota {
    // Beyond what the limiter counts means "unlimited": held to the limiter's fastest rate.
    let rpm = rpm.clamp(1, MAX_PER_MINUTE);
    let burst = burst.clamp(1, (rpm / 2).max(1));
    RateQuota::capped(rpm, burst).unwrap_or(RateQuota::per_minute(rpm))
}

/// The burst in force for `tenant`: its own, else `limits.tenant_burst`.
pub fn tenant_burst(app: &App, tenant: &Tenant) -> u32 {
    tenant.burst.unwrap_or(app.config.limits.tenant_burst)
}

/// The headers a submit answer carries, allowed or not.
pub fn headers(rpm: u32, decision: &RateDecision) -> Vec<(HeaderName, HeaderValue)> {
    let reset = decision.reset_after.as_secs_f64().ceil() as u64;
    let mut out = vec![
        (
            RATELIMIT_POLICY.clone(),
            header_value(format!("\"tenant\";q={rpm};w=60")),
        ),
        (
            RATELIMIT.clone(),
            header_value(format!("\"tenant\";r={};t={reset}", decision.remaining)),
        ),
    ];
    if let Some(retry) = decision.retry_after {
        // Whole seconds, rounded up, so a client that waits exactly this long gets through.
        let secs = retry.as_secs_f64().ceil().max(1.0) as u64;
        out.push((RETRY_AFTER, header_value(secs.to_string())));
    }
    out
}

fn header_value(text: String) -> HeaderValue {
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

/// Takes one request from the tenant's quota, or refuses it with 429.
pub async fn check_tenant(
    app: &App,
    tenant: &Tenant,
) -> Result<Vec<(HeaderName, HeaderValue)>, ApiError> {
    let key = format!("rate:tenant:{}", tenant.id);
    let decision = match app
        .limiter
        .rate_acquire(
            &key,
            tenant_quota(tenant.rpm_limit, tenant_burst(app, tenant)),
            1,
        )
        .await
    {
        Ok(decision) => decision,
        Err(e) => {
            // Failing open keeps submits flowing while the limiter backend is down; the
            // execution-side limits still bound what reaches upstreams.
            tracing::warn!(error = %e, "rate limiter unavailable; submit allowed");
            return Ok(Vec::new());
        }
    };
    let headers = headers(tenant.rpm_limit, &decision);
    if decision.allowed {
        return Ok(headers);
    }
    let mut error = ApiError::new(
        ErrorCode::RateLimitExceeded,
        format!(
            "rate limit of {} requests per minute exceeded; retry later",
            tenant.rpm_limit
        ),
    );
    error.headers = headers;
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn quota_caps_the_window_at_rpm() {
        for rpm in [1, 2, 5, 60, 1000, 100_000] {
            for burst in [1, 3, 10, 50, 1000] {
                let q = tenant_quota(rpm, burst);
                assert_eq!(q.window_max(), u64::from(rpm), "rpm {rpm} burst {burst}");
                assert_eq!(q.burst, burst.min((rpm / 2).max(1)), "rpm {rpm}");
                // The steady rate never falls below half the RPM.
                assert!(2 * q.per_minute >= rpm, "rpm {rpm} burst {burst}");
            }
        }
        // The default tenant: 10 at once, 51 a minute after that, 60 in any minute.
        let q = tenant_quota(60, 10);
        assert_eq!((q.burst, q.per_minute, q.window_max()), (10, 51, 60));
    }

    #[test]
    fn headers_follow_the_draft() {
        let decision = RateDecision {
            allowed: false,
            limit: 3,
            remaining: 0,
            reset_after: Duration::from_millis(2500),
            retry_after: Some(Duration::from_millis(1200)),
        };
        let h = headers(60, &decision);
        let get = |n: &str| {
            h.iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.to_str().unwrap_or("").to_owned())
        };
        assert_eq!(
            get("ratelimit-policy").as_deref(),
            Some("\"tenant\";q=60;w=60")
        );
        assert_eq!(get("ratelimit").as_deref(), Some("\"tenant\";r=0;t=3"));
        assert_eq!(get("retry-after").as_deref(), Some("2"));
    }
}
