//! A fake n8n on `127.0.0.1:0` for the photo app's workflow tasks (`photo::workflow`): it takes
//! the webhook call (`POST /webhook/<name>`, answered 200 at once, as n8n's "respond
//! immediately" webhooks do), records it, and then calls Easel back the way the origin's
//! workflows did (`POST /api/callback/task-complete` with `{task_id, images: [{url: "data:...",
//! format, batch_index}], ai_description}`, or `task-failed` with `{task_id, error}`), as many
//! times as told, or never. The callback proves itself as set ([`Proof`]): the secret in the
//! URL, a signature of the body, or a wrong signature.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::ledger::payments::sign;
use crate::photo::workflow::SIGNATURE_HEADER;
use crate::providers::local::render::render_png;

/// What the fake does after a webhook call.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Calls `task-complete` this many times, with one image per batch index, leaving out
    /// the indexes in `missing`.
    Complete { times: u32, missing: Vec<u64> },
    /// Calls `task-failed` once.
    Fail(String),
    /// Never calls back.
    Silent,
}

/// How a callback proves it comes from the deployment's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// `?secret=<secret>` on the callback URL.
    UrlSecret,
    /// `X-Easel-Signature` of the body.
    Signature,
    /// A signature made with another secret.
    WrongSignature,
}

/// One webhook call as the fake saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub signature: Option<String>,
}

struct Inner {
    reply: Reply,
    proof: Proof,
    easel: String,
    received: Vec<Received>,
    /// The HTTP status of every callback sent, in order.
    callbacks: Vec<u16>,
}

struct Shared {
    secret: String,
    inner: Mutex<Inner>,
    changed: Notify,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakeN8n {
    pub base_url: String,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeN8n {
    /// Starts on an ephemeral port, signing with `secret`; panics if it cannot bind.
    pub async fn start(secret: &str) -> FakeN8n {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(listener) => listener,
            Err(e) => panic!("fake n8n cannot bind 127.0.0.1:0: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => panic!("fake n8n has no address: {e}"),
        };
        let shared = Arc::new(Shared {
            secret: secret.to_owned(),
            inner: Mutex::new(Inner {
                reply: Reply::Complete {
                    times: 1,
                    missing: Vec::new(),
                },
                proof: Proof::Signature,
                easel: String::new(),
                received: Vec::new(),
                callbacks: Vec::new(),
            }),
            changed: Notify::new(),
            http: reqwest::Client::new(),
            stop: CancellationToken::new(),
        });
        let router = Router::new()
            .route("/webhook/{name}", post(webhook))
            .with_state(shared.clone());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        FakeN8n {
            base_url: format!("http://{addr}"),
            addr,
            shared,
        }
    }

    /// The webhook URL of a workflow.
    pub fn webhook(&self, name: &str) -> String {
        format!("{}/webhook/{name}", self.base_url)
    }

    /// Where Easel is (the callbacks go to `<easel>/api/callback/...`).
    pub fn set_easel(&self, base_url: &str) {
        self.shared.lock().easel = base_url.trim_end_matches('/').to_owned();
    }

    pub fn set_reply(&self, reply: Reply) {
        self.shared.lock().reply = reply;
    }

    pub fn set_proof(&self, proof: Proof) {
        self.shared.lock().proof = proof;
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// The statuses of the callbacks sent so far.
    pub fn callbacks(&self) -> Vec<u16> {
        self.shared.lock().callbacks.clone()
    }

    /// Waits until `n` webhook calls came in.
    pub async fn wait_received(&self, n: usize) -> Vec<Received> {
        self.wait(|i| i.received.len() >= n).await;
        self.received()
    }

    /// Waits until `n` callbacks were answered; their statuses.
    pub async fn wait_callbacks(&self, n: usize) -> Vec<u16> {
        self.wait(|i| i.callbacks.len() >= n).await;
        self.callbacks()
    }

    async fn wait(&self, done: impl Fn(&Inner) -> bool) {
        loop {
            let changed = self.shared.changed.notified();
            if done(&self.shared.lock()) {
                return;
            }
            changed.await;
        }
    }

    /// Sends a `task-complete` callback for `batch_count` images now (a late one, in tests);
    /// its HTTP status.
    pub async fn complete(&self, task_id: &str, batch_count: u64) -> u16 {
        send(
            &self.shared,
            "task-complete",
            complete_body(task_id, batch_count, &[]),
        )
        .await
    }
}

impl Drop for FakeN8n {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

async fn webhook(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reply = {
        let mut inner = shared.lock();
        inner.received.push(Received {
            path: format!("/webhook/{name}"),
            body: body.clone(),
            signature,
        });
        inner.reply.clone()
    };
    shared.changed.notify_waiters();
    let task_id = body["task_id"].as_str().unwrap_or_default().to_owned();
    let batch_count = body["batch_count"].as_u64().unwrap_or(1);
    tokio::spawn(async move {
        match reply {
            Reply::Complete { times, missing } => {
                for _ in 0..times {
                    let payload = complete_body(&task_id, batch_count, &missing);
                    send(&shared, "task-complete", payload).await;
                }
            }
            Reply::Fail(error) => {
                let payload = json!({"task_id": task_id, "error": error});
                send(&shared, "task-failed", payload).await;
            }
            Reply::Silent => {}
        }
    });
    Json(json!({"message": "Workflow was started"}))
}

fn complete_body(task_id: &str, batch_count: u64, missing: &[u64]) -> Value {
    let images: Vec<Value> = (1..=batch_count)
        .filter(|i| !missing.contains(i))
        .map(|i| {
            let png = render_png(task_id, i, 8, 8);
            let b64 = base64::engine::general_purpose::STANDARD.encode(png);
            json!({"url": format!("data:image/png;base64,{b64}"), "format": "png", "batch_index": i})
        })
        .collect();
    json!({"task_id": task_id, "images": images, "ai_description": "一张海边的照片"})
}

/// Posts a callback to Easel with the proof set; records and returns its status.
async fn send(shared: &Shared, route: &str, payload: Value) -> u16 {
    let (easel, proof) = {
        let inner = shared.lock();
        (inner.easel.clone(), inner.proof)
    };
    let body = payload.to_string();
    let mut url = format!("{easel}/api/callback/{route}");
    let mut call = shared
        .http
        .post(&url)
        .header("content-type", "application/json");
    match proof {
        Proof::UrlSecret => {
            url.push_str(&format!("?secret={}", shared.secret));
            call = shared
                .http
                .post(&url)
                .header("content-type", "application/json");
        }
        Proof::Signature => {
            call = call.header(
                SIGNATURE_HEADER,
                sign(shared.secret.as_bytes(), body.as_bytes()),
            );
        }
        Proof::WrongSignature => {
            call = call.header(SIGNATURE_HEADER, sign(b"not-the-secret", body.as_bytes()));
        }
    }
    let status = match call.body(body).send().await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    };
    shared.lock().callbacks.push(status);
    shared.changed.notify_waiters();
    status
}
