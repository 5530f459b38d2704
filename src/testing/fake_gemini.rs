//! A fake Gemini API on `127.0.0.1:0`: `POST /v1beta/models/{model}:generateContent` and
//! `POST /v1beta/models/{model}:predict`, in the real JSON format, answering with small valid
//! PNGs from the local renderer.
//!
//! Faults are set per API key (the `x-goog-api-key` value) and can change while it runs:
//! latency, 429 (per-minute, with `Retry-After` and/or `RetryInfo`; per-day quota), 5xx,
//! hangs, stalled and dropped bodies, malformed and truncated JSON, safety blocks, wrong keys,
//! redirects, oversized replies, and a key echoed back in an error. Each fault fires always,
//! for the next N requests, or on a seeded, deterministic X% of requests.
//!
//! Answers can be held back until a test releases them ([`FakeGemini::hold_answers`]), so a
//! test can act while an upstream call is in flight without sleeping.
//!
//! It records, per key: request count, requests in flight and the most seen at once, the
//! instant of every request (for RPM checks) and the last request body.
//!
//! Like the real API it refuses a request without a key (403), a key in the URL (the fake is
//! stricter here: 400, because Easel must never put it there), `candidateCount` > 1 on Gemini
//! image models, and `imageSize` sent to `gemini-2.5-flash-image` (400; Easel must never send
//! it there).

mod replies;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use replies::{fault_response, generate_content, google_error, json_response, predict};

/// What goes wrong with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// Nothing: a normal answer (after the fault's latency, if any).
    None,
    /// 429 on a per-minute quota. `retry_after_secs` sets the `Retry-After` header,
    /// `retry_delay` the body's `RetryInfo.retryDelay` (`"37s"`).
    RateLimited {
        retry_after_secs: Option<u64>,
        retry_delay: Option<String>,
    },
    /// 429 on a per-day quota (`QuotaFailure` with `GenerateRequestsPerDayPerProjectPerModel`).
    QuotaExhaustedDaily { retry_delay: Option<String> },
    /// This 5xx status with Google's error body (502 gets a proxy's HTML page instead).
    ServerError(u16),
    /// Never answers (until the fake stops).
    Hang,
    /// Sends 200 and the start of the body, then nothing more.
    StallBody,
    /// Sends 200 and half the body, then closes the connection.
    DropConnection,
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// 200 with a complete HTTP body holding the first part of a JSON reply.
    TruncatedJson,
    /// 200 with `promptFeedback.blockReason` set and no candidates.
    PromptBlocked(String),
    /// 200 with one candidate that has this `finishReason` and no image (`IMAGE_SAFETY`, ...).
    FinishReason(String),
    /// 200 with only a text part.
    TextOnly(String),
    /// 401 `UNAUTHENTICATED`.
    Unauthorized,
    /// 403 `PERMISSION_DENIED` (`ErrorInfo.reason` `SERVICE_DISABLED`).
    Forbidden,
    /// 400 `INVALID_ARGUMENT` with `ErrorInfo.reason` `API_KEY_INVALID`: Gemini's answer to a
    /// wrong key.
    InvalidKey,
    /// 400 whose message quotes the key, like a careless relay.
    EchoKey,
    /// 302 to this location.
    Redirect(String),
    /// 200 with a valid reply padded to at least this many bytes.
    Oversized(usize),
    /// Anything else: this status and body (`application/json`).
    Status { status: u16, body: String },
}

/// Which requests a fault hits.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    Always,
    /// The next N requests, then none.
    NextN(u32),
    /// A deterministic `percent`% of requests: the same seed and order give the same hits.
    Percent {
        percent: u8,
        seed: u64,
    },
}

/// A fault plan for a key: what goes wrong, when, and the latency every request sees.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub when: When,
    /// Added before answering every request of the key, faulty or not.
    pub latency: Duration,
}

impl Fault {
    /// Healthy.
    pub fn none() -> Fault {
        Fault::from(FaultKind::None)
    }

    /// Healthy but slow.
    pub fn latency(latency: Duration) -> Fault {
        Fault::none().with_latency(latency)
    }

    pub fn with_latency(mut self, latency: Duration) -> Fault {
        self.latency = latency;
        self
    }

    /// Only the next `n` requests fail.
    pub fn next(mut self, n: u32) -> Fault {
        self.when = When::NextN(n);
        self
    }

    /// `percent`% of requests fail, chosen by a generator seeded with `seed`.
    pub fn percent(mut self, percent: u8, seed: u64) -> Fault {
        self.when = When::Percent {
            percent: percent.min(100),
            seed,
        };
        self
    }
}

impl From<FaultKind> for Fault {
    fn from(kind: FaultKind) -> Fault {
        Fault {
            kind,
            when: When::Always,
            latency: Duration::ZERO,
        }
    }
}

/// What the fake saw for one key.
#[derive(Debug, Clone, Default)]
pub struct KeyStats {
    pub requests: u64,
    /// Requests that got a fault other than [`FaultKind::None`].
    pub faults: u64,
    pub in_flight: u32,
    pub max_in_flight: u32,
    /// When each request arrived, in order.
    pub request_times: Vec<Instant>,
    /// The last request body, parsed (`Value::String` with the raw text if it was not JSON).
    pub last_body: Option<Value>,
    pub last_model: Option<String>,
    /// `generateContent` or `predict`.
    pub last_method: Option<String>,
    /// Requests that carried the key in the URL (`?key=`).
    pub key_in_url: u64,
}

impl KeyStats {
    /// The most requests that arrived within any span of `window` (e.g. one minute for RPM).
    pub fn max_in_window(&self, window: Duration) -> usize {
        let times = &self.request_times;
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }
}

struct Plan {
    fault: Fault,
    remaining: u32,
    rng: u64,
}

impl Plan {
    fn new(fault: Fault) -> Plan {
        let (remaining, rng) = match fault.when {
            When::NextN(n) => (n, 0),
            When::Percent { seed, .. } => (0, seed),
            When::Always => (0, 0),
        };
        Plan {
            fault,
            remaining,
            rng,
        }
    }

    /// The fault this request gets, and the latency to add.
    fn draw(&mut self) -> (FaultKind, Duration) {
        let hit = match self.fault.when {
            When::Always => true,
            When::NextN(_) => {
                let hit = self.remaining > 0;
                self.remaining = self.remaining.saturating_sub(1);
                hit
            }
            When::Percent { percent, .. } => splitmix64(&mut self.rng) % 100 < u64::from(percent),
        };
        let kind = if hit {
            self.fault.kind.clone()
        } else {
            FaultKind::None
        };
        (kind, self.fault.latency)
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Default)]
struct Inner {
    plans: HashMap<String, Plan>,
    default_plan: Option<Plan>,
    stats: HashMap<String, KeyStats>,
    total: u64,
    /// When the answer to each prompt was ready (Unix ms), if asked to record them.
    answered: Option<HashMap<String, i64>>,
}

struct Shared {
    inner: Mutex<Inner>,
    stop: CancellationToken,
    /// Whether answers may go out (`false` while held).
    open: tokio::sync::watch::Sender<bool>,
    /// Requests waiting for answers to be released.
    held: tokio::sync::watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not wedge the fake for the others.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake. Stops when dropped.
pub struct FakeGemini {
    /// `http://127.0.0.1:<port>`: use as a key's base URL.
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeGemini {
    /// Starts on an ephemeral port. Panics if it cannot bind, which only a broken test host
    /// does; use [`FakeGemini::try_start`] to handle that.
    pub async fn start() -> FakeGemini {
        match FakeGemini::try_start().await {
            Ok(fake) => fake,
            Err(e) => panic!("fake Gemini cannot bind 127.0.0.1:0: {e}"),
        }
    }

    pub async fn try_start() -> std::io::Result<FakeGemini> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            stop: CancellationToken::new(),
            open: tokio::sync::watch::Sender::new(true),
            held: tokio::sync::watch::Sender::new(0),
        });
        let router = Router::new()
            .route("/v1beta/models/{target}", post(handle))
            .route("/v1beta/models", axum::routing::get(list_models))
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
            .with_state(shared.clone());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "fake Gemini stopped with an error");
            }
        });
        Ok(FakeGemini {
            base_url: format!("http://{addr}"),
            addr,
            shared,
        })
    }

    /// Sets the fault plan of `key` (replacing the previous one, and restarting its count).
    pub fn set_fault(&self, key: &str, fault: impl Into<Fault>) {
        self.shared
            .lock()
            .plans
            .insert(key.to_owned(), Plan::new(fault.into()));
    }

    /// The plan of keys that have none of their own.
    pub fn set_default_fault(&self, fault: impl Into<Fault>) {
        self.shared.lock().default_plan = Some(Plan::new(fault.into()));
    }

    /// Every key healthy again (stats are kept).
    pub fn clear_faults(&self) {
        let mut inner = self.shared.lock();
        inner.plans.clear();
        inner.default_plan = None;
    }

    /// What the fake saw for `key` (`""` for requests without a key).
    pub fn stats(&self, key: &str) -> KeyStats {
        self.shared
            .lock()
            .stats
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// Requests received, all keys together.
    pub fn total_requests(&self) -> u64 {
        self.shared.lock().total
    }

    /// From now on, notes when the answer to each prompt (its first text part) was ready, for
    /// measuring what the caller adds after the upstream has answered.
    pub fn record_answers(&self) {
        self.shared.lock().answered.get_or_insert_with(HashMap::new);
    }

    /// When the successful answer to `prompt` was ready, in Unix milliseconds.
    pub fn answered_at(&self, prompt: &str) -> Option<i64> {
        self.shared.lock().answered.as_ref()?.get(prompt).copied()
    }

    /// Forgets the stats of every key.
    pub fn reset_stats(&self) {
        let mut inner = self.shared.lock();
        inner.stats.clear();
        inner.total = 0;
    }

    /// From now on every request waits before it is answered, until [`Self::release_answers`].
    pub fn hold_answers(&self) {
        self.shared.open.send_replace(false);
    }

    /// Lets held requests (and later ones) be answered.
    pub fn release_answers(&self) {
        self.shared.open.send_replace(true);
    }

    /// Waits until at least `n` requests are being held.
    pub async fn wait_held(&self, n: usize) {
        let mut held = self.shared.held.subscribe();
        // The sender lives as long as `self`, so this only ends by reaching `n`.
        let _ = held.wait_for(|count| *count >= n).await;
    }

    /// Requests being held now.
    pub fn held(&self) -> usize {
        *self.shared.held.borrow()
    }

    /// Stops serving; hanging and stalled requests end.
    pub fn stop(&self) {
        self.shared.stop.cancel();
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// Counts a request as held until dropped (also when the client gives up first).
struct Held<'a>(&'a Shared);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0
            .held
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// Waits while answers are held; `false` if the fake stopped meanwhile.
async fn wait_until_open(shared: &Shared) -> bool {
    let mut open = shared.open.subscribe();
    if *open.borrow() {
        return true;
    }
    shared.held.send_modify(|count| *count += 1);
    let _held = Held(shared);
    tokio::select! {
        released = open.wait_for(|open| *open) => released.is_ok(),
        _ = shared.stop.cancelled() => false,
    }
}

/// Counts a request as in flight until dropped (also when the client gives up first).
struct InFlight {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(s) = self.shared.lock().stats.get_mut(&self.key) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Method {
    GenerateContent,
    Predict,
}

async fn not_found() -> Response {
    google_error(
        404,
        "NOT_FOUND",
        "The requested URL was not found on this server.",
        None,
    )
}

/// `GET /v1beta/models`: what key probes call. A key whose plan rejects keys is refused the
/// same way; any other key gets a one-model list. Not counted in the key's request stats.
async fn list_models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let rejected = {
        let inner = shared.lock();
        let plan = inner.plans.get(&key).or(inner.default_plan.as_ref());
        plan.is_some_and(|p| {
            matches!(
                p.fault.kind,
                FaultKind::Unauthorized | FaultKind::Forbidden | FaultKind::InvalidKey
            )
        })
    };
    if key.is_empty() || rejected {
        let body = serde_json::json!({"error": {"code": 401, "message": "API key not valid.", "status": "UNAUTHENTICATED"}});
        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let body = serde_json::json!({"models": [{"name": "models/gemini-2.5-flash-image"}]});
    axum::Json(body).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(target): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header_key = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let query_key = query.get("key").cloned();
    let key = header_key
        .clone()
        .or_else(|| query_key.clone())
        .unwrap_or_default();
    let (model, method) = match target.rsplit_once(':') {
        Some((m, "generateContent")) => (m.to_owned(), Some(Method::GenerateContent)),
        Some((m, "predict")) => (m.to_owned(), Some(Method::Predict)),
        Some((m, _)) => (m.to_owned(), None),
        None => (target.clone(), None),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();

    // Record, and pick this request's fault, in one short critical section.
    let (fault, latency, guard) = {
        let mut inner = shared.lock();
        inner.total += 1;
        let stats = inner.stats.entry(key.clone()).or_default();
        stats.requests += 1;
        stats.in_flight += 1;
        stats.max_in_flight = stats.max_in_flight.max(stats.in_flight);
        stats.request_times.push(Instant::now());
        stats.last_body = Some(
            parsed
                .clone()
                .unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        );
        stats.last_model = Some(model.clone());
        stats.last_method = target.rsplit_once(':').map(|(_, m)| m.to_owned());
        if query_key.is_some() {
            stats.key_in_url += 1;
        }
        let inner = &mut *inner;
        let plan = inner.plans.get_mut(&key).or(inner.default_plan.as_mut());
        let (fault, latency) = plan
            .map(Plan::draw)
            .unwrap_or((FaultKind::None, Duration::ZERO));
        if fault != FaultKind::None {
            if let Some(s) = inner.stats.get_mut(&key) {
                s.faults += 1;
            }
        }
        let guard = InFlight {
            shared: shared.clone(),
            key: key.clone(),
        };
        (fault, latency, guard)
    };

    if !wait_until_open(&shared).await {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !latency.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = shared.stop.cancelled() => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    if key.is_empty() {
        return google_error(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). \
             Please use API Key or other form of API consumer identity to call this API.",
            None,
        );
    }
    if query_key.is_some() {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "fake Gemini: the API key must travel in the x-goog-api-key header, not the URL",
            None,
        );
    }
    let Some(method) = method else {
        return google_error(
            404,
            "NOT_FOUND",
            &format!("models/{model} is not found for API version v1beta, or the method is not supported"),
            None,
        );
    };

    match fault {
        FaultKind::None => {}
        FaultKind::Hang => {
            shared.stop.cancelled().await;
            drop(guard);
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        other => return fault_response(other, &key, &model, method, &shared, guard),
    }

    let Some(request) = parsed else {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Invalid JSON payload received. Unexpected token.",
            None,
        );
    };
    let reply = match method {
        Method::GenerateContent => generate_content(&model, &request),
        Method::Predict => predict(&model, &request),
    };
    drop(guard);
    if reply.is_ok() {
        note_answer(&shared, &request);
    }
    match reply {
        Ok(body) => json_response(200, body.to_string()),
        Err(refusal) => refusal.into_response(),
    }
}

fn note_answer(shared: &Shared, request: &Value) {
    let mut inner = shared.lock();
    let Some(answered) = inner.answered.as_mut() else {
        return;
    };
    let prompt = request["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c.pointer("/parts/0/text"))
        .or_else(|| request.pointer("/instances/0/prompt"))
        .and_then(Value::as_str);
    if let Some(prompt) = prompt {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        answered.insert(prompt.to_owned(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_deterministic_and_roughly_right() {
        let draw = |seed| {
            let mut plan = Plan::new(Fault::from(FaultKind::ServerError(500)).percent(30, seed));
            (0..1000)
                .map(|_| plan.draw().0 != FaultKind::None)
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        let hits = a.iter().filter(|h| **h).count();
        assert!((230..370).contains(&hits), "{hits}");
    }

    #[test]
    fn next_n_then_healthy() {
        let mut plan = Plan::new(Fault::from(FaultKind::Unauthorized).next(2));
        let kinds: Vec<_> = (0..4).map(|_| plan.draw().0).collect();
        assert_eq!(
            kinds,
            [
                FaultKind::Unauthorized,
                FaultKind::Unauthorized,
                FaultKind::None,
                FaultKind::None
            ]
        );
    }

    #[test]
    fn window_counting() {
        let t0 = Instant::now();
        let stats = KeyStats {
            request_times: [0, 10, 20, 65, 70, 75, 80]
                .iter()
                .map(|s| t0 + Duration::from_secs(*s))
                .collect(),
            ..KeyStats::default()
        };
        assert_eq!(stats.max_in_window(Duration::from_secs(60)), 4);
        assert_eq!(stats.max_in_window(Duration::from_secs(5)), 1);
        assert_eq!(
            KeyStats::default().max_in_window(Duration::from_secs(60)),
            0
        );
    }
}
