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
//! It records, per key: request count, requests in flight and the most seen at once, the
//! instant of every request (for RPM checks) and the last request body.
//!
//! Like the real API it refuses a request without a key (403), a key in the URL (the fake is
//! stricter here: 400, because Easel must never put it there), `candidateCount` > 1 on Gemini
//! image models, and `imageSize` sent to `gemini-2.5-flash-image` (400; Easel must never send
//! it there).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::providers::local::render::render_png;

/// Side of the square PNGs the fake returns.
const IMAGE_SIDE: u32 = 8;
const GEMINI_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9", "1:4", "4:1", "1:8",
    "8:1",
];
const IMAGEN_RATIOS: &[&str] = &["1:1", "3:4", "4:3", "9:16", "16:9"];
const IMAGE_SIZES: &[&str] = &["512", "1K", "2K", "4K"];

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
}

struct Shared {
    inner: Mutex<Inner>,
    stop: CancellationToken,
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
        });
        let router = Router::new()
            .route("/v1beta/models/{target}", post(handle))
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

    /// Forgets the stats of every key.
    pub fn reset_stats(&self) {
        let mut inner = self.shared.lock();
        inner.stats.clear();
        inner.total = 0;
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
    match reply {
        Ok(body) => json_response(200, body.to_string()),
        Err(refusal) => refusal.into_response(),
    }
}

fn fault_response(
    fault: FaultKind,
    key: &str,
    model: &str,
    method: Method,
    shared: &Arc<Shared>,
    guard: InFlight,
) -> Response {
    match fault {
        FaultKind::None | FaultKind::Hang => json_response(200, "{}".into()),
        FaultKind::RateLimited {
            retry_after_secs,
            retry_delay,
        } => {
            let mut details = vec![quota_failure(
                "GenerateRequestsPerMinutePerProjectPerModel",
                model,
            )];
            if let Some(delay) = retry_delay {
                details.push(retry_info(&delay));
            }
            let mut response = google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                Some(details),
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        FaultKind::QuotaExhaustedDaily { retry_delay } => {
            let mut details = vec![quota_failure(
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                model,
            )];
            if let Some(delay) = retry_delay {
                details.push(retry_info(&delay));
            }
            google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                Some(details),
            )
        }
        FaultKind::ServerError(502) => Response::builder()
            .status(502)
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>",
            ))
            .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response()),
        FaultKind::ServerError(status) => {
            let (name, message) = match status {
                503 => ("UNAVAILABLE", "The model is overloaded. Please try again later."),
                504 => ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
                _ => ("INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"),
            };
            google_error(status, name, message, None)
        }
        FaultKind::StallBody => {
            let stop = shared.stop.clone();
            let stream = futures::stream::once(async {
                Ok::<Bytes, Infallible>(Bytes::from_static(b"{\"candidates\": ["))
            })
            .chain(futures::stream::once(async move {
                // Keep the request counted as in flight while it stalls.
                let _guard = guard;
                stop.cancelled().await;
                Ok::<Bytes, Infallible>(Bytes::new())
            }));
            streaming_response(Body::from_stream(stream))
        }
        FaultKind::DropConnection => {
            let full = happy_body(model, method, "dropped", 1).to_string();
            let half = Bytes::from(full.as_bytes()[..full.len() / 2].to_vec());
            let stream = futures::stream::once(async move { Ok::<Bytes, std::io::Error>(half) })
                .chain(futures::stream::once(async move {
                    let _guard = guard;
                    // Give the first half time to leave, then break the connection.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "fake Gemini drops the connection",
                    ))
                }));
            streaming_response(Body::from_stream(stream))
        }
        FaultKind::MalformedJson => {
            json_response(200, "{\"candidates\": [{\"content\": nope}]}".into())
        }
        FaultKind::TruncatedJson => {
            let full = happy_body(model, method, "truncated", 1).to_string();
            json_response(200, full[..full.len() * 3 / 5].to_owned())
        }
        FaultKind::PromptBlocked(reason) => match method {
            Method::Predict => json_response(200, "{}".into()),
            Method::GenerateContent => json_response(
                200,
                json!({
                    "promptFeedback": {"blockReason": reason},
                    "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                    "modelVersion": model,
                    "responseId": response_id(),
                })
                .to_string(),
            ),
        },
        FaultKind::FinishReason(reason) => match method {
            Method::Predict => json_response(
                200,
                json!({"predictions": [{"raiFilteredReason": reason}]}).to_string(),
            ),
            Method::GenerateContent => json_response(
                200,
                json!({
                    "candidates": [{"content": {"role": "model"}, "finishReason": reason, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                    "modelVersion": model,
                    "responseId": response_id(),
                })
                .to_string(),
            ),
        },
        FaultKind::TextOnly(text) => match method {
            Method::Predict => json_response(200, json!({"predictions": []}).to_string()),
            Method::GenerateContent => json_response(
                200,
                json!({
                    "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                    "finishReason": "STOP", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 20,
                                      "totalTokenCount": 32},
                    "modelVersion": model,
                    "responseId": response_id(),
                })
                .to_string(),
            ),
        },
        FaultKind::Unauthorized => google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
            None,
        ),
        FaultKind::Forbidden => google_error(
            403,
            "PERMISSION_DENIED",
            "Generative Language API has not been used in project 123456789012 before or it is disabled.",
            Some(vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SERVICE_DISABLED",
                "domain": "googleapis.com",
            })]),
        ),
        FaultKind::InvalidKey => google_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            Some(vec![json!({
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            })]),
        ),
        FaultKind::EchoKey => google_error(
            400,
            "INVALID_ARGUMENT",
            &format!("The key {key} is not allowed to call {model}"),
            None,
        ),
        FaultKind::Redirect(location) => Response::builder()
            .status(302)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::FOUND.into_response()),
        FaultKind::Oversized(bytes) => {
            let mut body = happy_body(model, method, "oversized", 1);
            if let Value::Object(map) = &mut body {
                map.insert("padding".into(), Value::String("a".repeat(bytes)));
            }
            json_response(200, body.to_string())
        }
        FaultKind::Status { status, body } => json_response(status, body),
    }
}

fn quota_failure(quota_id: &str, model: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
            "quotaId": quota_id,
            "quotaDimensions": {"location": "global", "model": model},
            "quotaValue": "10",
        }],
    })
}

fn retry_info(delay: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay})
}

fn google_error(status: u16, name: &str, message: &str, details: Option<Vec<Value>>) -> Response {
    let mut error = json!({"code": status, "message": message, "status": name});
    if let Some(details) = details {
        error["details"] = Value::Array(details);
    }
    json_response(status, json!({ "error": error }).to_string())
}

fn json_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn streaming_response(body: Body) -> Response {
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json; charset=UTF-8")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn response_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "fake-{:08x}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn png_base64(prompt: &str, seed: u64) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(render_png(prompt, seed, IMAGE_SIDE, IMAGE_SIDE))
}

/// A successful reply, without checking any request.
fn happy_body(model: &str, method: Method, prompt: &str, n: u32) -> Value {
    match method {
        Method::Predict => json!({
            "predictions": (0..n).map(|i| json!({
                "bytesBase64Encoded": png_base64(prompt, u64::from(i)),
                "mimeType": "image/png",
            })).collect::<Vec<_>>()
        }),
        Method::GenerateContent => generate_content_reply(model, prompt, 0, true),
    }
}

fn generate_content_reply(model: &str, prompt: &str, seed: u64, with_text: bool) -> Value {
    let id = response_id();
    let mut parts = Vec::new();
    if with_text {
        parts.push(json!({"text": format!("Here is your image: {prompt}")}));
    }
    let mut image =
        json!({"inlineData": {"mimeType": "image/png", "data": png_base64(prompt, seed)}});
    if model.starts_with("gemini-3") {
        image["thoughtSignature"] = Value::String(format!("sig-{id}"));
    }
    parts.push(image);
    let prompt_tokens = prompt.split_whitespace().count().max(1) as u64;
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": "STOP",
            "index": 0,
        }],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": 1290,
            "totalTokenCount": prompt_tokens + 1290,
            "candidatesTokensDetails": [{"modality": "IMAGE", "tokenCount": 1290}],
        },
        "modelVersion": model,
        "responseId": id,
    })
}

/// Why the fake refuses a request: status, `google.rpc.Code` name, message.
struct Refusal(u16, &'static str, String);

impl Refusal {
    fn into_response(self) -> Response {
        google_error(self.0, self.1, &self.2, None)
    }
}

type Reply = Result<Value, Refusal>;

fn bad_request(message: &str) -> Refusal {
    Refusal(400, "INVALID_ARGUMENT", message.to_owned())
}

fn model_not_found(model: &str, method: &str) -> Refusal {
    Refusal(
        404,
        "NOT_FOUND",
        format!(
            "models/{model} is not found for API version v1beta, or is not supported for {method}. \
             Call ListModels to see the list of available models and their supported methods."
        ),
    )
}

/// Checks a `generateContent` request as the real API would, and answers it.
fn generate_content(model: &str, request: &Value) -> Reply {
    if !model.starts_with("gemini-") {
        return Err(model_not_found(model, "generateContent"));
    }
    let parts = request["contents"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(|c| c["parts"].as_array())
        .ok_or_else(|| {
            bad_request("* GenerateContentRequest.contents: contents is not specified")
        })?;
    let prompt: String = parts
        .iter()
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for part in parts {
        if let Some(blob) = part.get("inlineData") {
            let mime = blob["mimeType"].as_str().unwrap_or("");
            let data = blob["data"].as_str().unwrap_or("");
            if mime.is_empty()
                || base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .is_err()
            {
                return Err(bad_request(
                    "Invalid value at 'contents[0].parts[1].inline_data' (TYPE_BYTES), Base64 decoding failed",
                ));
            }
        }
    }
    let config = &request["generationConfig"];
    let modalities: Vec<&str> = config["responseModalities"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !modalities.contains(&"IMAGE") {
        return Err(bad_request(
            "fake Gemini: an image model needs generationConfig.responseModalities with IMAGE",
        ));
    }
    if config["candidateCount"].as_u64().is_some_and(|n| n > 1) {
        return Err(bad_request(&format!(
            "Multiple candidates is not enabled for models/{model}"
        )));
    }
    let image_config = &config["imageConfig"];
    if let Some(ratio) = image_config.get("aspectRatio") {
        if !ratio.as_str().is_some_and(|r| GEMINI_RATIOS.contains(&r)) {
            return Err(bad_request(&format!(
                "* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported aspect ratio {ratio}"
            )));
        }
    }
    if let Some(size) = image_config.get("imageSize") {
        if model.starts_with("gemini-2.5-flash-image") {
            return Err(bad_request(&format!(
                "fake Gemini: imageSize is not supported by {model}"
            )));
        }
        if !size.as_str().is_some_and(|s| IMAGE_SIZES.contains(&s)) {
            return Err(bad_request(&format!(
                "* GenerateContentRequest.generation_config.image_config.image_size: unsupported image size {size}"
            )));
        }
    }
    let seed = config["seed"].as_u64().unwrap_or(0);
    Ok(generate_content_reply(
        model,
        &prompt,
        seed,
        modalities.contains(&"TEXT"),
    ))
}

/// Checks an Imagen `predict` request as the real API would, and answers it.
fn predict(model: &str, request: &Value) -> Reply {
    if !model.starts_with("imagen-") {
        return Err(model_not_found(model, "predict"));
    }
    let prompt = request["instances"][0]["prompt"]
        .as_str()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad_request("instances[0].prompt is required"))?;
    let parameters = &request["parameters"];
    let n = parameters["sampleCount"].as_u64().unwrap_or(4);
    if !(1..=4).contains(&n) {
        return Err(bad_request(&format!(
            "sampleCount must be between 1 and 4, got {n}"
        )));
    }
    if let Some(ratio) = parameters.get("aspectRatio") {
        if !ratio.as_str().is_some_and(|r| IMAGEN_RATIOS.contains(&r)) {
            return Err(bad_request(&format!("unsupported aspect ratio {ratio}")));
        }
    }
    Ok(happy_body(model, Method::Predict, prompt, n as u32))
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
