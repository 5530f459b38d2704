//! Paid against unpaid submits in the same run: Easel's API role in this process (SQLite by
//! default, PostgreSQL with `--database-url`), two tenants, one free and one with prepaid
//! billing whose every submit holds its price from the tenant's account inside the submit
//! transaction. The load alternates between them (unpaid, paid, unpaid, paid) over the same
//! `--connections`, so both see the same machine state; each phase reports accepted submits
//! per second, and the closing line the ratio paid / unpaid.
//!
//! Usage: `easel-bench paid-submit [--seconds S] [--connections C] [--database-url URL]`.
//! With a PostgreSQL URL, a fresh database is created for the run and dropped after it.

use std::time::Duration;

use easel::app::{create_tenant, App};
use easel::base::ledger::AccountRef;
use easel::server::Roles;

use crate::common::{
    bench_config, remove_or_keep, runtime, submit_rate, tempfile_dir, LoadArgs, RunDatabase,
    RunningServer,
};

const USAGE: &str = "easel-bench paid-submit [--seconds S] [--connections C] [--database-url URL]";

pub fn run(argv: &[String]) -> anyhow::Result<()> {
    let args = LoadArgs::parse(argv, USAGE);
    runtime()?.block_on(run_in(args))
}

async fn run_in(args: LoadArgs) -> anyhow::Result<()> {
    let dir = tempfile_dir()?;
    let (mut config, listener) = bench_config(&dir).await?;
    let database = RunDatabase::configure(&mut config, &args).await?;
    let engine = database.engine();
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
    submit_rate(
        &http,
        &base,
        &free.api_key,
        args.connections,
        Duration::from_secs(1),
    )
    .await;
    submit_rate(
        &http,
        &base,
        &paid.api_key,
        args.connections,
        Duration::from_secs(1),
    )
    .await;
    let (mut unpaid, mut paid_rates) = (Vec::new(), Vec::new());
    for round in 1..=2 {
        let u = submit_rate(&http, &base, &free.api_key, args.connections, seconds).await;
        let p = submit_rate(&http, &base, &paid.api_key, args.connections, seconds).await;
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
    database.drop().await;
    remove_or_keep(&dir);
    Ok(())
}
