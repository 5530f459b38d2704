//! Live job events over real HTTP: the SSE job and tenant streams, their resume by
//! `Last-Event-ID`, tenant isolation, the WebSocket stream, volume and shutdown. Each test
//! starts its own server; the job events table is the ground truth the streams are checked
//! against.

mod common;

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use common::{expect_error, keys, spawn_app, spawn_app_with, timestamp_millis, TestApp, API_ONLY};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(15);
const TERMINAL: &[&str] = &["SUCCEEDED", "FAILED", "CANCELED"];

// ---- an SSE client over reqwest ----

#[derive(Debug, Clone)]
struct SseEvent {
    id: i64,
    event: String,
    data: Value,
}

impl SseEvent {
    fn status(&self) -> &str {
        self.data["status"].as_str().expect("status")
    }

    fn job_id(&self) -> &str {
        self.data["jobId"].as_str().expect("jobId")
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// One open event stream. Parses `id:`, `event:` and `data:` lines; skips comments.
struct Sse {
    body: ByteStream,
    buf: Vec<u8>,
}

impl Sse {
    /// Opens `path` with `key`, optionally resuming with a `Last-Event-ID` header.
    async fn open(app: &TestApp, key: &str, path: &str, last_event_id: Option<i64>) -> Sse {
        let response = sse_request(app, key, path, last_event_id).await;
        assert_eq!(response.status(), 200, "GET {path}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Sse {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the server closed the stream. Panics after `WAIT`.
    async fn next(&mut self) -> Option<SseEvent> {
        tokio::time::timeout(WAIT, self.next_inner())
            .await
            .expect("no event or end of stream in time")
    }

    async fn next_inner(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("utf-8");
                if let Some(event) = parse_block(&text) {
                    return Some(event);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(e)) => panic!("stream failed: {e}"),
                None => {
                    assert!(
                        self.buf.iter().all(|b| b.is_ascii_whitespace()),
                        "stream ended inside an event"
                    );
                    return None;
                }
            }
        }
    }

    /// Reads events until the server closes the stream.
    async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

async fn sse_request(
    app: &TestApp,
    key: &str,
    path: &str,
    last_event_id: Option<i64>,
) -> reqwest::Response {
    let mut request = app.http.get(app.url(path)).bearer_auth(key);
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id.to_string());
    }
    request.send().await.expect("send")
}

/// One SSE block as an event; `None` for a comment-only (keep-alive) block.
fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.parse::<i64>().expect("numeric id")),
            "event" => event = Some(value.to_owned()),
            "data" => data.push(value.to_owned()),
            other => panic!("unexpected SSE field {other:?} in {block:?}"),
        }
    }
    if data.is_empty() {
        return None;
    }
    let data: Value = serde_json::from_str(&data.join("\n")).expect("data is JSON");
    Some(SseEvent {
        id: id.expect("every event has an id"),
        event: event.expect("every event has a name"),
        data,
    })
}

// ---- a WebSocket client ----

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server sent next: a JSON text frame, or the close (with its code).
#[derive(Debug)]
enum WsItem {
    Json(Value),
    Closed(Option<CloseCode>),
}

fn ws_url(app: &TestApp, query: &str) -> String {
    format!(
        "{}/v1/events/ws{query}",
        app.base.replace("http://", "ws://")
    )
}

/// Connects with `Authorization: Bearer <key>` (when given); panics unless upgraded.
async fn ws_connect(app: &TestApp, query: &str, key: Option<&str>) -> Ws {
    match ws_try_connect(app, query, key).await {
        Ok(ws) => ws,
        Err(status) => panic!("WebSocket refused with HTTP {status}"),
    }
}

/// Connects, or returns the HTTP status of the refusal.
async fn ws_try_connect(app: &TestApp, query: &str, key: Option<&str>) -> Result<Ws, u16> {
    let mut request = ws_url(app, query).into_client_request().expect("request");
    if let Some(key) = key {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

/// The next JSON frame or the close; skips pings and heartbeats. Panics after `WAIT`.
async fn ws_next(ws: &mut Ws) -> WsItem {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
                    if value["type"] == "heartbeat" {
                        continue;
                    }
                    return WsItem::Json(value);
                }
                Some(Ok(Message::Close(frame))) => return WsItem::Closed(frame.map(|f| f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return WsItem::Closed(None),
            }
        }
    })
    .await
    .expect("no frame in time")
}

/// Expects the `ready` frame first and returns its `lastEventId`.
async fn ws_ready(ws: &mut Ws) -> i64 {
    match ws_next(ws).await {
        WsItem::Json(v) if v["type"] == "ready" => v["lastEventId"].as_i64().expect("cursor"),
        other => panic!("expected ready, got {other:?}"),
    }
}

/// Reads event frames until the server closes; returns them and the close code.
async fn ws_rest(ws: &mut Ws) -> (Vec<Value>, Option<CloseCode>) {
    let mut events = Vec::new();
    loop {
        match ws_next(ws).await {
            WsItem::Json(v) => {
                assert_eq!(v["type"], "job.status", "{v}");
                events.push(v);
            }
            WsItem::Closed(code) => return (events, code),
        }
    }
}

// ---- helpers ----

async fn submitted_as(app: &TestApp, key: &str) -> String {
    let response = app
        .submit_as(key, json!({"prompt": "a red fox", "mode": "draft"}), None)
        .await;
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    assert_eq!(status, 202, "{body}");
    body["jobId"].as_str().expect("jobId").to_owned()
}

async fn submitted(app: &TestApp) -> String {
    submitted_as(app, &app.api_key).await
}

/// The job's event ids in the store, in order.
async fn stored_ids(app: &TestApp, job_id: &str) -> Vec<i64> {
    app.app
        .store
        .job_events(job_id)
        .await
        .expect("events")
        .iter()
        .map(|e| e.id)
        .collect()
}

fn ids(events: &[SseEvent]) -> Vec<i64> {
    events.iter().map(|e| e.id).collect()
}

fn statuses(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(SseEvent::status).collect()
}

/// A result URL without its signature, which is rounded to the minute and may tick over
/// between two renderings of the same event.
fn unsigned(mut event: Value) -> Value {
    if let Some(urls) = event.get_mut("resultUrls").and_then(Value::as_array_mut) {
        for url in urls {
            let bare = url.as_str().and_then(|u| u.split('?').next()).unwrap_or("");
            *url = Value::String(bare.to_owned());
        }
    }
    event
}

// ---- SSE: one job ----

#[tokio::test]
async fn job_stream_yields_each_status_in_order_then_closes() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let job_id = submitted(&app).await;
    let mut stream = Sse::open(
        &app,
        &app.api_key,
        &format!("/v1/jobs/{job_id}/events"),
        None,
    )
    .await;
    let queued = stream.next().await.expect("QUEUED");
    assert_eq!(queued.status(), "QUEUED");
    // Only now does a worker run the job: the stream is live, not a replay.
    let _worker = app.start_worker();
    let mut events = vec![queued];
    events.extend(stream.rest().await);
    assert_eq!(statuses(&events), ["QUEUED", "RUNNING", "SUCCEEDED"]);
    assert_eq!(ids(&events), stored_ids(&app, &job_id).await);
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    for event in &events {
        assert_eq!(event.event, "job.status");
        let data = &event.data;
        assert_eq!(data["type"], "job.status");
        assert_eq!(data["eventId"], event.id);
        assert_eq!(data["jobId"], job_id.as_str());
        assert_eq!(data["tenantId"], app.tenant_id.as_str());
        assert_eq!(data["errorCode"], Value::Null);
        assert_eq!(data["errorMessage"], Value::Null);
        timestamp_millis(&data["timestamp"]);
    }
    assert_eq!(events[0].data["attempt"], 0);
    assert_eq!(events[1].data["attempt"], 1);
    assert!(events[1].data.get("resultUrls").is_none());
    let succeeded = &events[2].data;
    assert_eq!(
        keys(succeeded),
        [
            "attempt",
            "errorCode",
            "errorMessage",
            "eventId",
            "jobId",
            "resultUrls",
            "status",
            "tenantId",
            "timestamp",
            "type"
        ]
    );
    // The links are signed and served, like the job's own.
    let url = succeeded["resultUrls"][0].as_str().expect("a result URL");
    let image = app.http.get(url).send().await.expect("fetch");
    assert_eq!(image.status(), 200);
    let job = app.wait_for(&job_id, TERMINAL, WAIT).await;
    assert_eq!(
        unsigned(succeeded.clone())["resultUrls"],
        unsigned(job)["resultUrls"]
    );

    // A finished job's stream replays its history and closes.
    let mut again = Sse::open(
        &app,
        &app.api_key,
        &format!("/v1/jobs/{job_id}/events"),
        None,
    )
    .await;
    assert_eq!(ids(&again.rest().await), ids(&events));
    app.shutdown().await;
}

#[tokio::test]
async fn a_canceled_job_ends_its_stream_with_canceled() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let job_id = submitted(&app).await;
    let mut stream = Sse::open(
        &app,
        &app.api_key,
        &format!("/v1/jobs/{job_id}/events"),
        None,
    )
    .await;
    assert_eq!(stream.next().await.expect("QUEUED").status(), "QUEUED");
    let canceled = app
        .http
        .delete(app.url(&format!("/v1/jobs/{job_id}")))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("cancel");
    assert_eq!(canceled.status(), 200);
    let rest = stream.rest().await;
    assert_eq!(statuses(&rest), ["CANCELED"]);
    app.shutdown().await;
}

// ---- SSE: resume ----

#[tokio::test]
async fn resume_with_last_event_id_yields_the_rest_exactly_once_in_order() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let job_id = submitted(&app).await;
    let path = format!("/v1/jobs/{job_id}/events");
    let mut first = Sse::open(&app, &app.api_key, &path, None).await;
    let queued = first.next().await.expect("QUEUED");
    drop(first); // the connection drops...
    let _worker = app.start_worker(); // ...while the job runs and ends
    app.wait_for(&job_id, TERMINAL, WAIT).await;
    let all = stored_ids(&app, &job_id).await;
    assert_eq!(all.len(), 3);

    // Last-Event-ID header: everything after it, once, in order, then the end.
    let mut resumed = Sse::open(&app, &app.api_key, &path, Some(queued.id)).await;
    let rest = resumed.rest().await;
    assert_eq!(statuses(&rest), ["RUNNING", "SUCCEEDED"]);
    assert_eq!(ids(&rest), all[1..]);

    // ?lastEventId= does the same (for clients that cannot set headers).
    let mut by_query = Sse::open(
        &app,
        &app.api_key,
        &format!("{path}?lastEventId={}", all[1]),
        None,
    )
    .await;
    assert_eq!(ids(&by_query.rest().await), all[2..]);

    // After the terminal event there is nothing left: the stream closes at once.
    let mut past_end = Sse::open(&app, &app.api_key, &path, Some(all[2])).await;
    assert!(past_end.rest().await.is_empty());

    // A malformed cursor is a contract 400.
    let bad = sse_request(&app, &app.api_key, &format!("{path}?lastEventId=abc"), None).await;
    expect_error(bad, 400, "INVALID_REQUEST").await;
    app.shutdown().await;
}

#[tokio::test]
async fn tenant_stream_resumes_across_a_dropped_connection() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let mut stream = Sse::open(&app, &app.api_key, "/v1/events", None).await;
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(submitted(&app).await);
    }
    let first = stream.next().await.expect("first event");
    assert_eq!(
        (first.job_id(), first.status()),
        (jobs[0].as_str(), "QUEUED")
    );
    drop(stream);
    // While disconnected: the jobs run, and more are submitted.
    let _worker = app.start_worker();
    for _ in 0..2 {
        jobs.push(submitted(&app).await);
    }
    for job in &jobs {
        app.wait_for(job, TERMINAL, WAIT).await;
    }
    let expected: Vec<i64> = app
        .app
        .store
        .job_events_after(&app.tenant_id, None, first.id, 1000)
        .await
        .expect("events")
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(expected.len(), 5 * 3 - 1);
    let mut resumed = Sse::open(&app, &app.api_key, "/v1/events", Some(first.id)).await;
    let mut got = Vec::new();
    while got.len() < expected.len() {
        got.push(resumed.next().await.expect("event").id);
    }
    assert_eq!(got, expected);
    // Nothing else was pending: the next event is a new job's first.
    let later = submitted(&app).await;
    let next = resumed.next().await.expect("live event");
    assert_eq!((next.job_id(), next.status()), (later.as_str(), "QUEUED"));
    app.shutdown().await;
}

// ---- SSE: the tenant's stream ----

/// Reads the tenant stream until `sentinel`'s QUEUED event and returns what came before it.
async fn until_queued(stream: &mut Sse, sentinel: &str) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        let event = stream.next().await.expect("event");
        if event.job_id() == sentinel && event.status() == "QUEUED" {
            return events;
        }
        events.push(event);
    }
}

#[tokio::test]
async fn tenant_stream_sees_its_own_jobs_only_from_now_on() {
    let app = spawn_app().await;
    let (other_id, other_key) = app.new_tenant("other", 10_000, 50).await;
    // Finished before anyone listens: "now" is after it.
    let before = submitted(&app).await;
    app.wait_for(&before, TERMINAL, WAIT).await;

    let mut mine = Sse::open(&app, &app.api_key, "/v1/events", None).await;
    let mut theirs = Sse::open(&app, &other_key, "/v1/events", None).await;
    let mut my_jobs = HashSet::new();
    let mut their_jobs = HashSet::new();
    for _ in 0..3 {
        my_jobs.insert(submitted(&app).await);
        their_jobs.insert(submitted_as(&app, &other_key).await);
    }
    for job in &my_jobs {
        app.wait_for(job, TERMINAL, WAIT).await;
    }
    // Everything of the first tenant, then nothing more up to a fresh job of its own.
    let sentinel = submitted(&app).await;
    let events = until_queued(&mut mine, &sentinel).await;
    let mut per_job: HashMap<&str, Vec<&str>> = HashMap::new();
    for event in &events {
        assert_eq!(event.data["tenantId"], app.tenant_id.as_str());
        assert!(
            my_jobs.contains(event.job_id()),
            "foreign job in {:?}",
            event.data
        );
        per_job
            .entry(event.job_id())
            .or_default()
            .push(event.status());
    }
    assert_eq!(per_job.len(), 3);
    for statuses in per_job.values() {
        assert_eq!(statuses, &["QUEUED", "RUNNING", "SUCCEEDED"]);
    }
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));

    // The other tenant's stream holds exactly its own jobs' events.
    let mut seen = Vec::new();
    let mut terminal = 0;
    while terminal < their_jobs.len() {
        let event = theirs.next().await.expect("event");
        assert_eq!(event.data["tenantId"], other_id.as_str());
        assert!(
            their_jobs.contains(event.job_id()),
            "foreign job in {:?}",
            event.data
        );
        if TERMINAL.contains(&event.status()) {
            terminal += 1;
        }
        seen.push(event);
    }
    assert_eq!(seen.len(), 3 * 3);
    app.shutdown().await;
}

#[tokio::test]
async fn many_jobs_all_arrive_exactly_once_on_the_tenant_stream() {
    const JOBS: usize = 200;
    let app = spawn_app().await;
    let mut stream = Sse::open(&app, &app.api_key, "/v1/events", None).await;
    let mut jobs = Vec::with_capacity(JOBS);
    for chunk in 0..JOBS / 20 {
        let batch = (0..20).map(|i| {
            let app = &app;
            async move {
                let body = json!({"prompt": format!("job {chunk}-{i}"), "mode": "draft"});
                let response = app.submit(body).await;
                assert_eq!(response.status(), 202);
                let body: Value = response.json().await.expect("json");
                body["jobId"].as_str().expect("jobId").to_owned()
            }
        });
        jobs.extend(futures::future::join_all(batch).await);
    }
    let wanted: HashSet<&str> = jobs.iter().map(String::as_str).collect();
    let mut events = Vec::new();
    let mut ended = HashSet::new();
    while ended.len() < JOBS {
        let event = stream.next().await.expect("event");
        assert!(wanted.contains(event.job_id()), "{:?}", event.data);
        if TERMINAL.contains(&event.status()) {
            assert!(
                ended.insert(event.job_id().to_owned()),
                "second end of a job"
            );
        }
        events.push(event);
    }
    let sentinel = submitted(&app).await;
    events.extend(until_queued(&mut stream, &sentinel).await);
    // Strictly growing ids: no duplicates, in order; and exactly the store's events.
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let stored: Vec<i64> = app
        .app
        .store
        .job_events_after(&app.tenant_id, None, 0, 10_000)
        .await
        .expect("events")
        .into_iter()
        .filter(|e| e.job_id != sentinel)
        .map(|e| e.id)
        .collect();
    assert_eq!(ids(&events), stored);
    assert_eq!(events.len(), JOBS * 3);
    app.shutdown().await;
}

// ---- access ----

#[tokio::test]
async fn streams_need_a_key_and_hide_other_tenants_jobs() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let (_, other_key) = app.new_tenant("other", 10_000, 50).await;
    let theirs = submitted_as(&app, &other_key).await;
    let job_path = format!("/v1/jobs/{theirs}/events");

    for path in ["/v1/events", job_path.as_str()] {
        let anonymous = app.http.get(app.url(path)).send().await.expect("send");
        expect_error(anonymous, 401, "INVALID_API_KEY").await;
        let wrong = sse_request(&app, "img_not_a_key", path, None).await;
        expect_error(wrong, 401, "INVALID_API_KEY").await;
    }
    // Another tenant's job does not exist for this tenant; nor does an unknown one.
    expect_error(
        sse_request(&app, &app.api_key, &job_path, None).await,
        404,
        "JOB_NOT_FOUND",
    )
    .await;
    let unknown = sse_request(&app, &app.api_key, "/v1/jobs/nope/events", None).await;
    expect_error(unknown, 404, "JOB_NOT_FOUND").await;
    // Its owner may watch it.
    let mut owner = Sse::open(&app, &other_key, &job_path, None).await;
    assert_eq!(owner.next().await.expect("QUEUED").job_id(), theirs);

    // WebSocket: a bad key is refused before the upgrade, and so is another tenant's job.
    assert_eq!(
        ws_try_connect(&app, "", Some("img_not_a_key")).await.err(),
        Some(401)
    );
    assert_eq!(
        ws_try_connect(&app, "?apiKey=img_not_a_key", None)
            .await
            .err(),
        Some(401)
    );
    let query = format!("?jobId={theirs}");
    assert_eq!(
        ws_try_connect(&app, &query, Some(&app.api_key)).await.err(),
        Some(404)
    );
    // A wrong key in the first message closes the socket with 4401.
    let mut ws = ws_connect(&app, "", None).await;
    let auth = json!({"type": "auth", "apiKey": "img_not_a_key"}).to_string();
    ws.send(Message::text(auth)).await.expect("send");
    match ws_next(&mut ws).await {
        WsItem::Closed(Some(code)) => assert_eq!(u16::from(code), 4401),
        other => panic!("expected close 4401, got {other:?}"),
    }
    app.shutdown().await;
}

// ---- WebSocket ----

#[tokio::test]
async fn websocket_carries_the_same_events_as_sse() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let job_id = submitted(&app).await;
    let mut sse = Sse::open(
        &app,
        &app.api_key,
        &format!("/v1/jobs/{job_id}/events"),
        None,
    )
    .await;
    let mut ws = ws_connect(&app, &format!("?jobId={job_id}"), Some(&app.api_key)).await;
    assert_eq!(ws_ready(&mut ws).await, 0);
    let _worker = app.start_worker();
    let sse_events: Vec<Value> = sse
        .rest()
        .await
        .into_iter()
        .map(|e| unsigned(e.data))
        .collect();
    let (ws_events, code) = ws_rest(&mut ws).await;
    let ws_events: Vec<Value> = ws_events.into_iter().map(unsigned).collect();
    assert_eq!(ws_events, sse_events);
    let got: Vec<&str> = ws_events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, ["QUEUED", "RUNNING", "SUCCEEDED"]);
    assert_eq!(
        code,
        Some(CloseCode::Normal),
        "a job socket closes normally after its end"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn websocket_authenticates_by_first_message_and_resumes() {
    let app = spawn_app_with(|_| {}, API_ONLY).await;
    let first_job = submitted(&app).await;
    let first_event = stored_ids(&app, &first_job).await[0];

    // Browser style: no header; the key comes in the first message. Resume after the first
    // job's QUEUED event: the socket replays what followed, then goes live.
    let mut ws = ws_connect(&app, &format!("?lastEventId={first_event}"), None).await;
    let auth = json!({"type": "auth", "apiKey": app.api_key}).to_string();
    ws.send(Message::text(auth)).await.expect("send");
    assert_eq!(ws_ready(&mut ws).await, first_event);
    let second_job = submitted(&app).await;
    let _worker = app.start_worker();
    let mut ended = HashSet::new();
    let mut got = Vec::new();
    while ended.len() < 2 {
        let WsItem::Json(event) = ws_next(&mut ws).await else {
            panic!("socket closed early");
        };
        let job = event["jobId"].as_str().expect("jobId").to_owned();
        if TERMINAL.contains(&event["status"].as_str().unwrap_or("")) {
            ended.insert(job.clone());
        }
        got.push((event["eventId"].as_i64().expect("id"), job));
    }
    let expected: Vec<(i64, String)> = app
        .app
        .store
        .job_events_after(&app.tenant_id, None, first_event, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| (e.id, e.job_id))
        .collect();
    assert_eq!(got, expected);
    assert!(got.iter().any(|(_, job)| *job == second_job));
    assert!(!got.iter().any(|(id, _)| *id == first_event));
    ws.close(None).await.expect("client close");
    app.shutdown().await;
}

// ---- shutdown ----

#[tokio::test]
async fn shutdown_closes_open_streams() {
    let app = spawn_app().await;
    let mut sse = Sse::open(&app, &app.api_key, "/v1/events", None).await;
    let mut ws = ws_connect(&app, "", Some(&app.api_key)).await;
    ws_ready(&mut ws).await;
    // Graceful shutdown waits for open connections: it only ends if the streams do.
    tokio::time::timeout(WAIT, app.shutdown())
        .await
        .expect("shutdown with open streams");
    assert!(sse.next().await.is_none());
    match ws_next(&mut ws).await {
        WsItem::Closed(code) => assert_eq!(code, Some(CloseCode::Away)),
        other => panic!("expected a close, got {other:?}"),
    }
}
