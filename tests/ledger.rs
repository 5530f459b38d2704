//! The ledger's conformance suite: every test runs unchanged on SQLite and, when
//! `EASEL_TEST_PG_URL` is set, on PostgreSQL (a fresh schema each), as `tests/store.rs` does
//! for the rest of the store. Every test ends with `ledger_check` finding nothing.

use std::sync::Arc;
use std::time::Duration;

use easel::base::clock::{now_millis, Millis};
use easel::base::job::{
    Finish, IdempotencyClaim, JobParams, JobStatus, Mode, NewJob, SubmitOutcome,
};
use easel::base::ledger::{
    AccountRef, Charge, CreditPackage, EntryKind, EntryQuery, NewEntry, Order, OrderQuery,
    OrderStatus, PayOutcome, PostOutcome,
};
use easel::ledger::mj;
use easel::store::postgres::{PgSettings, PgStore};
use easel::store::sqlite::SqliteStore;
use easel::store::{CancelOutcome, NewApiKey, NewTenant, Store};

const HOUR: Millis = 3_600_000;

struct Bundle {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
}

fn ulid() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

impl Bundle {
    async fn sqlite() -> Option<Bundle> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("easel.db")).expect("open sqlite");
        Some(Bundle {
            store: Arc::new(store),
            _dir: Some(dir),
        })
    }

    async fn postgres() -> Option<Bundle> {
        let url = std::env::var("EASEL_TEST_PG_URL")
            .ok()
            .filter(|u| !u.is_empty())?;
        let settings = PgSettings {
            max_connections: 8,
            ..PgSettings::default()
        };
        let schema = format!("easel_test_{}", ulid());
        let store = PgStore::connect_with_schema(&url, &schema, &settings)
            .await
            .expect("connect to EASEL_TEST_PG_URL");
        Some(Bundle {
            store: Arc::new(store),
            _dir: None,
        })
    }
}

async fn tenant(s: &dyn Store) -> String {
    let id = format!("ten_{}", ulid());
    s.tenant_create(
        NewTenant {
            id: id.clone(),
            name: "t".into(),
            rpm_limit: 600,
            concurrency_limit: 1000,
            burst: None,
        },
        NewApiKey {
            id: format!("key_{}", ulid()),
            key_hash: easel::accounts::keys::hash_key(&ulid()),
            prefix: "img_".into(),
        },
    )
    .await
    .expect("tenant");
    id
}

fn grant(account: &AccountRef, kind: EntryKind, amount: i64, key: &str) -> NewEntry {
    NewEntry {
        account: account.clone(),
        kind,
        amount,
        idem_key: key.to_owned(),
        reason: Some("test".into()),
        actor: Some("admin_1".into()),
        at: now_millis(),
    }
}

async fn fund(s: &dyn Store, account: &AccountRef, amount: i64) {
    let outcome = s
        .ledger_post(grant(
            account,
            EntryKind::Gift,
            amount,
            &format!("fund:{}", ulid()),
        ))
        .await
        .expect("post");
    assert!(matches!(outcome, PostOutcome::Posted(_)), "{outcome:?}");
}

fn paid_job(tenant_id: &str, account: &AccountRef, amount: i64) -> NewJob {
    NewJob {
        id: format!("job_{}", ulid()),
        tenant_id: tenant_id.to_owned(),
        prompt: "a paid lighthouse".into(),
        mode: Mode::Draft,
        input_image_url: None,
        params: JobParams::default(),
        provider: "local".into(),
        max_attempts: 2,
        created_at: now_millis(),
        cancel_at: None,
        deadline_at: now_millis() + HOUR,
        idempotency: None,
        webhook_url: None,
        charge: Some(Charge {
            account: account.clone(),
            amount,
        }),
        follow_up: None,
    }
}

async fn submit(s: &dyn Store, job: NewJob) -> String {
    match s.job_submit(job).await.expect("submit") {
        SubmitOutcome::Created { job_id } => job_id,
        other => panic!("expected Created, got {other:?}"),
    }
}

async fn balance(s: &dyn Store, account: &AccountRef) -> (i64, i64) {
    let a = s
        .ledger_account(&account.id)
        .await
        .expect("account")
        .expect("account exists");
    (a.balance, a.held)
}

async fn assert_ledger_adds_up(s: &dyn Store) {
    let differences = s.ledger_check().await.expect("check");
    assert!(differences.is_empty(), "ledger check: {differences:?}");
}

async fn claim_one(s: &dyn Store, lease: Duration) -> easel::base::job::ClaimedJob {
    let mut claimed = s.job_claim("wrk", 1, lease).await.expect("claim");
    assert_eq!(claimed.len(), 1, "one job to claim");
    claimed.remove(0)
}

// ---- scenarios ----

async fn posting_is_idempotent_and_never_negative(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let user = AccountRef::user(&t, "u1");
    let first = s
        .ledger_post(grant(&user, EntryKind::Recharge, 50, "order:A"))
        .await
        .unwrap();
    let PostOutcome::Posted(entry) = first else {
        panic!("{first:?}")
    };
    assert_eq!((entry.kind, entry.amount), (EntryKind::Recharge, 50));
    // The same key again: the first entry, nothing new.
    let again = s
        .ledger_post(grant(&user, EntryKind::Recharge, 999, "order:A"))
        .await
        .unwrap();
    assert_eq!(again, PostOutcome::Duplicate(entry));
    assert_eq!(balance(s, &user).await, (50, 0));
    let too_much = s
        .ledger_post(grant(&user, EntryKind::Adjustment, -51, "adj:1"))
        .await
        .unwrap();
    assert_eq!(
        too_much,
        PostOutcome::Insufficient {
            required: 51,
            available: 50
        }
    );
    let ok = s
        .ledger_post(grant(&user, EntryKind::Adjustment, -20, "adj:2"))
        .await
        .unwrap();
    assert!(matches!(ok, PostOutcome::Posted(ref e) if e.actor.as_deref() == Some("admin_1")));
    assert_eq!(balance(s, &user).await, (30, 0));
    // Job kinds cannot be posted by hand.
    assert!(s
        .ledger_post(grant(&user, EntryKind::Hold, -1, "h"))
        .await
        .is_err());
    let totals = s.ledger_totals(&user.id).await.unwrap();
    assert_eq!((totals.recharged, totals.recharge_count), (50, 1));
    assert_eq!(totals.granted, 50);
    let page = s
        .ledger_entries(EntryQuery {
            account_id: user.id.clone(),
            kinds: vec![EntryKind::Adjustment],
            limit: 10,
            ..EntryQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.items[0].amount, -20);
    assert_ledger_adds_up(s).await;
}

async fn a_paid_job_holds_then_settles(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let user = AccountRef::user(&t, "u1");
    fund(s, &user, 5).await;
    let id = submit(s, paid_job(&t, &user, 2)).await;
    assert_eq!(balance(s, &user).await, (3, 2));
    assert_ledger_adds_up(s).await;
    let c = claim_one(s, Duration::from_secs(600)).await;
    // A retry keeps the hold: the job has not ended.
    s.job_finish(
        &id,
        c.fence,
        Finish::Retry {
            run_at: now_millis(),
            error_code: "UPSTREAM_5XX".into(),
            error_message: "busy".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(balance(s, &user).await, (3, 2));
    let c = claim_one(s, Duration::from_secs(600)).await;
    s.job_finish(
        &id,
        c.fence,
        Finish::Succeeded {
            result_keys: vec!["k".into()],
            meta: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(balance(s, &user).await, (3, 0));
    let totals = s.ledger_totals(&user.id).await.unwrap();
    assert_eq!((totals.settled, totals.hold_count), (2, 1));
    assert_ledger_adds_up(s).await;
}

async fn failed_canceled_and_expired_jobs_release(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let user = AccountRef::user(&t, "u1");
    fund(s, &user, 10).await;
    // FAILED (a safety block is a final failure).
    let failed = submit(s, paid_job(&t, &user, 1)).await;
    let c = claim_one(s, Duration::from_secs(600)).await;
    s.job_finish(
        &failed,
        c.fence,
        Finish::Failed {
            error_code: "CONTENT_BLOCKED".into(),
            error_message: "safety".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(balance(s, &user).await, (10, 0));
    // CANCELED by the client.
    let canceled = submit(s, paid_job(&t, &user, 1)).await;
    assert_eq!(
        s.job_cancel(&t, &canceled).await.unwrap(),
        CancelOutcome::Canceled
    );
    assert_eq!(balance(s, &user).await, (10, 0));
    // CANCELED while RUNNING: released in the cancel's transaction.
    let running = submit(s, paid_job(&t, &user, 2)).await;
    claim_one(s, Duration::from_secs(600)).await;
    assert_eq!(balance(s, &user).await, (8, 2));
    assert_eq!(
        s.job_cancel(&t, &running).await.unwrap(),
        CancelOutcome::Canceled
    );
    assert_eq!(balance(s, &user).await, (10, 0));
    // Canceled by Cancel-After, and failed by its deadline, in the maintenance pass.
    let now = now_millis();
    let mut late = paid_job(&t, &user, 1);
    late.cancel_at = Some(now + 10);
    submit(s, late).await;
    let mut overdue = paid_job(&t, &user, 1);
    overdue.deadline_at = now + 10;
    submit(s, overdue).await;
    assert_eq!(balance(s, &user).await, (8, 2));
    let done = s.job_maintain(now + 1_000).await.unwrap();
    assert_eq!((done.canceled, done.expired), (1, 1));
    assert_eq!(balance(s, &user).await, (10, 0));
    // A lost lease out of attempts fails (released); the requeue before it kept the hold.
    let lost = submit(s, paid_job(&t, &user, 3)).await;
    for round in 0..2 {
        claim_one(s, Duration::from_millis(1)).await;
        s.job_maintain(now_millis() + 60_000).await.unwrap();
        let held = if round == 0 { 3 } else { 0 };
        assert_eq!(balance(s, &user).await, (10 - held, held), "round {round}");
    }
    let job = s.job_get(&t, &lost).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Failed);
    let totals = s.ledger_totals(&user.id).await.unwrap();
    assert_eq!(totals.settled, 0);
    assert_ledger_adds_up(s).await;
}

async fn a_refused_charge_creates_nothing(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let user = AccountRef::user(&t, "u1");
    // An account never funded cannot pay.
    let outcome = s.job_submit(paid_job(&t, &user, 1)).await.unwrap();
    assert_eq!(
        outcome,
        SubmitOutcome::InsufficientCredits {
            required: 1,
            available: 0
        }
    );
    fund(s, &user, 2).await;
    let mut keyed = paid_job(&t, &user, 3);
    keyed.idempotency = Some(IdempotencyClaim {
        key: "k1".into(),
        request_hash: "h".into(),
    });
    let refused = s.job_submit(keyed.clone()).await.unwrap();
    assert_eq!(
        refused,
        SubmitOutcome::InsufficientCredits {
            required: 3,
            available: 2
        }
    );
    assert!(s.job_get(&t, &keyed.id).await.unwrap().is_none());
    // The key was not kept either: once funded, the same request goes through.
    fund(s, &user, 1).await;
    assert_eq!(submit(s, keyed).await.len(), 30);
    assert_eq!(balance(s, &user).await, (0, 3));
    assert_ledger_adds_up(s).await;
}

async fn parallel_paid_submits_never_overdraw(b: Bundle) {
    let s = b.store.clone();
    let t = tenant(s.as_ref()).await;
    let user = AccountRef::user(&t, "u1");
    fund(s.as_ref(), &user, 50).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let (s, job) = (s.clone(), paid_job(&t, &user, 1));
        tasks.spawn(async move { s.job_submit(job).await.expect("submit") });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task") {
            SubmitOutcome::Created { .. } => created += 1,
            SubmitOutcome::InsufficientCredits { .. } => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((created, refused), (50, 50));
    assert_eq!(balance(s.as_ref(), &user).await, (0, 50));
    let open = s.job_open_counts().await.unwrap();
    assert_eq!(open.queued, 50);
    assert_ledger_adds_up(s.as_ref()).await;
}

async fn a_debit_sees_every_credit_after_many_holds(b: Bundle) {
    // Many holds spread a large balance (on PostgreSQL, over hold stripes); a debit of all
    // that is left still goes through, and one credit more is refused with the true balance.
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let user = AccountRef::user(&t, "u1");
    fund(s, &user, 1_000).await;
    for _ in 0..20 {
        submit(s, paid_job(&t, &user, 3)).await;
    }
    assert_eq!(balance(s, &user).await, (940, 60));
    let all = grant(&user, EntryKind::Adjustment, -940, "debit:all");
    let outcome = s.ledger_post(all).await.expect("post");
    assert!(matches!(outcome, PostOutcome::Posted(_)), "{outcome:?}");
    let more = grant(&user, EntryKind::Adjustment, -1, "debit:more");
    let outcome = s.ledger_post(more).await.expect("post");
    assert!(
        matches!(
            outcome,
            PostOutcome::Insufficient {
                required: 1,
                available: 0
            }
        ),
        "{outcome:?}"
    );
    let refused = s.job_submit(paid_job(&t, &user, 1)).await.expect("submit");
    assert!(
        matches!(refused, SubmitOutcome::InsufficientCredits { .. }),
        "{refused:?}"
    );
    assert_eq!(balance(s, &user).await, (0, 60));
    assert_ledger_adds_up(s).await;
}

async fn an_order_is_paid_exactly_once(b: Bundle) {
    let s = b.store.clone();
    let t = tenant(s.as_ref()).await;
    let user = AccountRef::user(&t, "u1");
    let order = Order {
        order_no: format!("ORDER{}", ulid()),
        tenant_id: t.clone(),
        account_id: user.id.clone(),
        package_id: "standard".into(),
        credits: 50,
        amount_cents: 3990,
        payment_method: "wechat".into(),
        status: OrderStatus::Pending,
        paid_via: None,
        created_at: now_millis(),
        paid_at: None,
    };
    s.order_create(&user, order.clone()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (s, t, no) = (s.clone(), t.clone(), order.order_no.clone());
        tasks.spawn(async move { s.order_pay(&t, &no, "callback", now_millis()).await });
    }
    let (mut paid, mut again) = (0, 0);
    while let Some(outcome) = tasks.join_next().await {
        match outcome.expect("task").expect("pay") {
            PayOutcome::Paid(_) => paid += 1,
            PayOutcome::AlreadyPaid => again += 1,
            PayOutcome::NotFound => panic!("order vanished"),
        }
    }
    assert_eq!((paid, again), (1, 19));
    assert_eq!(balance(s.as_ref(), &user).await, (50, 0));
    let listed = s
        .order_list(OrderQuery {
            account_id: user.id.clone(),
            status: Some(OrderStatus::Paid),
            offset: 0,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(listed.total, 1);
    assert_eq!(listed.items[0].paid_via.as_deref(), Some("callback"));
    assert_eq!(
        s.order_pay(&t, "ORDER-NONE", "admin", now_millis())
            .await
            .unwrap(),
        PayOutcome::NotFound
    );
    // Another tenant cannot see or pay it.
    let other = tenant(s.as_ref()).await;
    assert!(s
        .order_get(&other, &order.order_no)
        .await
        .unwrap()
        .is_none());
    assert_ledger_adds_up(s.as_ref()).await;
}

async fn mj_app_keys_count_tokens_from_the_ledger(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let (key, row) = mj::create(s, &t, "alice", 3).await.expect("create");
    assert_eq!(key.len(), 32);
    assert!(matches!(
        mj::create(s, &t, "alice", 1).await,
        Err(mj::MjError::NameTaken(_))
    ));
    let by_key = mj::by_key(s, &key).await.expect("by key");
    assert_eq!(by_key, row);
    // The app key is a tenant API key.
    let found = s
        .api_key_find(&easel::accounts::keys::hash_key(&key))
        .await
        .unwrap()
        .expect("api key");
    assert_eq!(found.tenant.id, t);
    let info = |total, used| mj::TokenInfo {
        user_name: "alice".into(),
        token_total: total,
        token_use: used,
    };
    assert_eq!(mj::info(s, &row).await.unwrap(), info(3, 0));
    let api_key_id = row.account_id.trim_start_matches("key:").to_owned();
    let account = AccountRef::app_key(&t, &api_key_id);
    let done = submit(s, paid_job(&t, &account, 1)).await;
    let c = claim_one(s, Duration::from_secs(600)).await;
    s.job_finish(
        &done,
        c.fence,
        Finish::Succeeded {
            result_keys: vec![],
            meta: None,
        },
    )
    .await
    .unwrap();
    submit(s, paid_job(&t, &account, 1)).await;
    assert_eq!(mj::info(s, &row).await.unwrap(), info(3, 2));
    assert!(mj::update_tokens(s, &row, 1).await.is_err(), "below use");
    assert_eq!(mj::update_tokens(s, &row, 10).await.unwrap(), info(10, 2));
    // Reset gives back what settled; the open call stays in use.
    assert_eq!(mj::reset_usage(s, &row).await.unwrap(), info(10, 1));
    assert_eq!(mj::reset_usage(s, &row).await.unwrap(), info(10, 1));
    assert_ledger_adds_up(s).await;
}

async fn packages_default_to_the_origin_four(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s).await;
    let ids = |ps: Vec<CreditPackage>| ps.into_iter().map(|p| p.package_id).collect::<Vec<_>>();
    let defaults = s.packages(&t).await.unwrap();
    assert_eq!(defaults[1].price_cents, 3990);
    assert!(defaults[1].popular);
    assert_eq!(
        ids(defaults.clone()),
        ["basic", "standard", "premium", "enterprise"]
    );
    let mut own = defaults[0].clone();
    own.package_id = "mini".into();
    own.credits = 3;
    s.package_set(&t, own).await.unwrap();
    assert_eq!(ids(s.packages(&t).await.unwrap()), ["mini"]);
    assert!(s.package_delete(&t, "mini").await.unwrap());
    assert_eq!(s.packages(&t).await.unwrap(), defaults);
}

async fn prices_and_billing_are_per_tenant(b: Bundle) {
    let s = b.store.clone();
    let t = tenant(s.as_ref()).await;
    let other = tenant(s.as_ref()).await;
    let pricing = easel::ledger::pricing::Pricing::with_ttl(s.clone(), Duration::ZERO);
    use easel::ledger::pricing::{Payer, Priced};
    let priced = Priced {
        operation: "generate",
        mode: "final",
        provider: "local",
        images: 2,
    };
    // The job API is free until the tenant turns prepaid billing on.
    assert_eq!(
        pricing.charge(&t, &Payer::Tenant, priced).await.unwrap(),
        None
    );
    s.billing_set_prepaid(&t, true).await.unwrap();
    let charge = pricing.charge(&t, &Payer::Tenant, priced).await.unwrap();
    assert_eq!(
        charge.map(|c| (c.account.id, c.amount)),
        Some((format!("tenant:{t}"), 2))
    );
    s.price_set(
        &t,
        easel::base::ledger::PriceRule {
            operation: "generate".into(),
            mode: "*".into(),
            provider: "*".into(),
            credits: 5,
        },
    )
    .await
    .unwrap();
    let charge = pricing.charge(&t, &Payer::Tenant, priced).await.unwrap();
    assert_eq!(charge.map(|c| c.amount), Some(10));
    // End users always pay (the default: 1 credit per image); the other tenant is untouched.
    let user = Payer::EndUser {
        user_id: "u1".into(),
    };
    let charge = pricing.charge(&other, &user, priced).await.unwrap();
    assert_eq!(
        charge.map(|c| (c.account.id, c.amount)),
        Some(("user:u1".into(), 2))
    );
    assert!(!s.billing_get(&other).await.unwrap().prepaid);
    assert!(s.price_delete(&t, "generate", "*", "*").await.unwrap());
    assert!(s.price_rules(&t).await.unwrap().is_empty());
}

macro_rules! suite {
    ($backend:ident, $factory:path; $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(bundle) = $factory().await else {
                        eprintln!("{} skipped: set EASEL_TEST_PG_URL", stringify!($backend));
                        return;
                    };
                    super::$name(bundle).await;
                }
            )*
        }
    };
    ($backend:ident, $factory:path) => {
        suite!($backend, $factory;
            posting_is_idempotent_and_never_negative,
            a_paid_job_holds_then_settles,
            failed_canceled_and_expired_jobs_release,
            a_refused_charge_creates_nothing,
            parallel_paid_submits_never_overdraw,
            a_debit_sees_every_credit_after_many_holds,
            an_order_is_paid_exactly_once,
            mj_app_keys_count_tokens_from_the_ledger,
            packages_default_to_the_origin_four,
            prices_and_billing_are_per_tenant,
        );
    };
}

suite!(sqlite, crate::Bundle::sqlite);
suite!(postgres, crate::Bundle::postgres);
