//! The credit ledger on PostgreSQL: accounts, entries, prices, billing, app keys, packages and
//! orders, and the SQL fragments `jobs.rs` puts into its own statements so that a job's hold,
//! settle and release commit with its status change.
//!
//! Concurrency: every balance change is one guarded `UPDATE ledger_accounts ... WHERE balance +
//! amount >= 0`, so racing holds on one account queue on its row lock and the last ones find
//! the balance too low; entry keys are unique, so a racing duplicate finds the first entry.

use async_trait::async_trait;
use std::sync::LazyLock;

use sqlx::{FromRow, PgConnection, PgPool};

use super::stripes::{self, TOTAL_BALANCE, TOTAL_HELD};
use super::PgStore;
use crate::base::clock::Millis;
use crate::base::job::JobStatus;
use crate::base::ledger::{
    judge, order_key, Account, AccountKind, AccountRef, AccountSums, AccountTotals, Billing,
    CreditPackage, Difference, Entry, EntryKind, EntryPage, EntryQuery, JobHold, MjAppKey,
    NewEntry, Order, OrderPage, OrderQuery, OrderStatus, PayOutcome, PostOutcome, PriceRule,
};
use crate::store::ledger::LedgerStore;
use crate::store::{NewApiKey, StoreError, StoreResult};

fn corrupt(what: &str) -> StoreError {
    StoreError::Unavailable(format!("corrupt ledger row: bad {what}"))
}

/// The hold of a paid submit, as the first CTE of the job's insert (`$13` the price, `$14`
/// the account, `$1` the job id, `$9` the time), taken from the job's stripe (see
/// `stripes.rs`): the job and its event are inserted `FROM acct`, so a stripe that cannot pay
/// makes the whole statement write nothing (and the caller refills it or refuses).
pub(super) static HOLD_CTE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "acct AS (
             UPDATE ledger_stripes SET balance = balance - $13, held = held + $13
             WHERE account_id = $14 AND stripe = {} AND balance >= $13
             RETURNING account_id AS id
         ), hold AS (
             INSERT INTO ledger_entries (account_id, kind, amount, held, idem_key, job_id,
                 created_at)
             SELECT id, 'hold', -$13, $13, 'job:' || $1 || ':hold', $1, $9 FROM acct
         )",
        stripes::stripe_of("$1")
    )
});

/// CTEs that settle (SUCCEEDED) or release (FAILED, CANCELED) the hold of every job a `done`
/// CTE ended, stamped `at`; appended after `done` in every statement that ends jobs. The
/// close key is the same for both, so a hold resolves once; the account's cache moves by the
/// sum of what was closed (one job or a maintenance batch), on the stripes the holds were
/// taken from.
pub(super) fn close_holds_cte(at: &str) -> String {
    let stripe = stripes::stripe_of("job_id");
    format!(
        ", hold AS (
             SELECT h.account_id, h.held, d.id AS job_id, d.status FROM done d
             JOIN ledger_entries h ON h.idem_key = 'job:' || d.id || ':hold'
             WHERE d.status IN ('SUCCEEDED', 'FAILED', 'CANCELED')
         ), closed AS (
             INSERT INTO ledger_entries
                 (account_id, kind, amount, held, idem_key, job_id, created_at)
             SELECT account_id, CASE WHEN status = 'SUCCEEDED' THEN 'settle' ELSE 'release' END,
                 CASE WHEN status = 'SUCCEEDED' THEN 0 ELSE held END, -held,
                 'job:' || job_id || ':close', job_id, {at} FROM hold
             ON CONFLICT (idem_key) DO NOTHING
             RETURNING account_id, amount, held, job_id
         ), credited AS (
             UPDATE ledger_stripes s SET balance = s.balance + c.amount, held = s.held + c.held
             FROM (SELECT account_id, {stripe} AS stripe, sum(amount)::BIGINT AS amount,
                       sum(held)::BIGINT AS held
                   FROM closed GROUP BY 1, 2) c
             WHERE s.account_id = c.account_id AND s.stripe = c.stripe
         )"
    )
}

/// What the account can spend now (0 if it was never opened).
pub(super) async fn balance_of(conn: &mut PgConnection, account_id: &str) -> StoreResult<i64> {
    Ok(sqlx::query_scalar(&format!(
        "SELECT {TOTAL_BALANCE} FROM ledger_accounts a WHERE a.id = $1"
    ))
    .bind(account_id)
    .fetch_optional(conn)
    .await?
    .unwrap_or(0))
}

const ENTRY_COLUMNS: &str =
    "id, account_id, kind, amount, held, idem_key, job_id, reason, actor, created_at";

#[derive(FromRow)]
struct EntryRow {
    id: i64,
    account_id: String,
    kind: String,
    amount: i64,
    held: i64,
    idem_key: String,
    job_id: Option<String>,
    reason: Option<String>,
    actor: Option<String>,
    created_at: Millis,
}

impl TryFrom<EntryRow> for Entry {
    type Error = StoreError;

    fn try_from(r: EntryRow) -> StoreResult<Entry> {
        Ok(Entry {
            id: r.id,
            account_id: r.account_id,
            kind: EntryKind::parse(&r.kind).ok_or_else(|| corrupt("entry kind"))?,
            amount: r.amount,
            held: r.held,
            idem_key: r.idem_key,
            job_id: r.job_id,
            reason: r.reason,
            actor: r.actor,
            created_at: r.created_at,
        })
    }
}

async fn entry_by_key(conn: &mut PgConnection, idem_key: &str) -> StoreResult<Option<Entry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE idem_key = $1");
    let row: Option<EntryRow> = sqlx::query_as(&sql)
        .bind(idem_key)
        .fetch_optional(conn)
        .await?;
    row.map(Entry::try_from).transpose()
}

async fn open_account(conn: &mut PgConnection, a: &AccountRef, at: Millis) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO ledger_accounts (id, tenant_id, kind, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&a.id)
    .bind(&a.tenant_id)
    .bind(a.kind.as_str())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the balance (never below zero) and writes the entry; `None` when the account cannot
/// pay (nothing written). A debit the row alone cannot pay first brings the stripes' credits
/// back to the row.
async fn apply(
    conn: &mut PgConnection,
    account_id: &str,
    e: &NewEntry,
) -> StoreResult<Option<Entry>> {
    let applied = apply_to_row(conn, account_id, e).await?;
    if applied.is_some() || e.amount >= 0 {
        return Ok(applied);
    }
    stripes::sweep(conn, account_id).await?;
    apply_to_row(conn, account_id, e).await
}

/// [`apply`] on the account row alone, in one statement.
async fn apply_to_row(
    conn: &mut PgConnection,
    account_id: &str,
    e: &NewEntry,
) -> StoreResult<Option<Entry>> {
    let sql = format!(
        "WITH acct AS (
             UPDATE ledger_accounts SET balance = balance + $2, updated_at = $7
             WHERE id = $1 AND balance + $2 >= 0 RETURNING id
         )
         INSERT INTO ledger_entries (account_id, kind, amount, held, idem_key, reason, actor,
             created_at)
         SELECT id, $3, $2, 0, $4, $5, $6, $7 FROM acct
         RETURNING {ENTRY_COLUMNS}"
    );
    let row: Option<EntryRow> = sqlx::query_as(&sql)
        .bind(account_id)
        .bind(e.amount)
        .bind(e.kind.as_str())
        .bind(&e.idem_key)
        .bind(&e.reason)
        .bind(&e.actor)
        .bind(e.at)
        .fetch_optional(conn)
        .await?;
    row.map(Entry::try_from).transpose()
}

/// Posts a grant inside the caller's transaction (a new user's starting credits, written by
/// the store's user creation); `None` if its key was used before.
pub(super) async fn post_in(conn: &mut PgConnection, e: &NewEntry) -> StoreResult<Option<Entry>> {
    if entry_by_key(conn, &e.idem_key).await?.is_some() {
        return Ok(None);
    }
    open_account(conn, &e.account, e.at).await?;
    apply(conn, &e.account.id, e).await
}

async fn post(pool: &PgPool, e: &NewEntry) -> StoreResult<PostOutcome> {
    if !e.kind.is_grant() {
        return Err(StoreError::Conflict(format!(
            "{} entries are written by jobs only",
            e.kind
        )));
    }
    let mut tx = pool.begin().await?;
    if let Some(first) = entry_by_key(&mut tx, &e.idem_key).await? {
        return Ok(PostOutcome::Duplicate(first));
    }
    open_account(&mut tx, &e.account, e.at).await?;
    match apply(&mut tx, &e.account.id, e).await {
        Ok(Some(entry)) => {
            tx.commit().await?;
            Ok(PostOutcome::Posted(entry))
        }
        Ok(None) => Ok(PostOutcome::Insufficient {
            required: -e.amount,
            available: balance_of(&mut tx, &e.account.id).await?,
        }),
        // A racing post with the same key committed first: it is the first entry.
        Err(StoreError::Conflict(_)) => {
            drop(tx);
            let mut conn = pool.acquire().await?;
            let first = entry_by_key(&mut conn, &e.idem_key).await?;
            first
                .map(PostOutcome::Duplicate)
                .ok_or_else(|| StoreError::Conflict("ledger entry refused".into()))
        }
        Err(other) => Err(other),
    }
}

#[derive(FromRow)]
struct AccountRow {
    id: String,
    tenant_id: String,
    kind: String,
    balance: i64,
    held: i64,
    created_at: Millis,
}

async fn account(pool: &PgPool, account_id: &str) -> StoreResult<Option<Account>> {
    let row: Option<AccountRow> = sqlx::query_as(&format!(
        "SELECT id, tenant_id, kind, {TOTAL_BALANCE} AS balance, {TOTAL_HELD} AS held,
             created_at
         FROM ledger_accounts a WHERE id = $1"
    ))
    .bind(account_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(Account {
            kind: AccountKind::parse(&r.kind).ok_or_else(|| corrupt("account kind"))?,
            id: r.id,
            tenant_id: r.tenant_id,
            balance: r.balance,
            held: r.held,
            created_at: r.created_at,
        })
    })
    .transpose()
}

const ENTRY_FILTER: &str = "account_id = $1 AND (cardinality($2::TEXT[]) = 0 OR kind = ANY($2))
     AND ($3::BIGINT IS NULL OR created_at >= $3) AND ($4::BIGINT IS NULL OR created_at < $4)";

async fn entries(pool: &PgPool, q: &EntryQuery) -> StoreResult<EntryPage> {
    let kinds: Vec<&str> = q.kinds.iter().map(|k| k.as_str()).collect();
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM ledger_entries WHERE {ENTRY_FILTER}"
    ))
    .bind(&q.account_id)
    .bind(&kinds)
    .bind(q.from)
    .bind(q.until)
    .fetch_one(pool)
    .await?;
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE {ENTRY_FILTER}
         ORDER BY id DESC LIMIT $5 OFFSET $6"
    ))
    .bind(&q.account_id)
    .bind(&kinds)
    .bind(q.from)
    .bind(q.until)
    .bind(i64::from(q.limit))
    .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(EntryPage {
        items: rows
            .into_iter()
            .map(Entry::try_from)
            .collect::<StoreResult<_>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

async fn totals(pool: &PgPool, account_id: &str) -> StoreResult<AccountTotals> {
    let (balance, held) = account(pool, account_id)
        .await?
        .map(|a| (a.balance, a.held))
        .unwrap_or((0, 0));
    let (granted, recharged, recharge_count, settled, hold_count, since_reset): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT
             coalesce(sum(amount) FILTER (WHERE kind IN ('recharge', 'gift', 'refund', 'reset')
                 OR (kind = 'adjustment' AND amount > 0)), 0)::BIGINT,
             coalesce(sum(amount) FILTER (WHERE kind = 'recharge'), 0)::BIGINT,
             count(*) FILTER (WHERE kind = 'recharge'),
             coalesce(sum(-held) FILTER (WHERE kind = 'settle'), 0)::BIGINT,
             count(*) FILTER (WHERE kind = 'hold'),
             coalesce(sum(-held) FILTER (WHERE kind = 'settle' AND id > (
                 SELECT coalesce(max(id), 0) FROM ledger_entries
                 WHERE account_id = $1 AND kind = 'reset')), 0)::BIGINT
         FROM ledger_entries WHERE account_id = $1",
    )
    .bind(account_id)
    .fetch_one(pool)
    .await?;
    Ok(AccountTotals {
        balance,
        held,
        granted,
        recharged,
        recharge_count: u64::try_from(recharge_count).unwrap_or(0),
        settled,
        hold_count: u64::try_from(hold_count).unwrap_or(0),
        settled_since_reset: since_reset,
    })
}

async fn check(pool: &PgPool) -> StoreResult<Vec<Difference>> {
    // One snapshot for both reads, so a job ending meanwhile is not a difference.
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let accounts: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT a.id, {TOTAL_BALANCE}, {TOTAL_HELD}, coalesce(sum(e.amount), 0)::BIGINT,
                 coalesce(sum(e.held), 0)::BIGINT
             FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
             GROUP BY a.id"
    ))
    .fetch_all(&mut *tx)
    .await?;
    let holds: Vec<(String, Option<String>, i64, Option<String>)> = sqlx::query_as(
        "SELECT h.job_id, j.status,
             (SELECT coalesce(sum(e.held), 0)::BIGINT FROM ledger_entries e
              WHERE e.job_id = h.job_id),
             (SELECT string_agg(e.kind, ',') FROM ledger_entries e
              WHERE e.job_id = h.job_id AND e.kind IN ('settle', 'release'))
         FROM ledger_entries h LEFT JOIN jobs j ON j.id = h.job_id WHERE h.kind = 'hold'",
    )
    .fetch_all(&mut *tx)
    .await?;
    let accounts: Vec<AccountSums> = accounts
        .into_iter()
        .map(
            |(account_id, balance, held, entries_amount, entries_held)| AccountSums {
                account_id,
                balance,
                held,
                entries_amount,
                entries_held,
            },
        )
        .collect();
    let holds: Vec<JobHold> = holds
        .into_iter()
        .map(|(job_id, status, open, closes)| JobHold {
            job_id,
            status: status.as_deref().and_then(JobStatus::parse),
            open,
            closes: closes
                .unwrap_or_default()
                .split(',')
                .filter_map(EntryKind::parse)
                .collect(),
        })
        .collect();
    Ok(judge(&accounts, &holds))
}

#[derive(FromRow)]
struct MjRow {
    name: String,
    tenant_id: String,
    account_id: String,
    created_at: Millis,
}

impl From<MjRow> for MjAppKey {
    fn from(r: MjRow) -> MjAppKey {
        MjAppKey {
            name: r.name,
            tenant_id: r.tenant_id,
            account_id: r.account_id,
            created_at: r.created_at,
        }
    }
}

async fn mj_key_create(
    pool: &PgPool,
    tenant_id: &str,
    name: &str,
    key: &NewApiKey,
    token_total: i64,
    at: Millis,
) -> StoreResult<MjAppKey> {
    let mut tx = pool.begin().await?;
    super::tenants::api_key_insert(&mut tx, at, tenant_id, key).await?;
    let account = AccountRef::app_key(tenant_id, &key.id);
    open_account(&mut tx, &account, at).await?;
    sqlx::query(
        "INSERT INTO mj_app_keys (account_id, tenant_id, name, key_hash, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&account.id)
    .bind(tenant_id)
    .bind(name)
    .bind(&key.key_hash[..])
    .bind(at)
    .execute(&mut *tx)
    .await?;
    if token_total > 0 {
        let gift = NewEntry {
            account: account.clone(),
            kind: EntryKind::Gift,
            amount: token_total,
            idem_key: format!("{}:initial", account.id),
            reason: Some("token_total at creation".into()),
            actor: Some("cli".into()),
            at,
        };
        post_in(&mut tx, &gift).await?;
    }
    tx.commit().await?;
    Ok(MjAppKey {
        name: name.to_owned(),
        tenant_id: tenant_id.to_owned(),
        account_id: account.id,
        created_at: at,
    })
}

const PACKAGE_COLUMNS: &str = "package_id, name, credits, price_cents, original_cents, discount, \
     description, popular, sort_order";

#[derive(FromRow)]
struct PackageRow {
    package_id: String,
    name: String,
    credits: i64,
    price_cents: i64,
    original_cents: i64,
    discount: f64,
    description: String,
    popular: bool,
    sort_order: i64,
}

impl From<PackageRow> for CreditPackage {
    fn from(r: PackageRow) -> CreditPackage {
        CreditPackage {
            package_id: r.package_id,
            name: r.name,
            credits: r.credits,
            price_cents: r.price_cents,
            original_cents: r.original_cents,
            discount: r.discount,
            description: r.description,
            popular: r.popular,
            sort_order: r.sort_order,
        }
    }
}

const ORDER_COLUMNS: &str = "order_no, tenant_id, account_id, package_id, credits, amount_cents, \
     payment_method, status, paid_via, created_at, paid_at";

#[derive(FromRow)]
struct OrderRow {
    order_no: String,
    tenant_id: String,
    account_id: String,
    package_id: String,
    credits: i64,
    amount_cents: i64,
    payment_method: String,
    status: String,
    paid_via: Option<String>,
    created_at: Millis,
    paid_at: Option<Millis>,
}

impl TryFrom<OrderRow> for Order {
    type Error = StoreError;

    fn try_from(r: OrderRow) -> StoreResult<Order> {
        Ok(Order {
            status: OrderStatus::parse(&r.status).ok_or_else(|| corrupt("order status"))?,
            order_no: r.order_no,
            tenant_id: r.tenant_id,
            account_id: r.account_id,
            package_id: r.package_id,
            credits: r.credits,
            amount_cents: r.amount_cents,
            payment_method: r.payment_method,
            paid_via: r.paid_via,
            created_at: r.created_at,
            paid_at: r.paid_at,
        })
    }
}

async fn order_get(
    conn: &mut PgConnection,
    tenant_id: &str,
    order_no: &str,
) -> StoreResult<Option<Order>> {
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM credit_orders WHERE tenant_id = $1 AND order_no = $2");
    let row: Option<OrderRow> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(order_no)
        .fetch_optional(conn)
        .await?;
    row.map(Order::try_from).transpose()
}

async fn order_pay(
    pool: &PgPool,
    tenant_id: &str,
    order_no: &str,
    via: &str,
    at: Millis,
) -> StoreResult<PayOutcome> {
    let mut tx = pool.begin().await?;
    // The row lock of this UPDATE makes racing payers wait; they then find it paid.
    let sql = format!(
        "UPDATE credit_orders SET status = 'paid', paid_via = $3, paid_at = $4
         WHERE tenant_id = $1 AND order_no = $2 AND status = 'pending' RETURNING {ORDER_COLUMNS}"
    );
    let paid: Option<OrderRow> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(order_no)
        .bind(via)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(order) = paid.map(Order::try_from).transpose()? else {
        return Ok(match order_get(&mut tx, tenant_id, order_no).await? {
            Some(_) => PayOutcome::AlreadyPaid,
            None => PayOutcome::NotFound,
        });
    };
    let recharge = NewEntry {
        account: AccountRef {
            id: order.account_id.clone(),
            tenant_id: order.tenant_id.clone(),
            kind: AccountKind::User,
        },
        kind: EntryKind::Recharge,
        amount: order.credits,
        idem_key: order_key(order_no),
        reason: Some(order.package_id.clone()),
        actor: Some(via.to_owned()),
        at,
    };
    apply(&mut tx, &order.account_id, &recharge)
        .await?
        .ok_or_else(|| StoreError::Conflict("the order's account is gone".into()))?;
    tx.commit().await?;
    Ok(PayOutcome::Paid(order))
}

/// The tables a `reset` truncates, in the same statement as the tenants they reference.
pub(super) const RESET_TABLES: &str = "credit_orders, mj_app_keys, ledger_billing, \
     ledger_prices, ledger_entries, ledger_stripes, ledger_accounts";

#[async_trait]
impl LedgerStore for PgStore {
    async fn ledger_account(&self, account_id: &str) -> StoreResult<Option<Account>> {
        account(&self.pool, account_id).await
    }

    async fn ledger_post(&self, entry: NewEntry) -> StoreResult<PostOutcome> {
        post(&self.pool, &entry).await
    }

    async fn ledger_entries(&self, query: EntryQuery) -> StoreResult<EntryPage> {
        entries(&self.pool, &query).await
    }

    async fn ledger_totals(&self, account_id: &str) -> StoreResult<AccountTotals> {
        totals(&self.pool, account_id).await
    }

    async fn ledger_check(&self) -> StoreResult<Vec<Difference>> {
        check(&self.pool).await
    }

    async fn price_rules(&self, tenant_id: &str) -> StoreResult<Vec<PriceRule>> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT operation, mode, provider, credits FROM ledger_prices WHERE tenant_id = $1
             ORDER BY operation, mode, provider",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(operation, mode, provider, credits)| PriceRule {
                operation,
                mode,
                provider,
                credits,
            })
            .collect())
    }

    async fn price_set(&self, tenant_id: &str, rule: PriceRule) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ledger_prices (tenant_id, operation, mode, provider, credits)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, operation, mode, provider)
             DO UPDATE SET credits = excluded.credits",
        )
        .bind(tenant_id)
        .bind(&rule.operation)
        .bind(&rule.mode)
        .bind(&rule.provider)
        .bind(rule.credits)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn price_delete(
        &self,
        tenant_id: &str,
        operation: &str,
        mode: &str,
        provider: &str,
    ) -> StoreResult<bool> {
        let deleted = sqlx::query(
            "DELETE FROM ledger_prices
             WHERE tenant_id = $1 AND operation = $2 AND mode = $3 AND provider = $4",
        )
        .bind(tenant_id)
        .bind(operation)
        .bind(mode)
        .bind(provider)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted > 0)
    }

    async fn billing_get(&self, tenant_id: &str) -> StoreResult<Billing> {
        let row: Option<(bool, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT prepaid, payment_secret FROM ledger_billing WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|(prepaid, payment_secret)| Billing {
                prepaid,
                payment_secret,
            })
            .unwrap_or_default())
    }

    async fn billing_set_prepaid(&self, tenant_id: &str, prepaid: bool) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ledger_billing (tenant_id, prepaid, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET prepaid = $2, updated_at = $3",
        )
        .bind(tenant_id)
        .bind(prepaid)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn billing_set_payment_secret(
        &self,
        tenant_id: &str,
        sealed: Vec<u8>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO ledger_billing (tenant_id, payment_secret, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id) DO UPDATE SET payment_secret = $2, updated_at = $3",
        )
        .bind(tenant_id)
        .bind(sealed)
        .bind(self.now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn mj_key_create(
        &self,
        tenant_id: &str,
        name: &str,
        key: NewApiKey,
        token_total: i64,
        at: Millis,
    ) -> StoreResult<MjAppKey> {
        mj_key_create(&self.pool, tenant_id, name, &key, token_total, at).await
    }

    async fn mj_key_by_name(&self, name: &str) -> StoreResult<Option<MjAppKey>> {
        let row: Option<MjRow> = sqlx::query_as(
            "SELECT name, tenant_id, account_id, created_at FROM mj_app_keys WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn mj_key_by_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<MjAppKey>> {
        let row: Option<MjRow> = sqlx::query_as(
            "SELECT name, tenant_id, account_id, created_at FROM mj_app_keys WHERE key_hash = $1",
        )
        .bind(&key_hash[..])
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Into::into))
    }

    async fn packages(&self, tenant_id: &str) -> StoreResult<Vec<CreditPackage>> {
        let rows: Vec<PackageRow> = sqlx::query_as(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM credit_packages WHERE tenant_id = (
                 SELECT CASE WHEN EXISTS (SELECT 1 FROM credit_packages WHERE tenant_id = $1)
                     THEN $1 ELSE '*' END)
             ORDER BY sort_order, package_id"
        ))
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    async fn package_set(&self, tenant_id: &str, p: CreditPackage) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO credit_packages (tenant_id, package_id, name, credits, price_cents,
                 original_cents, discount, description, popular, sort_order)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant_id, package_id) DO UPDATE SET name = excluded.name,
                 credits = excluded.credits, price_cents = excluded.price_cents,
                 original_cents = excluded.original_cents, discount = excluded.discount,
                 description = excluded.description, popular = excluded.popular,
                 sort_order = excluded.sort_order",
        )
        .bind(tenant_id)
        .bind(&p.package_id)
        .bind(&p.name)
        .bind(p.credits)
        .bind(p.price_cents)
        .bind(p.original_cents)
        .bind(p.discount)
        .bind(&p.description)
        .bind(p.popular)
        .bind(p.sort_order)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn package_delete(&self, tenant_id: &str, package_id: &str) -> StoreResult<bool> {
        let deleted =
            sqlx::query("DELETE FROM credit_packages WHERE tenant_id = $1 AND package_id = $2")
                .bind(tenant_id)
                .bind(package_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(deleted > 0)
    }

    async fn order_create(&self, account: &AccountRef, o: Order) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        open_account(&mut tx, account, o.created_at).await?;
        sqlx::query(
            "INSERT INTO credit_orders (order_no, tenant_id, account_id, package_id, credits,
                 amount_cents, payment_method, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)",
        )
        .bind(&o.order_no)
        .bind(&o.tenant_id)
        .bind(&account.id)
        .bind(&o.package_id)
        .bind(o.credits)
        .bind(o.amount_cents)
        .bind(&o.payment_method)
        .bind(o.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn order_get(&self, tenant_id: &str, order_no: &str) -> StoreResult<Option<Order>> {
        order_get(&mut *self.pool.acquire().await?, tenant_id, order_no).await
    }

    async fn order_find(&self, order_no: &str) -> StoreResult<Option<Order>> {
        let sql = format!("SELECT {ORDER_COLUMNS} FROM credit_orders WHERE order_no = $1");
        let row: Option<OrderRow> = sqlx::query_as(&sql)
            .bind(order_no)
            .fetch_optional(&self.pool)
            .await?;
        row.map(Order::try_from).transpose()
    }

    async fn order_list(&self, q: OrderQuery) -> StoreResult<OrderPage> {
        let status = q.status.map(OrderStatus::as_str);
        let filter = "account_id = $1 AND ($2::TEXT IS NULL OR status = $2)";
        let total: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM credit_orders WHERE {filter}"
        ))
        .bind(&q.account_id)
        .bind(status)
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<OrderRow> = sqlx::query_as(&format!(
            "SELECT {ORDER_COLUMNS} FROM credit_orders WHERE {filter}
             ORDER BY created_at DESC, order_no DESC LIMIT $3 OFFSET $4"
        ))
        .bind(&q.account_id)
        .bind(status)
        .bind(i64::from(q.limit))
        .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(OrderPage {
            items: rows
                .into_iter()
                .map(Order::try_from)
                .collect::<StoreResult<_>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn order_pay(
        &self,
        tenant_id: &str,
        order_no: &str,
        via: &str,
        at: Millis,
    ) -> StoreResult<PayOutcome> {
        order_pay(&self.pool, tenant_id, order_no, via, at).await
    }
}
