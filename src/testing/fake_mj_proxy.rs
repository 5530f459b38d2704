//! A fake midjourney-proxy (the C# edition's API; `change` of the Java one too): submits
//! answer its envelope, tasks advance one step per `fetch` (SUBMITTED, IN_PROGRESS 50%,
//! SUCCESS with a 2x2 grid or, for an upscale, one image, with buttons and the message hash),
//! and each secret may carry a fault: code 22 before running, 23, 24 banned word, 3 no
//! account, a task stuck IN_PROGRESS, an `imageUrl` that stops answering; and a proxy that
//! calls the submit's `notifyHook` (others never call it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use image::{Rgba, RgbaImage};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// What a secret's calls run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MjFault {
    #[default]
    None,
    /// Code 22 (queued) at submit; the task then runs.
    QueuedFirst,
    /// Code 23: queue full.
    QueueFull,
    /// Code 24 with `bannedWord`.
    Banned,
    /// Code 3: no account instance.
    NoAccount,
    /// The task stays IN_PROGRESS.
    Stuck,
    /// The result's `imageUrl` answers 404.
    ImageGone,
    /// The task ends at its second fetch, and at its first the proxy calls the submit's
    /// `notifyHook` with the finished task (so only that call, not `poll_ms`, wakes the poll
    /// in time).
    Hooked,
}

#[derive(Debug, Clone)]
struct FakeTask {
    action: String,
    fetches: u32,
    fault: MjFault,
    prompt: String,
    hash: String,
    hook: Option<String>,
}

#[derive(Default)]
struct Inner {
    faults: HashMap<String, MjFault>,
    tasks: HashMap<String, FakeTask>,
    /// Every submit: (path's last part, body).
    submits: Vec<(String, Value)>,
    /// notifyHook calls made (answered or not).
    hook_calls: usize,
    next: u64,
}

struct Shared {
    inner: Mutex<Inner>,
    base_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct FakeMjProxy {
    /// `http://127.0.0.1:<port>`: a key's endpoint.
    pub base_url: String,
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for FakeMjProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeMjProxy {
    /// Starts the fake; `secrets` are the `mj-api-secret`s it accepts.
    pub async fn start(secrets: &[&str]) -> FakeMjProxy {
        let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("fake midjourney-proxy cannot bind: {e}"),
        };
        let base_url = match listener.local_addr() {
            Ok(addr) => format!("http://{addr}"),
            Err(e) => panic!("fake midjourney-proxy has no address: {e}"),
        };
        let mut inner = Inner::default();
        for secret in secrets {
            inner.faults.insert((*secret).to_owned(), MjFault::None);
        }
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            base_url: base_url.clone(),
        });
        let router = Router::new()
            .route("/mj/submit/{kind}", post(submit))
            .route("/mj/task/{id}/fetch", get(fetch))
            .route("/mj/task/list-by-condition", post(list))
            .route("/img/{name}", get(picture))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
        FakeMjProxy {
            base_url,
            shared,
            stop,
        }
    }

    pub fn set_fault(&self, secret: &str, fault: MjFault) {
        self.shared.lock().faults.insert(secret.to_owned(), fault);
    }

    /// How many notifyHook calls the fake made.
    pub fn hook_calls(&self) -> usize {
        self.shared.lock().hook_calls
    }

    /// Every submit so far: (`imagine`, `action`..., body).
    pub fn submits(&self) -> Vec<(String, Value)> {
        self.shared.lock().submits.clone()
    }
}

fn envelope(code: i64, description: &str, result: Option<&str>, properties: Value) -> Response {
    Json(json!({"code": code, "description": description, "result": result, "properties": properties}))
        .into_response()
}

async fn submit(
    State(shared): State<Arc<Shared>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let secret = headers
        .get("mj-api-secret")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut inner = shared.lock();
    let Some(fault) = inner.faults.get(secret).copied() else {
        return StatusCode::UNAUTHORIZED.into_response();
    };
    inner.submits.push((kind.clone(), body.clone()));
    match fault {
        MjFault::QueueFull => return envelope(23, "队列已满，请稍后尝试", None, json!({})),
        MjFault::Banned => {
            return envelope(
                24,
                "可能包含敏感词",
                None,
                json!({"promptEn": body["prompt"], "bannedWord": "gore"}),
            )
        }
        MjFault::NoAccount => return envelope(3, "无可用的账号实例", None, Value::Null),
        _ => {}
    }
    let (action, prompt) = match kind.as_str() {
        "imagine" => (
            "IMAGINE".to_owned(),
            body["prompt"].as_str().unwrap_or("").to_owned(),
        ),
        "describe" => ("DESCRIBE".to_owned(), String::new()),
        "blend" => ("BLEND".to_owned(), String::new()),
        "action" | "change" => {
            let parent = body["taskId"].as_str().unwrap_or("");
            let Some(parent) = inner.tasks.get(parent).cloned() else {
                return envelope(3, "关联任务不存在或已失效", None, Value::Null);
            };
            let custom = body["customId"].as_str().unwrap_or("");
            let upscale = custom.contains("upsample") || body["action"] == "UPSCALE";
            let action = if upscale { "UPSCALE" } else { "VARIATION" };
            (action.to_owned(), parent.prompt)
        }
        _ => return envelope(4, "unknown submit", None, Value::Null),
    };
    inner.next += 1;
    let id = format!("17300000000{:05}", inner.next);
    let hash = format!("{:08x}-0000-4000-8000-{:012x}", inner.next, inner.next);
    inner.tasks.insert(
        id.clone(),
        FakeTask {
            action,
            fetches: 0,
            fault,
            prompt,
            hash,
            hook: body["notifyHook"].as_str().map(str::to_owned),
        },
    );
    if fault == MjFault::QueuedFirst {
        return envelope(
            22,
            "排队中，前面还有1个任务",
            Some(&id),
            json!({"numberOfQueues": 1}),
        );
    }
    envelope(1, "提交成功", Some(&id), json!({"discordInstanceId": "1"}))
}

async fn fetch(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut inner = shared.lock();
    let Some(task) = inner.tasks.get_mut(&id) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    task.fetches += 1;
    if task.fault == MjFault::Hooked && task.fetches == 1 {
        if let Some(hook) = task.hook.clone() {
            let body = json!({"id": id, "status": "SUCCESS", "progress": "100%"});
            inner.hook_calls += 1;
            tokio::spawn(async move {
                let _ = reqwest::Client::new().post(hook).json(&body).send().await;
            });
        }
    }
    let Some(task) = inner.tasks.get_mut(&id) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let (status, progress) = match (task.fetches, task.fault) {
        (2.., MjFault::Hooked) => ("SUCCESS", "100%"),
        (_, MjFault::Stuck) if task.fetches > 1 => ("IN_PROGRESS", "45%"),
        (1, _) => ("SUBMITTED", "0%"),
        (2, _) => ("IN_PROGRESS", "50%"),
        _ => ("SUCCESS", "100%"),
    };
    let hash = task.hash.clone();
    let buttons: Vec<Value> = (1..=4)
        .map(|i| json!({"customId": format!("MJ::JOB::upsample::{i}::{hash}"), "emoji": "", "label": format!("U{i}"), "type": 2, "style": 2}))
        .collect();
    let success = status == "SUCCESS";
    Json(json!({
        "id": id,
        "action": task.action,
        "status": status,
        "progress": progress,
        "prompt": task.prompt,
        "promptEn": task.prompt,
        "submitTime": 1_730_000_000_000i64,
        "imageUrl": success.then(|| format!("{}/img/{id}.png", shared.base_url)),
        "failReason": Value::Null,
        "buttons": if success { json!(buttons) } else { json!([]) },
        "properties": {
            "messageHash": if success { Some(hash) } else { None },
            "finalPrompt": if task.action == "DESCRIBE" { "1️⃣ a fake description --ar 1:1" } else { "" },
        },
    }))
    .into_response()
}

async fn list() -> Json<Value> {
    Json(json!([]))
}

/// A grid (64x64, four colours) or, for an upscale, one 32x32 image.
async fn picture(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let id = name.trim_end_matches(".png");
    let Some(task) = shared.lock().tasks.get(id).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if task.fault == MjFault::ImageGone {
        return StatusCode::NOT_FOUND.into_response();
    }
    let image = if task.action == "UPSCALE" {
        RgbaImage::from_pixel(32, 32, Rgba([200, 100, 50, 255]))
    } else {
        RgbaImage::from_fn(64, 64, |x, y| {
            let q = (x / 32 + 2 * (y / 32)) as u8;
            Rgba([q * 60, 255 - q * 60, 128, 255])
        })
    };
    match crate::providers::imageops::encode_png(&image) {
        Ok(png) => ([("content-type", "image/png")], png).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
