//! The dispatcher: claims due deliveries with a lease, POSTs them signed, records each
//! attempt and schedules the next.
//!
//! It runs in the worker role beside (not inside) the job workers, with its own bounded pool
//! of in-flight attempts (`webhooks.concurrency`) and a cap per URL
//! (`webhooks.per_endpoint_concurrency`, enforced by the claim across processes), so a slow
//! receiver fills at most its own slots: other receivers and job processing go on.
//!
//! Redirects are not followed (a 3xx is a failed attempt, as Standard Webhooks recommends),
//! environment proxies are not used (the connection goes to the checked address), and every
//! attempt has a timeout. A dispatcher that dies mid-attempt loses its lease; the delivery
//! is sent again later with the same id (at least once).
//!
//! An idle dispatcher looks for due deliveries every `webhooks.poll_ms`, and at once when the
//! event bus announces a committed status change (a wake-up hint only: the outbox rows are
//! the truth, so a lost notice costs at most one poll interval). While every URL with due
//! work is at its cap, notices are ignored (a claim would only find nothing again): it looks
//! again when an attempt ends or after a short pause. A busy slot does not go back to that
//! loop: the store call that records its attempt also claims its next due delivery
//! ([`Store::webhook_complete_and_claim`]), so a backlog drains at one store write per
//! delivery. Attempts to one receiver share an HTTP client and its connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::signing;
use super::target::{redact, TargetGuard};
use super::WebhooksConfig;
use crate::base::clock::{now_millis, Millis};
use crate::base::job::JobStatus;
use crate::base::netguard::pinned_client;
use crate::base::secret::Sealer;
use crate::base::secret::Secret;
use crate::base::webhook::{
    AttemptOutcome, AttemptReport, ClaimedDelivery, Delivery, DeliveryClaim,
};
use crate::events::{EventBus, Pace, Subscription, Wake};
use crate::storage::urls::ResultLinks;
use crate::store::{Store, StoreError};

pub const USER_AGENT: &str = concat!("Easel-Webhooks/", env!("CARGO_PKG_VERSION"));

/// Lease slack beyond the attempt's own timeout.
const LEASE_SLACK: Duration = Duration::from_secs(30);

/// How soon a dispatcher that found due work but could claim none (every such URL at its
/// cap) looks again, unless an attempt ends first.
const CAPPED_PAUSE: Duration = Duration::from_millis(50);

/// The contract payload, fields in the contract's order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Payload<'a> {
    event_id: &'a str,
    job_id: &'a str,
    tenant_id: &'a str,
    status: JobStatus,
    result_urls: Vec<String>,
    error: Option<&'a str>,
    /// When the status changed, Unix milliseconds.
    timestamp: Millis,
}

/// The request body of a delivery. `result_urls` are made at send time, so a retry hours
/// later carries links that still work.
pub fn payload(delivery: &Delivery, result_urls: Vec<String>) -> Vec<u8> {
    let body = Payload {
        event_id: &delivery.id,
        job_id: &delivery.job_id,
        tenant_id: &delivery.tenant_id,
        status: delivery.status,
        result_urls,
        error: delivery.error.as_deref(),
        timestamp: delivery.event_at,
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The delay before the next attempt after `attempts` attempts failed, or `None` when that
/// was the last. The scheduled delay gets jitter; a `Retry-After` is a floor.
pub fn next_delay(
    config: &WebhooksConfig,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let index = usize::try_from(attempts.checked_sub(1)?).ok()?;
    let scheduled = *config.retry_schedule_secs.get(index)?;
    let factor = if config.jitter > 0.0 {
        rand::thread_rng().gen_range(1.0 - config.jitter..=1.0 + config.jitter)
    } else {
        1.0
    };
    let delay = Duration::from_secs_f64((scheduled * factor).max(0.0));
    let floor = retry_after
        .map(|d| d.min(Duration::from_secs(config.max_retry_after_secs)))
        .unwrap_or_default();
    Some(delay.max(floor))
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let millis = at.timestamp_millis() - now.timestamp_millis();
    Some(Duration::from_millis(millis.max(0) as u64))
}

/// What an attempt found out, before it is turned into a report.
struct Attempt {
    status_code: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
    /// The failure will not go away by trying again (forbidden target, no secret).
    hopeless: bool,
    gone: bool,
    ok: bool,
}

impl Attempt {
    fn failed(error: impl Into<String>, hopeless: bool) -> Attempt {
        Attempt {
            status_code: None,
            error: Some(error.into()),
            retry_after: None,
            hopeless,
            gone: false,
            ok: false,
        }
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    sealer: Sealer,
    urls: ResultLinks,
    config: WebhooksConfig,
    guard: TargetGuard,
    /// Status changes committed in this process are announced here: a reason to look now.
    events: Option<Arc<dyn EventBus>>,
    clients: ClientCache,
    id: String,
}

/// Clients most recently used, at most this many (one per receiver host and address).
const MAX_CLIENTS: usize = 256;

/// HTTP clients by (host, checked address), so attempts to one receiver reuse its
/// connections instead of building a client (and loading the TLS roots) and opening a
/// connection each. A client is pinned to the address it is keyed by (`pinned_client`), so it only
/// ever connects where the guard allowed, whatever DNS says later: a host that resolves
/// elsewhere at the next attempt gets (after the check) another client.
#[derive(Default)]
struct ClientCache {
    clients: std::sync::Mutex<std::collections::HashMap<(String, SocketAddr), reqwest::Client>>,
}

impl ClientCache {
    fn get(
        &self,
        host: &str,
        addr: SocketAddr,
        timeout: Duration,
    ) -> reqwest::Result<reqwest::Client> {
        let key = (host.to_owned(), addr);
        if let Some(client) = self.lock().get(&key) {
            return Ok(client.clone());
        }
        // Built outside the lock: building loads the TLS roots, which takes a while.
        let client = pinned_client(host, addr)
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(USER_AGENT)
            .build()?;
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&key) {
            // Any one goes (with its idle connections); a receiver still in use builds again.
            if let Some(old) = clients.keys().next().cloned() {
                clients.remove(&old);
            }
        }
        Ok(clients.entry(key).or_insert(client).clone())
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(String, SocketAddr), reqwest::Client>>
    {
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The next notice of the bus, or never when there is no (more) bus.
async fn next_notice(sub: &mut Option<Subscription>) -> Wake {
    match sub {
        Some(sub) => sub.recv().await,
        None => std::future::pending().await,
    }
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Sealer,
        urls: ResultLinks,
        config: WebhooksConfig,
        events: Option<Arc<dyn EventBus>>,
    ) -> Result<Dispatcher, String> {
        let guard = TargetGuard::new(&config.allow_networks)?;
        Ok(Dispatcher {
            store,
            sealer,
            urls,
            config,
            guard,
            events,
            clients: ClientCache::default(),
            id: format!("whd_{}", ulid::Ulid::new().to_string().to_lowercase()),
        })
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.config.timeout_secs)
    }

    /// A claim's lease: the attempt's timeout and some slack to record it.
    fn lease(&self) -> Duration {
        self.timeout() + LEASE_SLACK
    }

    /// Runs until `stop` fires, then gives attempts in flight one timeout to end.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.concurrency as usize));
        let tracker = TaskTracker::new();
        // Poked when an attempt ends: its slot and its URL's cap are free again.
        let done = Arc::new(Notify::new());
        let poll = Duration::from_millis(this.config.poll_ms);
        let lease = this.lease();
        let mut notices = this.events.as_ref().map(|bus| bus.subscribe());
        let mut pace = Pace::default();
        tracing::info!(dispatcher = %this.id, concurrency = this.config.concurrency, "webhook dispatcher started");
        loop {
            let first = tokio::select! {
                permit = slots.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
                _ = stop.cancelled() => break,
            };
            // A read first, so an idle dispatcher costs no write transactions.
            let now = now_millis();
            let wait = match this.store.webhook_next_due_at().await {
                Ok(Some(due)) if due <= now => None,
                Ok(Some(due)) => Some(poll.min(Duration::from_millis((due - now) as u64))),
                Ok(None) => Some(poll),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatcher cannot read the outbox");
                    Some(poll)
                }
            };
            let claimed = match wait {
                Some(_) => Vec::new(),
                None => {
                    let free = slots.available_permits() as u32 + 1;
                    match this
                        .store
                        .webhook_claim(&this.id, free, lease, this.config.per_endpoint_concurrency)
                        .await
                    {
                        Ok(claimed) => claimed,
                        Err(e) => {
                            tracing::warn!(error = %e, "webhook claim failed");
                            Vec::new()
                        }
                    }
                }
            };
            if claimed.is_empty() {
                drop(first);
                // Work was due but none could be claimed: each URL with due work is at its cap
                // (or the claim failed). Every notice would repeat that claim, a write, for
                // nothing; so until an attempt ends, look again only after a short pause.
                let capped = wait.is_none();
                let pause = if capped {
                    poll.min(CAPPED_PAUSE)
                } else {
                    wait.unwrap_or(poll)
                };
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = done.notified() => {}
                    wake = next_notice(&mut notices), if !capped => match wake {
                        // The next read sees every change the queued notices announce.
                        Wake::Changed(_) | Wake::Missed => {
                            pace.turn().await;
                            if let Some(sub) = notices.as_mut() {
                                sub.drain();
                            }
                        }
                        Wake::Closed => notices = None,
                    },
                    _ = stop.cancelled() => break,
                }
                continue;
            }
            let mut first = Some(first);
            for claim in claimed {
                let permit = match first.take() {
                    Some(p) => Some(p),
                    None => slots.clone().try_acquire_owned().ok(),
                };
                let (this, done, stop) = (this.clone(), done.clone(), stop.clone());
                tracker.spawn(async move {
                    this.attempts_from(claim, &stop).await;
                    drop(permit);
                    done.notify_one();
                });
            }
        }
        tracker.close();
        if tokio::time::timeout(this.timeout(), tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(dispatcher = %this.id, "webhook attempts still in flight at shutdown; they will be sent again");
        }
        tracing::info!(dispatcher = %this.id, "webhook dispatcher stopped");
    }

    /// Sends `claim`, records the attempt and, in the same store call, claims the next due
    /// delivery for this slot; repeats until nothing is due (or the dispatcher stops). A busy
    /// slot thus costs one store write per delivery, and never waits for the claim loop.
    async fn attempts_from(&self, mut claim: ClaimedDelivery, stop: &CancellationToken) {
        loop {
            let report = self.attempt(&claim).await;
            let next = DeliveryClaim {
                owner: self.id.clone(),
                max: u32::from(!stop.is_cancelled()),
                lease: self.lease(),
                per_endpoint: self.config.per_endpoint_concurrency,
            };
            let delivery = &claim.delivery;
            match self
                .store
                .webhook_complete_and_claim(&delivery.id, claim.claim_token, report, &next)
                .await
            {
                Ok(mut more) => match more.pop() {
                    Some(next) => claim = next,
                    None => return,
                },
                Err(StoreError::LeaseLost) => {
                    tracing::warn!(delivery = %delivery.id, "webhook claim lost before the attempt was recorded");
                    return;
                }
                Err(e) => {
                    tracing::error!(delivery = %delivery.id, error = %e, "cannot record a webhook attempt (or claim the next); it will be sent again");
                    return;
                }
            }
        }
    }

    /// One attempt of one delivery, and its report for the store.
    async fn attempt(&self, claim: &ClaimedDelivery) -> AttemptReport {
        let delivery = &claim.delivery;
        let started = Instant::now();
        let attempt = self.send(claim).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        let outcome = if attempt.ok {
            AttemptOutcome::Delivered
        } else if attempt.gone {
            AttemptOutcome::Gone
        } else if attempt.hopeless {
            AttemptOutcome::Failed
        } else {
            match next_delay(&self.config, delivery.attempts, attempt.retry_after) {
                Some(delay) => AttemptOutcome::Retry {
                    next_attempt_at: now_millis()
                        .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 4)),
                },
                None => AttemptOutcome::Failed,
            }
        };
        tracing::debug!(
            delivery = %delivery.id,
            job = %delivery.job_id,
            url = %redact(&delivery.url),
            attempt = delivery.attempts,
            status = ?attempt.status_code,
            error = ?attempt.error,
            outcome = ?outcome,
            "webhook attempt"
        );
        let label = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry { .. } => "retrying",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Gone => "gone",
        };
        crate::telemetry::webhook_attempt(label, started.elapsed());
        if matches!(outcome, AttemptOutcome::Gone) {
            tracing::warn!(url = %redact(&delivery.url), tenant = %delivery.tenant_id, "webhook endpoint answered 410 Gone; disabled");
        }
        AttemptReport {
            outcome,
            status_code: attempt.status_code,
            error: attempt.error,
            latency_ms,
            at: now_millis(),
        }
    }

    fn open_secrets(&self, claim: &ClaimedDelivery) -> Result<Vec<Secret>, String> {
        claim
            .secrets
            .iter()
            .map(|s| {
                self.sealer.open(&s.sealed).map(Secret::new).map_err(|_| {
                    "cannot open the signing secret (was the master key changed?)".to_owned()
                })
            })
            .collect()
    }

    async fn send(&self, claim: &ClaimedDelivery) -> Attempt {
        let delivery = &claim.delivery;
        let secrets = match self.open_secrets(claim) {
            Ok(secrets) if secrets.is_empty() => {
                return Attempt::failed("the tenant has no webhook signing secret", true)
            }
            Ok(secrets) => secrets,
            // An operator problem, not the receiver's: keep retrying on the schedule.
            Err(e) => return Attempt::failed(e, false),
        };
        let url = match self.guard.precheck(&delivery.url) {
            Ok(url) => url,
            Err(e) => return Attempt::failed(format!("target refused: {e}"), true),
        };
        let addr = match tokio::time::timeout(self.timeout(), self.guard.resolve(&url)).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => return Attempt::failed(format!("target refused: {e}"), !e.retryable),
            Err(_) => return Attempt::failed("timed out resolving the host", false),
        };
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = match self.clients.get(&host, addr, self.timeout()) {
            Ok(client) => client,
            Err(e) => return Attempt::failed(format!("cannot build the HTTP client: {e}"), false),
        };
        let now = chrono::Utc::now();
        let body = match &delivery.body {
            Some(body) => body.clone().into_bytes(),
            None => {
                let links = self.urls.urls(&delivery.result_keys, now.timestamp()).await;
                payload(delivery, links)
            }
        };
        let timestamp = now.timestamp();
        let Some(signed) = signing::sign(&secrets, &delivery.id, timestamp, &body) else {
            return Attempt::failed("the tenant's webhook secret is not a whsec_ secret", true);
        };
        let sent = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("x-signature", signed.x_signature)
            .header("webhook-id", &delivery.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signed.webhook_signature)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let what = if e.is_timeout() {
                    format!("timed out after {} s", self.config.timeout_secs)
                } else if e.is_connect() {
                    "could not connect to the receiver".to_owned()
                } else {
                    "the request failed before a response".to_owned()
                };
                return Attempt::failed(what, false);
            }
        };
        let status = response.status();
        let code = status.as_u16();
        if status.is_success() {
            return Attempt {
                status_code: Some(code),
                error: None,
                retry_after: None,
                hopeless: false,
                gone: false,
                ok: true,
            };
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let error = if status.is_redirection() {
            format!("HTTP {code}: redirects are not followed; update the webhook URL")
        } else {
            format!("HTTP {code}")
        };
        Attempt {
            status_code: Some(code),
            error: Some(error),
            retry_after,
            hopeless: false,
            gone: code == 410,
            ok: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_with_jitter_and_retry_after_floor() {
        let config = WebhooksConfig::default();
        // After the first attempt: 5 s ± 10 %.
        let d = next_delay(&config, 1, None).expect("retry");
        assert!((4.5..=5.5).contains(&d.as_secs_f64()), "{d:?}");
        let d = next_delay(&config, 9, None).expect("retry");
        assert!((77760.0..=95040.0).contains(&d.as_secs_f64()), "{d:?}");
        // The tenth attempt was the last.
        assert_eq!(next_delay(&config, 10, None), None);
        // Retry-After is a floor, capped.
        let d = next_delay(&config, 1, Some(Duration::from_secs(60))).expect("retry");
        assert_eq!(d, Duration::from_secs(60));
        let d = next_delay(&config, 1, Some(Duration::from_secs(10 * 86400))).expect("retry");
        assert_eq!(d, Duration::from_secs(86400));
        let exact = WebhooksConfig {
            jitter: 0.0,
            retry_schedule_secs: vec![0.0, 0.25],
            ..WebhooksConfig::default()
        };
        assert_eq!(next_delay(&exact, 1, None), Some(Duration::ZERO));
        assert_eq!(
            next_delay(&exact, 2, None),
            Some(Duration::from_millis(250))
        );
        assert_eq!(next_delay(&exact, 3, None), None);
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:27:00Z")
            .expect("date")
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn payload_is_exactly_the_contract() {
        let urls = crate::storage::urls::UrlSigner::new(b"k", "http://localhost:3000", None, 3600);
        let delivery = Delivery {
            seq: 1,
            id: "evt_01".into(),
            job_id: "job1".into(),
            tenant_id: "ten_1".into(),
            url: "https://example.com/hook".into(),
            source: crate::base::webhook::DeliverySource::Tenant,
            status: JobStatus::Succeeded,
            error: None,
            result_keys: vec!["ten_1/job1/1-0.png".into()],
            event_at: 1_737_893_785_000,
            state: crate::base::webhook::DeliveryState::Delivering,
            attempts: 1,
            next_attempt_at: 0,
            last_status_code: None,
            last_error: None,
            last_latency_ms: None,
            last_attempt_at: None,
            created_at: 0,
            updated_at: 0,
            delivered_at: None,
            body: None,
        };
        let links = delivery
            .result_keys
            .iter()
            .map(|k| urls.url(k, 1_737_893_785))
            .collect();
        let body = String::from_utf8(payload(&delivery, links)).expect("utf8");
        let expected_url = urls.url("ten_1/job1/1-0.png", 1_737_893_785);
        assert_eq!(
            body,
            format!(
                r#"{{"eventId":"evt_01","jobId":"job1","tenantId":"ten_1","status":"SUCCEEDED","resultUrls":["{expected_url}"],"error":null,"timestamp":1737893785000}}"#
            )
        );
    }
}
