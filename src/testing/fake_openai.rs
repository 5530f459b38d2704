//! A fake OpenAI Images API on `127.0.0.1:0`: `POST /v1/images/generations` (JSON),
//! `/v1/images/edits` and `/v1/images/variations` (multipart), and `GET /v1/models`, answering
//! in the real shapes with small valid PNGs from the local renderer (or links to them under
//! `/files/`, for dall-e asked for `url`).
//!
//! Like the real API it checks what it is sent, field by field: a bearer key (or Azure's
//! `api-key`), the model's parameters (`response_format` refused by GPT image models, no edits
//! on dall-e-3, variations on dall-e-2 only), and on multipart routes every part: the file parts
//! (`image`, `image[]`, `mask`) must be PNG, JPEG or WebP with a filename, and every other part
//! a known text field. A refusal is a 400 in OpenAI's error shape.
//!
//! Faults are set per key and fire always or for the next N requests: 429 with `Retry-After`,
//! `insufficient_quota`, 5xx, `moderation_blocked`, 401, malformed JSON, and answers held until
//! the test releases them (no sleeps). It records per key the request count and the last
//! request: route, headers and body (JSON, or the multipart parts in order).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::providers::local::render::render_png;

/// What goes wrong with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    None,
    /// 429 `rate_limit_exceeded`, with `Retry-After` when given.
    RateLimited {
        retry_after_secs: Option<u64>,
    },
    /// 429 `insufficient_quota`: the account's credit is spent.
    InsufficientQuota,
    /// This 5xx status with OpenAI's `server_error` body.
    ServerError(u16),
    /// 400 `moderation_blocked` (`image_generation_user_error`).
    ModerationBlocked,
    /// 401 `invalid_api_key`.
    Unauthorized,
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// No answer until [`FakeOpenAi::release_held`] (then a normal one).
    Held,
}

/// A fault plan for one key: always, or for the next `n` requests. `latency` is added to
/// every request of the key (benchmarks; tests hold answers instead).
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    pub next: Option<u32>,
    pub latency: Duration,
}

impl Fault {
    pub fn always(kind: FaultKind) -> Fault {
        Fault {
            kind,
            next: None,
            latency: Duration::ZERO,
        }
    }

    pub fn next(kind: FaultKind, n: u32) -> Fault {
        Fault {
            next: Some(n),
            ..Fault::always(kind)
        }
    }

    pub fn latency(latency: Duration) -> Fault {
        Fault {
            latency,
            ..Fault::always(FaultKind::None)
        }
    }
}

/// One multipart part as the fake received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    /// The text of a field part; empty for files.
    pub text: String,
    pub len: usize,
}

/// The last request of a key.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// `images/generations`, `images/edits`, `images/variations`.
    pub route: String,
    pub headers: HashMap<String, String>,
    /// The JSON body, or the multipart text fields as an object.
    pub body: Value,
    /// Multipart parts in order (empty for JSON).
    pub parts: Vec<Part>,
}

impl Recorded {
    /// Names of the file parts in order (`image`, `image[]`, `mask`).
    pub fn file_parts(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter(|p| p.filename.is_some())
            .map(|p| p.name.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
pub struct KeyStats {
    pub requests: u64,
    pub last: Option<Recorded>,
}

#[derive(Default)]
struct Inner {
    plans: HashMap<String, Fault>,
    stats: HashMap<String, KeyStats>,
    held: usize,
    files: HashMap<String, Bytes>,
}

struct Shared {
    inner: Mutex<Inner>,
    stop: CancellationToken,
    /// Bumped by `release_held`; held requests wait for a change.
    release: watch::Sender<u64>,
    /// Bumped whenever a request starts being held.
    held_changed: watch::Sender<usize>,
    base_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake. Stops when dropped.
pub struct FakeOpenAi {
    /// `http://127.0.0.1:<port>/v1`: a key's base URL.
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeOpenAi {
    pub async fn start() -> FakeOpenAi {
        match FakeOpenAi::try_start().await {
            Ok(fake) => fake,
            Err(e) => panic!("fake OpenAI cannot bind 127.0.0.1:0: {e}"),
        }
    }

    pub async fn try_start() -> std::io::Result<FakeOpenAi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            stop: CancellationToken::new(),
            release: watch::channel(0).0,
            held_changed: watch::channel(0).0,
            base_url: format!("http://{addr}"),
        });
        let router = Router::new()
            .route("/v1/images/generations", post(generations))
            .route("/v1/images/edits", post(edits))
            .route("/v1/images/variations", post(variations))
            .route("/v1/models", get(models))
            .route("/files/{name}", get(file))
            .fallback(|| async {
                error(404, "invalid_request_error", None, "Unknown route").into_response()
            })
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(shared.clone());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "fake OpenAI stopped with an error");
            }
        });
        Ok(FakeOpenAi {
            base_url: format!("http://{addr}/v1"),
            addr,
            shared,
        })
    }

    pub fn set_fault(&self, key: &str, fault: Fault) {
        self.shared.lock().plans.insert(key.to_owned(), fault);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().plans.clear();
    }

    pub fn stats(&self, key: &str) -> KeyStats {
        self.shared
            .lock()
            .stats
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until at least `n` requests are being held.
    pub async fn wait_held(&self, n: usize) {
        let mut changes = self.shared.held_changed.subscribe();
        while self.shared.lock().held < n {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Lets every held request answer (normally).
    pub fn release_held(&self) {
        self.shared.release.send_modify(|g| *g += 1);
    }
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

/// An error answer in OpenAI's shape.
struct Refusal {
    status: u16,
    body: Value,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.body)).into_response()
    }
}

fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> Refusal {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    Refusal { status, body }
}

fn no_key() -> Refusal {
    error(
        401,
        "invalid_request_error",
        None,
        "You didn't provide an API key.",
    )
}

fn bad_key() -> Refusal {
    error(
        401,
        "invalid_request_error",
        Some("invalid_api_key"),
        "Incorrect API key provided.",
    )
}

fn invalid(message: &str) -> Refusal {
    error(400, "invalid_request_error", None, message)
}

/// The key a request carries: `Authorization: Bearer` or Azure's `api-key`.
fn key_of(headers: &HeaderMap) -> Option<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header("api-key"))
        .map(str::to_owned)
}

/// Records the request and draws its fault. `Err` is the answer when the key is missing.
fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    recorded: Recorded,
) -> Result<(String, Fault), Refusal> {
    let key = key_of(headers).ok_or_else(no_key)?;
    let mut inner = shared.lock();
    let stats = inner.stats.entry(key.clone()).or_default();
    stats.requests += 1;
    stats.last = Some(recorded);
    let fault = match inner.plans.get_mut(&key) {
        None => Fault::always(FaultKind::None),
        Some(plan) => match plan.next {
            Some(0) => Fault::latency(plan.latency),
            Some(n) => {
                plan.next = Some(n - 1);
                plan.clone()
            }
            None => plan.clone(),
        },
    };
    Ok((key, fault))
}

fn header_map(headers: &HeaderMap) -> HashMap<String, String> {
    headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// The fault's answer, or `None` to answer normally (after a hold, if held).
async fn apply(shared: &Shared, fault: &Fault) -> Option<Response> {
    if !fault.latency.is_zero() {
        tokio::time::sleep(fault.latency).await;
    }
    Some(match &fault.kind {
        FaultKind::None => return None,
        FaultKind::Held => {
            let mut release = shared.release.subscribe();
            release.borrow_and_update();
            {
                let mut inner = shared.lock();
                inner.held += 1;
                let held = inner.held;
                shared.held_changed.send_replace(held);
            }
            tokio::select! {
                _ = release.changed() => {}
                _ = shared.stop.cancelled() => {}
            }
            shared.lock().held -= 1;
            return None;
        }
        FaultKind::RateLimited { retry_after_secs } => {
            let mut r = error(
                429,
                "requests",
                Some("rate_limit_exceeded"),
                "Rate limit reached for images per minute (IPM).",
            )
            .into_response();
            if let Some(secs) = retry_after_secs {
                if let Ok(v) = secs.to_string().parse() {
                    r.headers_mut().insert("retry-after", v);
                }
            }
            r
        }
        FaultKind::InsufficientQuota => error(
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            "You exceeded your current quota, please check your plan and billing details.",
        )
        .into_response(),
        FaultKind::ServerError(status) => error(
            *status,
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        )
        .into_response(),
        FaultKind::ModerationBlocked => error(
            400,
            "image_generation_user_error",
            Some("moderation_blocked"),
            "Your request was rejected by the safety system.",
        )
        .into_response(),
        FaultKind::Unauthorized => bad_key().into_response(),
        FaultKind::MalformedJson => {
            (StatusCode::OK, "{\"created\": 17, \"data\": [{\"b64_").into_response()
        }
    })
}

fn is_gpt_image(model: &str) -> bool {
    model.starts_with("gpt-image-") || model.starts_with("chatgpt-image")
}

/// Checks the parameters every route shares, as the real API does.
fn check_params(body: &Map<String, Value>, model: &str) -> Result<(), Refusal> {
    if is_gpt_image(model) && body.contains_key("response_format") {
        return Err(invalid("Unknown parameter: 'response_format'."));
    }
    if !is_gpt_image(model) {
        for field in [
            "background",
            "output_format",
            "output_compression",
            "moderation",
            "input_fidelity",
        ] {
            if body.contains_key(field) {
                return Err(invalid(&format!("Unknown parameter: '{field}'.")));
            }
        }
    }
    if body.contains_key("style") && model != "dall-e-3" {
        return Err(invalid("Unknown parameter: 'style'."));
    }
    Ok(())
}

fn number(body: &Map<String, Value>, field: &str) -> Result<Option<u64>, Refusal> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_u64()),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(&format!("Invalid type for '{field}': expected an integer."))),
        Some(_) => Err(invalid(&format!("Invalid type for '{field}'."))),
    }
}

/// A normal answer: `n` images for `prompt`, in the shape `model` answers with.
fn images_reply(
    shared: &Shared,
    body: &Map<String, Value>,
    model: &str,
    seed: u64,
) -> Result<Response, Refusal> {
    let n = number(body, "n")?.unwrap_or(1);
    if !(1..=10).contains(&n) || (model == "dall-e-3" && n != 1) {
        return Err(invalid("Invalid 'n': out of range."));
    }
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
    let as_url = !is_gpt_image(model)
        && body.get("response_format").and_then(Value::as_str) != Some("b64_json");
    let mut data = Vec::new();
    for i in 0..n {
        let png = render_png(prompt, seed.wrapping_add(i), 8, 8);
        let mut item = Map::new();
        if as_url {
            let name = format!("img-{}.png", ulid::Ulid::new());
            shared.lock().files.insert(name.clone(), Bytes::from(png));
            item.insert(
                "url".into(),
                json!(format!("{}/files/{name}", shared.base_url)),
            );
        } else {
            item.insert(
                "b64_json".into(),
                json!(base64::engine::general_purpose::STANDARD.encode(png)),
            );
        }
        if model == "dall-e-3" {
            item.insert("revised_prompt".into(), json!(format!("{prompt}, revised")));
        }
        data.push(Value::Object(item));
    }
    let mut reply = json!({"created": 1_713_833_628, "data": data});
    if is_gpt_image(model) {
        let text = |f: &str, d: &str| body.get(f).and_then(Value::as_str).unwrap_or(d).to_owned();
        let size = match text("size", "auto").as_str() {
            "auto" => "1024x1024".to_owned(),
            other => other.to_owned(),
        };
        reply["size"] = json!(size);
        reply["quality"] = json!(match text("quality", "auto").as_str() {
            "auto" => "high".to_owned(),
            q => q.to_owned(),
        });
        reply["background"] = json!(match text("background", "auto").as_str() {
            "auto" => "opaque".to_owned(),
            b => b.to_owned(),
        });
        reply["output_format"] = json!(text("output_format", "png"));
        reply["usage"] = json!({"input_tokens": 50, "input_tokens_details": {"text_tokens": 10, "image_tokens": 40},
            "output_tokens": 4160 * n, "output_tokens_details": {"image_tokens": 4160 * n, "text_tokens": 0},
            "total_tokens": 50 + 4160 * n});
    }
    Ok((StatusCode::OK, Json(reply)).into_response())
}

async fn answer(
    shared: &Shared,
    headers: &HeaderMap,
    recorded: Recorded,
    model: &str,
    check: Result<(), Refusal>,
) -> Response {
    let body = recorded.body.as_object().cloned().unwrap_or_default();
    let seed = recorded.parts.iter().map(|p| p.len as u64).sum::<u64>();
    let (_key, fault) = match admit(shared, headers, recorded) {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    if let Some(faulty) = apply(shared, &fault).await {
        return faulty;
    }
    if let Err(refused) = check.and_then(|()| check_params(&body, model)) {
        return refused.into_response();
    }
    images_reply(shared, &body, model, seed).unwrap_or_else(IntoResponse::into_response)
}

async fn generations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let recorded = Recorded {
        route: "images/generations".into(),
        headers: header_map(&headers),
        body: parsed.as_ref().cloned().unwrap_or(Value::Null),
        parts: Vec::new(),
    };
    let model = recorded
        .body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("dall-e-2")
        .to_owned();
    let check = match &parsed {
        Ok(Value::Object(o)) if o.get("prompt").and_then(Value::as_str).is_some() => Ok(()),
        Ok(_) => Err(invalid("Missing required parameter: 'prompt'.")),
        Err(_) => Err(invalid("We could not parse the JSON body of your request.")),
    };
    answer(&shared, &headers, recorded, &model, check).await
}

/// Reads every part, checking each one: files must be images with a filename; fields known.
async fn read_form(
    mut form: Multipart,
    files: &[&str],
    fields: &[&str],
) -> Result<(Vec<Part>, Map<String, Value>), Refusal> {
    let mut parts = Vec::new();
    let mut text = Map::new();
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(invalid(&format!("Invalid multipart body: {e}"))),
        };
        let name = field.name().unwrap_or("").to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| invalid(&format!("Invalid multipart body: {e}")))?;
        if files.contains(&name.as_str()) {
            if filename.is_none() {
                return Err(invalid(&format!("'{name}' must be a file upload.")));
            }
            if crate::providers::gemini::classify::sniff_image(&bytes).is_none() {
                return Err(invalid(&format!("Invalid file '{name}': unsupported mimetype. Supported file formats are 'image/jpeg', 'image/png', and 'image/webp'.")));
            }
            parts.push(Part {
                name,
                filename,
                content_type,
                text: String::new(),
                len: bytes.len(),
            });
        } else if fields.contains(&name.as_str()) {
            let value = String::from_utf8_lossy(&bytes).into_owned();
            text.insert(name.clone(), json!(value));
            parts.push(Part {
                name,
                filename,
                content_type,
                text: value,
                len: bytes.len(),
            });
        } else {
            return Err(invalid(&format!("Unknown parameter: '{name}'.")));
        }
    }
    Ok((parts, text))
}

const EDIT_FIELDS: &[&str] = &[
    "prompt",
    "model",
    "n",
    "size",
    "quality",
    "response_format",
    "background",
    "output_format",
    "output_compression",
    "moderation",
    "input_fidelity",
    "user",
];

async fn edits(State(shared): State<Arc<Shared>>, headers: HeaderMap, form: Multipart) -> Response {
    let (parts, text) = match read_form(form, &["image", "image[]", "mask"], EDIT_FIELDS).await {
        Ok(read) => read,
        Err(refused) => return refused.into_response(),
    };
    let model = text
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("dall-e-2")
        .to_owned();
    let images = parts.iter().filter(|p| p.name.starts_with("image")).count();
    let check = if images == 0 {
        Err(invalid("Missing required parameter: 'image'."))
    } else if parts.iter().any(|p| p.name == "image") && parts.iter().any(|p| p.name == "image[]") {
        Err(invalid("Send either 'image' or 'image[]', not both."))
    } else if !text.contains_key("prompt") {
        Err(invalid("Missing required parameter: 'prompt'."))
    } else if model == "dall-e-3" {
        Err(invalid(
            "Invalid value: 'dall-e-3'. Value must be 'dall-e-2' or a GPT image model.",
        ))
    } else if model == "dall-e-2" && images > 1 {
        Err(invalid("dall-e-2 edits take one image."))
    } else {
        Ok(())
    };
    let recorded = Recorded {
        route: "images/edits".into(),
        headers: header_map(&headers),
        body: Value::Object(text),
        parts,
    };
    answer(&shared, &headers, recorded, &model, check).await
}

async fn variations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    let (parts, text) = match read_form(
        form,
        &["image"],
        &["model", "n", "size", "response_format", "user"],
    )
    .await
    {
        Ok(read) => read,
        Err(refused) => return refused.into_response(),
    };
    let model = text
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("dall-e-2")
        .to_owned();
    let check = match (
        parts.iter().filter(|p| p.name == "image").count(),
        model.as_str(),
    ) {
        (1, "dall-e-2") => Ok(()),
        (1, _) => Err(invalid(
            "Invalid value for 'model': variations take 'dall-e-2'.",
        )),
        _ => Err(invalid("Missing required parameter: 'image'.")),
    };
    let recorded = Recorded {
        route: "images/variations".into(),
        headers: header_map(&headers),
        body: Value::Object(text),
        parts,
    };
    answer(&shared, &headers, recorded, &model, check).await
}

/// `GET /v1/models`, what key probes call: a key whose plan is `Unauthorized` is refused.
async fn models(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let key = key_of(&headers).ok_or_else(no_key)?;
    let rejected = shared
        .lock()
        .plans
        .get(&key)
        .is_some_and(|p| p.kind == FaultKind::Unauthorized);
    if rejected {
        return Err(bad_key());
    }
    let ids = ["gpt-image-1", "gpt-image-1-mini", "dall-e-2", "dall-e-3"];
    let data: Vec<Value> = ids.iter().map(|id| json!({"id": id, "object": "model", "created": 1_698_785_189, "owned_by": "system"})).collect();
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

async fn file(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match shared.lock().files.get(&name) {
        Some(bytes) => ([("content-type", "image/png")], bytes.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
