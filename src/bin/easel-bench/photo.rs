//! `easel-bench photo`: the photo app's task creation against plain job submits in the same
//! run, and its works list for a user with many works. Easel's API role runs in this process
//! (no worker: jobs stay queued), on SQLite by default or a fresh PostgreSQL database with
//! `--database-url`.
//!
//! 1. Task creation: `POST /api/tasks/create` (one image: its credit held from the user's
//!    account and its job queued, in one transaction) by `--connections` mini-program users,
//!    one per connection, each with a photo uploaded; alternated with plain
//!    `POST /v1/images/generate` submits of a free tenant over the same connections (submits,
//!    tasks, submits, tasks). Each phase reports accepted requests per second; the closing
//!    line the ratio tasks / submits, and the ledger check.
//! 2. Works: `GET /api/works` (the first page of 20, with signed links) of a user with 10,000
//!    works (written in bulk, then on PostgreSQL `VACUUM ANALYZE`, as autovacuum would), one
//!    request after another for `--seconds` (p50 and p99), then over `--connections`; and
//!    the store's list call alone (the mean of 100), to tell the database's share.
//!
//! Usage: `easel-bench photo [--seconds S] [--connections C] [--database-url URL]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use easel::app::{create_tenant, App};
use easel::base::clock::now_millis;
use easel::server::Roles;
use easel::store::photo::Work;
use serde_json::{json, Value};

use crate::common::{
    bench_config, rate, remove_or_keep, runtime, submit_rate, tempfile_dir, LoadArgs, RunDatabase,
    RunningServer,
};

const USAGE: &str = "easel-bench photo [--seconds S] [--connections C] [--database-url URL]";
/// The works of the user whose list is read.
const WORKS: usize = 10_000;

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = LoadArgs::parse(argv, USAGE);
    runtime()?.block_on(run_in(args))
}

/// A signed-in mini-program user with a photo uploaded.
#[derive(Clone)]
struct User {
    token: String,
    file_name: String,
    id: String,
    seq: i64,
}

async fn run_in(args: LoadArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (mut config, listener) = bench_config(&dir).await?;
    // Sign-up is not what is measured.
    config.users.argon2_memory_kib = 64;
    config.users.argon2_iterations = 1;
    config.users.requests_per_window = 1_000_000_000;
    config.users.starting_credits = 1_000_000_000;
    let database = RunDatabase::configure(&mut config, &args).await?;
    let engine = database.engine();
    let app = App::build(config).await?;
    let free = create_tenant(app.store.as_ref(), "free", 1_000_000_000, 1_000, None).await?;
    let photo = create_tenant(app.store.as_ref(), "photo", 1_000_000_000, 1_000, None).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api_only = Roles {
        api: true,
        worker: false,
    };
    let server = RunningServer::start_with(&app, listener, api_only).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections as usize)
        .build()?;
    let mut users = Vec::new();
    for n in 0..args.connections.max(1) {
        users.push(sign_up(&app, &http, &base, &photo.tenant.id, n).await?);
    }
    let users = Arc::new(users);
    let c = args.connections;
    let seconds = Duration::from_secs(args.seconds);
    // Warm-up: connections, prepared statements, caches.
    submit_rate(&http, &base, &free.api_key, c, Duration::from_secs(1)).await;
    task_rate(&http, &base, &users, c, Duration::from_secs(1)).await;
    let (mut submits, mut tasks) = (Vec::new(), Vec::new());
    for round in 1..=2 {
        let s = submit_rate(&http, &base, &free.api_key, c, seconds).await;
        let t = task_rate(&http, &base, &users, c, seconds).await;
        println!(
            "RESULT mode=photo-task engine={engine} round={round} c={c} submit_rps={s:.0} \
             task_rps={t:.0}"
        );
        submits.push(s);
        tasks.push(t);
    }
    let (s, t) = (
        submits.iter().sum::<f64>() / 2.0,
        tasks.iter().sum::<f64>() / 2.0,
    );
    let differences = app.store.ledger_check().await?;
    println!(
        "RESULT mode=photo-task engine={engine} c={c} submit_rps={s:.0} task_rps={t:.0} \
         ratio={:.3} ledger_differences={}",
        t / s,
        differences.len()
    );

    let owner = &users[0];
    fill_works(&app, &photo.tenant.id, owner).await?;
    database.analyze(&app.config).await?;
    let query = easel::store::photo::WorkQuery {
        tenant_id: photo.tenant.id.clone(),
        user_id: Some(owner.id.clone()),
        status: Some("completed".into()),
        limit: 20,
        ..Default::default()
    };
    let started = Instant::now();
    for _ in 0..100 {
        app.store.photo_work_list(query.clone()).await?;
    }
    println!(
        "RESULT mode=photo-works engine={engine} store_list_ms={:.2}",
        started.elapsed().as_secs_f64() * 10.0
    );
    for connections in [1, c] {
        let (p50, p99, rps) = works_latency(&http, &base, &owner.token, connections, seconds).await;
        println!(
            "RESULT mode=photo-works engine={engine} works={WORKS} c={connections} \
             p50_ms={p50:.2} p99_ms={p99:.2} rps={rps:.0}"
        );
    }
    server.stop().await;
    drop(app);
    database.drop().await;
    remove_or_keep(&dir);
    Ok(())
}

/// Registers user `n` of the tenant and uploads its photo over HTTP.
async fn sign_up(
    app: &App,
    http: &reqwest::Client,
    base: &str,
    tenant_id: &str,
    n: u64,
) -> anyhow::Result<User> {
    let signed = app
        .accounts
        .register(
            tenant_id,
            &format!("u{n}@photo.bench"),
            &format!("user{n}"),
            "bench-password",
        )
        .await
        .map_err(|e| anyhow::anyhow!("register: {e}"))?;
    let png = easel::providers::local::render::render_png("a portrait", n, 64, 64);
    let b64 = base64::engine::general_purpose::STANDARD.encode(png);
    let answer: Value = http
        .post(format!("{base}/api/upload/base64"))
        .bearer_auth(&signed.access_token)
        .json(&json!({"base64": format!("data:image/png;base64,{b64}")}))
        .send()
        .await?
        .json()
        .await?;
    let file_name = answer["data"]["fileName"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("upload answered {answer}"))?;
    Ok(User {
        token: signed.access_token,
        file_name: file_name.to_owned(),
        id: signed.user.id.clone(),
        seq: signed.user.seq,
    })
}

/// Tasks of one image created per second, sender `i` as user `i`.
async fn task_rate(
    http: &reqwest::Client,
    base: &str,
    users: &Arc<Vec<User>>,
    connections: u64,
    duration: Duration,
) -> f64 {
    let (http, url, users) = (
        http.clone(),
        format!("{base}/api/tasks/create"),
        users.clone(),
    );
    rate(connections, duration, move |i| {
        let (http, url) = (http.clone(), url.clone());
        let user = users[i as usize % users.len()].clone();
        async move {
            let body = json!({"type": "fitting", "batch_count": 1, "images": [user.file_name]});
            let sent = http.post(&url).bearer_auth(&user.token).json(&body).send();
            match sent.await {
                Ok(answer) if answer.status() == 200 => true,
                Ok(answer) => {
                    eprintln!("task create answered {}", answer.status());
                    false
                }
                Err(e) => {
                    eprintln!("task create failed: {e}");
                    false
                }
            }
        }
    })
    .await
}

/// Writes [`WORKS`] completed works of two images for `user`, 64 at a time.
async fn fill_works(app: &App, tenant_id: &str, user: &User) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = now_millis();
    for chunk in (0..WORKS).collect::<Vec<_>>().chunks(64) {
        let writes = chunk.iter().map(|&i| {
            let task_id = easel::photo::new_uuid();
            let work = Work {
                work_id: easel::photo::new_uuid(),
                tenant_id: tenant_id.to_owned(),
                user_id: user.id.clone(),
                user_seq: user.seq,
                task_id: task_id.clone(),
                work_type: "fitting".into(),
                status: "completed".into(),
                images: vec![format!("bench/{i}-1.png"), format!("bench/{i}-2.png")],
                original_images: vec![user.file_name.clone()],
                parameters: json!({}),
                custom_description: None,
                ai_description: None,
                is_public: i % 10 == 0,
                is_favorite: false,
                tags: Vec::new(),
                error: None,
                created_at: now - i as i64,
                updated_at: now - i as i64,
                completed_at: Some(now - i as i64),
            };
            let store = app.store.clone();
            async move { store.photo_task_end(&task_id, "completed", work).await }
        });
        for written in futures::future::join_all(writes).await {
            written?;
        }
    }
    println!(
        "works written: {WORKS} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `GET /api/works` of the user over `connections` for `duration`: p50 and p99 (ms) and
/// requests per second.
async fn works_latency(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    connections: u64,
    duration: Duration,
) -> (f64, f64, f64) {
    let started = Instant::now();
    let deadline = started + duration;
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (http, url, token) = (http.clone(), format!("{base}/api/works"), token.to_owned());
        senders.spawn(async move {
            let mut took = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let ok = match http.get(&url).bearer_auth(&token).send().await {
                    Ok(answer) if answer.status() == 200 => answer.bytes().await.is_ok(),
                    _ => false,
                };
                if ok {
                    took.push(sent.elapsed().as_secs_f64() * 1000.0);
                }
            }
            took
        });
    }
    let mut took = Vec::new();
    while let Some(done) = senders.join_next().await {
        took.extend(done.unwrap_or_default());
    }
    took.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        took.get(((took.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    let rps = took.len() as f64 / started.elapsed().as_secs_f64();
    (pick(0.5), pick(0.99), rps)
}
