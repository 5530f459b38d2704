//! `GET /ws`: the photo app's socket. The client signs in with a message
//! (`{"type":"auth","token"}` → `{"type":"auth_success","message":"认证成功"}`; a missing or bad
//! token gets `{"type":"error","message":...}` and the socket closes), `{"type":"ping"}` gets
//! `{"type":"pong","timestamp"}`, and after sign-in the user's tasks are pushed to every socket
//! of that user: `task_progress` (`progress` 0-100), `task_complete` (`result: {images,
//! ai_description}`) and `task_failed` (`error`).
//!
//! The pushes come from the job events Easel already records: each socket follows its
//! tenant's event feed (the bus wakes it, across processes with Redis) and keeps the events
//! of its user's task jobs. Differences from the origin (listed in the README): the token is
//! really verified (an expired or revoked one is refused); `task_progress` is sent as each
//! image starts and ends (the origin's fixed 10/30/90/100); a cancelled task ends with
//! `task_failed` `用户取消`.

use std::collections::HashMap;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use serde_json::{json, Value};

use crate::accounts::users::{AccountError, Authed};
use crate::app::App;
use crate::base::clock::now_millis;
use crate::base::job::{JobEvent, JobStatus};
use crate::events::EventFeed;
use crate::photo::follower::outcome;
use crate::store::photo::Task;

pub async fn socket(State(app): State<App>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(move |socket| run(app, socket))
}

/// A signed-in socket: whose tasks it pushes, and the feed it reads them from.
struct Follow {
    user_id: String,
    feed: EventFeed,
    /// Job id → its task (`None`: not a task job of this user).
    tasks: HashMap<String, Option<String>>,
}

async fn send(socket: &mut WebSocket, message: Value) -> bool {
    socket
        .send(Message::text(message.to_string()))
        .await
        .is_ok()
}

async fn next_event(follow: &mut Option<Follow>) -> Option<JobEvent> {
    match follow {
        Some(f) => f.feed.next().await,
        None => std::future::pending().await,
    }
}

async fn run(app: App, mut socket: WebSocket) {
    let mut follow: Option<Follow> = None;
    loop {
        tokio::select! {
            message = socket.recv() => {
                let Some(Ok(message)) = message else { return };
                let Message::Text(text) = message else { continue };
                if !answer(&app, &mut socket, text.as_str(), &mut follow).await {
                    return;
                }
            }
            event = next_event(&mut follow) => {
                let Some(event) = event else {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                };
                if let Some(f) = follow.as_mut() {
                    if let Some(push) = push_for(&app, f, &event).await {
                        if !send(&mut socket, push).await {
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Answers a client message; `false` when the socket is done (closed, or refused).
async fn answer(
    app: &App,
    socket: &mut WebSocket,
    text: &str,
    follow: &mut Option<Follow>,
) -> bool {
    let Ok(request) = serde_json::from_str::<Value>(text) else {
        return true;
    };
    match request["type"].as_str() {
        Some("ping") => send(socket, json!({"type": "pong", "timestamp": now_millis()})).await,
        Some("auth") => match sign_in(app, request["token"].as_str()).await {
            Ok(authed) => {
                *follow = Some(start(app, authed).await);
                send(
                    socket,
                    json!({"type": "auth_success", "message": "认证成功"}),
                )
                .await
            }
            Err(message) => {
                send(socket, json!({"type": "error", "message": message})).await;
                let _ = socket.send(Message::Close(None)).await;
                false
            }
        },
        _ => true,
    }
}

async fn sign_in(app: &App, token: Option<&str>) -> Result<Authed, &'static str> {
    let token = token.filter(|t| !t.is_empty()).ok_or("缺少认证令牌")?;
    match app.accounts.authenticate(token).await {
        Ok(authed) => Ok(authed),
        Err(AccountError::Deactivated) => Err("用户不存在"),
        Err(_) => Err("认证失败"),
    }
}

async fn start(app: &App, authed: Authed) -> Follow {
    let tenant_id = authed.user.tenant_id.clone();
    let after = app.store.job_events_last_id(&tenant_id).await.unwrap_or(0);
    Follow {
        user_id: authed.user.id,
        feed: EventFeed::tenant(app.store.clone(), app.events.as_ref(), &tenant_id, after),
        tasks: HashMap::new(),
    }
}

/// The user's task the job belongs to, if any (remembered per job).
async fn task_of(app: &App, follow: &mut Follow, job_id: &str) -> Option<String> {
    if let Some(known) = follow.tasks.get(job_id) {
        return known.clone();
    }
    let task = match app.store.photo_task_of_job(job_id).await {
        Ok(task) => task
            .filter(|t| t.user_id == follow.user_id)
            .map(|t| t.task_id),
        // Not remembered: the next event of the job asks again.
        Err(_) => return None,
    };
    follow.tasks.insert(job_id.to_owned(), task.clone());
    task
}

/// What an event of one of the user's task jobs tells the socket.
async fn push_for(app: &App, follow: &mut Follow, event: &JobEvent) -> Option<Value> {
    if !matches!(event.status, JobStatus::Running) && !event.status.is_terminal() {
        return None;
    }
    let task_id = task_of(app, follow, &event.job_id).await?;
    let task = app
        .store
        .photo_task_get(&event.tenant_id, &task_id)
        .await
        .ok()
        .flatten()?;
    let jobs = app.store.photo_task_jobs(&task_id).await.ok()?;
    let ended = jobs.iter().filter(|j| j.status.is_terminal()).count();
    let timestamp = now_millis();
    if ended < jobs.len() || event.status == JobStatus::Running {
        let (progress, message) = if event.status == JobStatus::Running {
            // The ended jobs and how far this one's provider says it has come.
            let running = usize::from(event.progress.unwrap_or(0));
            (
                (ended * 100 + running) / jobs.len().max(1),
                "任务开始处理...".to_owned(),
            )
        } else {
            (
                ended * 100 / jobs.len(),
                format!("已完成 {ended}/{}", jobs.len()),
            )
        };
        return Some(json!({"type": "task_progress", "task_id": task_id,
                           "progress": progress, "message": message, "timestamp": timestamp}));
    }
    Some(ended_push(app, &task, &jobs, timestamp).await)
}

/// `task_complete` with the images made, or `task_failed`.
async fn ended_push(
    app: &App,
    task: &Task,
    jobs: &[crate::store::photo::TaskJob],
    timestamp: i64,
) -> Value {
    let (status, images, error) = outcome(task, jobs);
    if status != "completed" {
        let error = if status == "cancelled" {
            "用户取消".to_owned()
        } else {
            error.unwrap_or_else(|| "未知错误".into())
        };
        return json!({"type": "task_failed", "task_id": task.task_id, "error": error,
                      "timestamp": timestamp});
    }
    let mut shown = Vec::with_capacity(images.len());
    for (index, key) in images.iter().enumerate() {
        shown.push(json!({"url": app.images.link(key).await, "batch_index": index + 1}));
    }
    json!({"type": "task_complete", "task_id": task.task_id,
           "result": {"images": shown, "ai_description": null}, "timestamp": timestamp})
}
