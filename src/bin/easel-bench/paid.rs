//! Paid against unpaid submits in the same run: Easel's API role in this process (SQLite by
//! default, PostgreSQL with `--database-url`), two tenants, one free and one with prepaid
//! billing whose every submit holds its price from the tenant's account inside the submit
//! transaction. The load alternates between them (unpaid, paid, unpaid, paid) over the same
//! `--connections`, so both see the same machine state; each phase reports accepted submits
//! per second, and the closing line the ratio paid / unpaid.
//!
//! Usage: `easel-bench paid-submit [--seconds S] [--connections C] [--database-url URL]`.
//! With a PostgreSQL URL, a fresh database is created for the run and dropped after it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel::app::{create_tenant, App};
use easel::base::ledger::AccountRef;
use easel::server::Roles;

use crate::common::{bench_config, remove_or_keep, runtime, submit, tempfile_dir, RunningServer};

struct Args {
    seconds: u64,
    connections: u64,
    database_url: Option<String>,
}

fn parse_args(raw: &[String]) -> Args {
    let mut args = Args {
        seconds: 5,
        connections: 64,
        database_url: None,
    };
    for pair in raw.chunks(2) {
        let value = pair.get(1).cloned();
        match (pair[0].as_str(), value) {
            ("--seconds", Some(v)) if v.parse::<u64>().is_ok() => {
                args.seconds = v.parse().unwrap_or(5)
            }
            ("--connections", Some(v)) if v.parse::<u64>().is_ok() => {
                args.connections = v.parse().unwrap_or(64)
            }
            ("--database-url", Some(v)) => args.database_url = Some(v),
            _ => {
                eprintln!(
                    "usage: easel-bench paid-submit [--seconds S] [--connections C] \
                     [--database-url URL]"
                );
                std::process::exit(2);
            }
        }
    }
    args
}

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = parse_args(argv);
    runtime()?.block_on(run_in(args))
}

/// A database of its own on the PostgreSQL server of `url`; its URL, and the name to drop.
async fn fresh_pg_database(url: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection;
    let name = format!(
        "easel_bench_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    let mut parsed = url::Url::parse(url)?;
    parsed.set_path(&format!("/{name}"));
    Ok((parsed.to_string(), name))
}

async fn drop_pg_database(url: &str, name: &str) {
    use sqlx::Connection;
    if let Ok(mut conn) = sqlx::PgConnection::connect(url).await {
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
            eprintln!("could not drop {name}: {e}");
        }
    }
}

async fn run_in(args: Args) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (mut config, listener) = bench_config(&dir).await?;
    let pg = match &args.database_url {
        Some(url) => Some((url.clone(), fresh_pg_database(url).await?)),
        None => None,
    };
    if let Some((_, (db_url, _))) = &pg {
        config.database.url = Some(db_url.clone());
        config.database.max_connections = args.connections as u32;
    }
    let engine = if pg.is_some() { "postgres" } else { "sqlite" };
    let app = App::build(config).await?;
    let free = create_tenant(app.store.as_ref(), "free", 1_000_000_000, 1_000, None).await?;
    let paid = create_tenant(app.store.as_ref(), "paid", 1_000_000_000, 1_000, None).await?;
    app.store.billing_set_prepaid(&paid.tenant.id, true).await?;
    let funds = easel::ledger::Adjustment {
        account: AccountRef::tenant(&paid.tenant.id),
        amount: 1_000_000_000_000,
        gift: true,
        reason: "benchmark".into(),
        actor: "bench".into(),
        idem_key: None,
    };
    easel::ledger::adjust(app.store.as_ref(), funds).await?;
    let base = format!("http://{}", listener.local_addr()?);
    let api_only = Roles {
        api: true,
        worker: false,
    };
    let server = RunningServer::start_with(&app, listener, api_only).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections as usize)
        .build()?;
    let seconds = Duration::from_secs(args.seconds);
    // Warm-up: connections, prepared statements, the price cache.
    rate(
        &http,
        &base,
        &free.api_key,
        args.connections,
        Duration::from_secs(1),
    )
    .await;
    rate(
        &http,
        &base,
        &paid.api_key,
        args.connections,
        Duration::from_secs(1),
    )
    .await;
    let (mut unpaid, mut paid_rates) = (Vec::new(), Vec::new());
    for round in 1..=2 {
        let u = rate(&http, &base, &free.api_key, args.connections, seconds).await;
        let p = rate(&http, &base, &paid.api_key, args.connections, seconds).await;
        println!(
            "RESULT mode=paid-submit engine={engine} round={round} c={} unpaid_rps={u:.0} \
             paid_rps={p:.0}",
            args.connections
        );
        unpaid.push(u);
        paid_rates.push(p);
    }
    let (u, p) = (
        unpaid.iter().sum::<f64>() / 2.0,
        paid_rates.iter().sum::<f64>() / 2.0,
    );
    let differences = app.store.ledger_check().await?;
    println!(
        "RESULT mode=paid-submit engine={engine} unpaid_rps={u:.0} paid_rps={p:.0} \
         ratio={:.3} ledger_differences={}",
        p / u,
        differences.len()
    );
    server.stop().await;
    drop(app);
    if let Some((admin_url, (_, name))) = pg {
        drop_pg_database(&admin_url, &name).await;
    }
    remove_or_keep(&dir);
    Ok(())
}

/// Accepted submits per second over `connections` senders for `duration`.
async fn rate(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    connections: u64,
    duration: Duration,
) -> f64 {
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (http, base, key, accepted) = (
            http.clone(),
            base.to_owned(),
            key.to_owned(),
            accepted.clone(),
        );
        senders.spawn(async move {
            while Instant::now() < deadline {
                if submit(&http, &base, &key).await.is_some() {
                    accepted.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while senders.join_next().await.is_some() {}
    accepted.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}
