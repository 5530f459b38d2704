//! The credit ledger on SQLite: accounts, entries, prices, billing, app keys, packages and
//! orders, and the hold / settle / release steps that `jobs.rs` calls inside the transaction
//! of a job's status change. The one writer makes every check-then-write here atomic.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
use crate::base::clock::Millis;
use crate::base::job::JobStatus;
use crate::base::ledger::{
    close_key, hold_key, judge, order_key, Account, AccountKind, AccountRef, AccountSums,
    AccountTotals, Billing, Charge, CreditPackage, Difference, Entry, EntryKind, EntryPage,
    EntryQuery, JobHold, MjAppKey, NewEntry, Order, OrderPage, OrderQuery, OrderStatus, PayOutcome,
    PostOutcome, PriceRule,
};
use crate::store::ledger::LedgerStore;
use crate::store::{NewApiKey, StoreError, StoreResult};

fn bad(index: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        index,
        rusqlite::types::Type::Text,
        format!("bad {what}").into(),
    )
}

const ENTRY_COLUMNS: &str =
    "id, account_id, kind, amount, held, idem_key, job_id, reason, actor, created_at";

fn entry_from_row(r: &Row<'_>) -> rusqlite::Result<Entry> {
    let kind: String = r.get(2)?;
    Ok(Entry {
        id: r.get(0)?,
        account_id: r.get(1)?,
        kind: EntryKind::parse(&kind).ok_or_else(|| bad(2, "entry kind"))?,
        amount: r.get(3)?,
        held: r.get(4)?,
        idem_key: r.get(5)?,
        job_id: r.get(6)?,
        reason: r.get(7)?,
        actor: r.get(8)?,
        created_at: r.get(9)?,
    })
}

/// An entry about to be written.
struct Draft<'a> {
    account_id: &'a str,
    kind: EntryKind,
    amount: i64,
    held: i64,
    idem_key: &'a str,
    job_id: Option<&'a str>,
    reason: Option<&'a str>,
    actor: Option<&'a str>,
    at: Millis,
}

fn entry_by_key(conn: &Connection, idem_key: &str) -> StoreResult<Option<Entry>> {
    let sql = format!("SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE idem_key = ?1");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([idem_key], entry_from_row)
        .optional()?)
}

fn open_account(conn: &Connection, account: &AccountRef, at: Millis) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO ledger_accounts (id, tenant_id, kind, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        account.id,
        account.tenant_id,
        account.kind.as_str(),
        at
    ])?;
    Ok(())
}

pub(super) fn balance_of(conn: &Connection, account_id: &str) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT balance FROM ledger_accounts WHERE id = ?1")?
        .query_row([account_id], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Moves the cached totals (only if the balance stays at or above zero) and writes the
/// entry. `Err(available)` when the balance cannot pay; nothing is written then.
fn apply(conn: &Connection, d: &Draft<'_>) -> StoreResult<Result<Entry, i64>> {
    let moved = conn
        .prepare_cached(
            "UPDATE ledger_accounts SET balance = balance + ?2, held = held + ?3, updated_at = ?4
             WHERE id = ?1 AND balance + ?2 >= 0 AND held + ?3 >= 0",
        )?
        .execute(params![d.account_id, d.amount, d.held, d.at])?;
    if moved == 0 {
        return Ok(Err(balance_of(conn, d.account_id)?));
    }
    let id: i64 = conn
        .prepare_cached(
            "INSERT INTO ledger_entries
                 (account_id, kind, amount, held, idem_key, job_id, reason, actor, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
        )?
        .query_row(
            params![
                d.account_id,
                d.kind.as_str(),
                d.amount,
                d.held,
                d.idem_key,
                d.job_id,
                d.reason,
                d.actor,
                d.at
            ],
            |r| r.get(0),
        )?;
    Ok(Ok(Entry {
        id,
        account_id: d.account_id.to_owned(),
        kind: d.kind,
        amount: d.amount,
        held: d.held,
        idem_key: d.idem_key.to_owned(),
        job_id: d.job_id.map(str::to_owned),
        reason: d.reason.map(str::to_owned),
        actor: d.actor.map(str::to_owned),
        created_at: d.at,
    }))
}

/// The submit's hold: `Some((required, available))` when the account cannot pay.
pub(super) fn hold(
    conn: &Connection,
    charge: &Charge,
    job_id: &str,
    at: Millis,
) -> StoreResult<Option<(i64, i64)>> {
    let key = hold_key(job_id);
    let draft = Draft {
        account_id: &charge.account.id,
        kind: EntryKind::Hold,
        amount: -charge.amount,
        held: charge.amount,
        idem_key: &key,
        job_id: Some(job_id),
        reason: None,
        actor: None,
        at,
    };
    Ok(apply(conn, &draft)?
        .err()
        .map(|available| (charge.amount, available)))
}

/// Settles (SUCCEEDED) or releases (FAILED, CANCELED) the job's hold, if it has an open one;
/// any other status leaves it open. Called in the transaction of the status change.
pub(super) fn close_hold(
    conn: &Connection,
    job_id: &str,
    status: JobStatus,
    at: Millis,
) -> StoreResult<()> {
    let kind = match status {
        JobStatus::Succeeded => EntryKind::Settle,
        JobStatus::Failed | JobStatus::Canceled => EntryKind::Release,
        _ => return Ok(()),
    };
    let Some(held) = entry_by_key(conn, &hold_key(job_id))? else {
        return Ok(());
    };
    let key = close_key(job_id);
    if entry_by_key(conn, &key)?.is_some() {
        return Ok(());
    }
    let draft = Draft {
        account_id: &held.account_id,
        kind,
        amount: if kind == EntryKind::Release {
            held.held
        } else {
            0
        },
        held: -held.held,
        idem_key: &key,
        job_id: Some(job_id),
        reason: None,
        actor: None,
        at,
    };
    apply(conn, &draft)?
        .map(drop)
        .map_err(|_| StoreError::Conflict(format!("the hold of job {job_id} does not add up")))
}

/// Posts a grant inside the caller's transaction (a new user's starting credits, written by
/// the store's user creation).
pub(super) fn post(conn: &Connection, e: &NewEntry) -> StoreResult<PostOutcome> {
    if !e.kind.is_grant() {
        return Err(StoreError::Conflict(format!(
            "{} entries are written by jobs only",
            e.kind
        )));
    }
    if let Some(first) = entry_by_key(conn, &e.idem_key)? {
        return Ok(PostOutcome::Duplicate(first));
    }
    open_account(conn, &e.account, e.at)?;
    let draft = Draft {
        account_id: &e.account.id,
        kind: e.kind,
        amount: e.amount,
        held: 0,
        idem_key: &e.idem_key,
        job_id: None,
        reason: e.reason.as_deref(),
        actor: e.actor.as_deref(),
        at: e.at,
    };
    Ok(match apply(conn, &draft)? {
        Ok(entry) => PostOutcome::Posted(entry),
        Err(available) => PostOutcome::Insufficient {
            required: -e.amount,
            available,
        },
    })
}

fn account(conn: &Connection, account_id: &str) -> StoreResult<Option<Account>> {
    conn.prepare_cached(
        "SELECT id, tenant_id, kind, balance, held, created_at FROM ledger_accounts
         WHERE id = ?1",
    )?
    .query_row([account_id], |r| {
        let kind: String = r.get(2)?;
        Ok(Account {
            id: r.get(0)?,
            tenant_id: r.get(1)?,
            kind: AccountKind::parse(&kind).ok_or_else(|| bad(2, "account kind"))?,
            balance: r.get(3)?,
            held: r.get(4)?,
            created_at: r.get(5)?,
        })
    })
    .optional()
    .map_err(Into::into)
}

/// `,hold,settle,`: the kinds filter as one parameter (empty: every kind).
fn kinds_param(kinds: &[EntryKind]) -> String {
    if kinds.is_empty() {
        return String::new();
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    format!(",{},", names.join(","))
}

const ENTRY_FILTER: &str = "account_id = ?1 AND (?2 = '' OR instr(?2, ',' || kind || ',') > 0)
     AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at < ?4)";

fn entries(conn: &Connection, q: &EntryQuery) -> StoreResult<EntryPage> {
    let kinds = kinds_param(&q.kinds);
    let total: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM ledger_entries WHERE {ENTRY_FILTER}"
        ))?
        .query_row(params![q.account_id, kinds, q.from, q.until], |r| r.get(0))?;
    let sql = format!(
        "SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE {ENTRY_FILTER}
         ORDER BY id DESC LIMIT ?5 OFFSET ?6"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        params![q.account_id, kinds, q.from, q.until, q.limit, offset],
        entry_from_row,
    )?;
    Ok(EntryPage {
        items: rows.collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

fn totals(conn: &Connection, account_id: &str) -> StoreResult<AccountTotals> {
    let (balance, held) = account(conn, account_id)?
        .map(|a| (a.balance, a.held))
        .unwrap_or((0, 0));
    let sums = conn
        .prepare_cached(
            "SELECT
                 coalesce(sum(CASE WHEN kind IN ('recharge', 'gift', 'refund', 'reset')
                     OR (kind = 'adjustment' AND amount > 0) THEN amount END), 0),
                 coalesce(sum(CASE WHEN kind = 'recharge' THEN amount END), 0),
                 coalesce(sum(kind = 'recharge'), 0),
                 coalesce(sum(CASE WHEN kind = 'settle' THEN -held END), 0),
                 coalesce(sum(kind = 'hold'), 0),
                 coalesce(sum(CASE WHEN kind = 'settle' AND id > (
                     SELECT coalesce(max(id), 0) FROM ledger_entries
                     WHERE account_id = ?1 AND kind = 'reset') THEN -held END), 0)
             FROM ledger_entries WHERE account_id = ?1",
        )?
        .query_row([account_id], |r| {
            Ok(AccountTotals {
                balance,
                held,
                granted: r.get(0)?,
                recharged: r.get(1)?,
                recharge_count: r.get(2)?,
                settled: r.get(3)?,
                hold_count: r.get(4)?,
                settled_since_reset: r.get(5)?,
            })
        })?;
    Ok(sums)
}

fn check(conn: &Connection) -> StoreResult<Vec<Difference>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.id, a.balance, a.held, coalesce(sum(e.amount), 0), coalesce(sum(e.held), 0)
         FROM ledger_accounts a LEFT JOIN ledger_entries e ON e.account_id = a.id
         GROUP BY a.id",
    )?;
    let accounts: Vec<AccountSums> = stmt
        .query_map([], |r| {
            Ok(AccountSums {
                account_id: r.get(0)?,
                balance: r.get(1)?,
                held: r.get(2)?,
                entries_amount: r.get(3)?,
                entries_held: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT h.job_id, j.status,
             (SELECT sum(e.held) FROM ledger_entries e WHERE e.job_id = h.job_id),
             (SELECT group_concat(e.kind) FROM ledger_entries e
              WHERE e.job_id = h.job_id AND e.kind IN ('settle', 'release'))
         FROM ledger_entries h LEFT JOIN jobs j ON j.id = h.job_id WHERE h.kind = 'hold'",
    )?;
    let holds: Vec<JobHold> = stmt
        .query_map([], |r| {
            let status: Option<String> = r.get(1)?;
            let closes: Option<String> = r.get(3)?;
            Ok(JobHold {
                job_id: r.get(0)?,
                status: status.as_deref().and_then(JobStatus::parse),
                open: r.get(2)?,
                closes: parse_kinds(closes.as_deref()),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(judge(&accounts, &holds))
}

/// `settle,release` (an aggregate of kinds) back to kinds.
pub(crate) fn parse_kinds(joined: Option<&str>) -> Vec<EntryKind> {
    joined
        .unwrap_or("")
        .split(',')
        .filter_map(EntryKind::parse)
        .collect()
}

fn price_rules(conn: &Connection, tenant_id: &str) -> StoreResult<Vec<PriceRule>> {
    let mut stmt = conn.prepare_cached(
        "SELECT operation, mode, provider, credits FROM ledger_prices WHERE tenant_id = ?1
         ORDER BY operation, mode, provider",
    )?;
    let rows = stmt.query_map([tenant_id], |r| {
        Ok(PriceRule {
            operation: r.get(0)?,
            mode: r.get(1)?,
            provider: r.get(2)?,
            credits: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn billing(conn: &Connection, tenant_id: &str) -> StoreResult<Billing> {
    Ok(conn
        .prepare_cached("SELECT prepaid, payment_secret FROM ledger_billing WHERE tenant_id = ?1")?
        .query_row([tenant_id], |r| {
            Ok(Billing {
                prepaid: r.get(0)?,
                payment_secret: r.get(1)?,
            })
        })
        .optional()?
        .unwrap_or_default())
}

const MJ_COLUMNS: &str = "name, tenant_id, account_id, created_at";

fn mj_from_row(r: &Row<'_>) -> rusqlite::Result<MjAppKey> {
    Ok(MjAppKey {
        name: r.get(0)?,
        tenant_id: r.get(1)?,
        account_id: r.get(2)?,
        created_at: r.get(3)?,
    })
}

fn mj_key_create(
    conn: &Connection,
    tenant_id: &str,
    name: &str,
    key: &NewApiKey,
    token_total: i64,
    at: Millis,
) -> StoreResult<MjAppKey> {
    super::tenants::api_key_add(conn, at, tenant_id, key)?;
    let account = AccountRef::app_key(tenant_id, &key.id);
    open_account(conn, &account, at)?;
    conn.prepare_cached(
        "INSERT INTO mj_app_keys (account_id, tenant_id, name, key_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![account.id, tenant_id, name, key.key_hash, at])?;
    if token_total > 0 {
        post(
            conn,
            &NewEntry {
                account: account.clone(),
                kind: EntryKind::Gift,
                amount: token_total,
                idem_key: format!("{}:initial", account.id),
                reason: Some("token_total at creation".into()),
                actor: Some("cli".into()),
                at,
            },
        )?;
    }
    Ok(MjAppKey {
        name: name.to_owned(),
        tenant_id: tenant_id.to_owned(),
        account_id: account.id,
        created_at: at,
    })
}

const PACKAGE_COLUMNS: &str = "package_id, name, credits, price_cents, original_cents, discount, \
     description, popular, sort_order";

fn package_from_row(r: &Row<'_>) -> rusqlite::Result<CreditPackage> {
    Ok(CreditPackage {
        package_id: r.get(0)?,
        name: r.get(1)?,
        credits: r.get(2)?,
        price_cents: r.get(3)?,
        original_cents: r.get(4)?,
        discount: r.get(5)?,
        description: r.get(6)?,
        popular: r.get(7)?,
        sort_order: r.get(8)?,
    })
}

fn packages(conn: &Connection, tenant_id: &str) -> StoreResult<Vec<CreditPackage>> {
    // The tenant's own packages if it has any, else the defaults.
    let sql = format!(
        "SELECT {PACKAGE_COLUMNS} FROM credit_packages WHERE tenant_id = (
             SELECT CASE WHEN EXISTS (SELECT 1 FROM credit_packages WHERE tenant_id = ?1)
                 THEN ?1 ELSE '*' END)
         ORDER BY sort_order, package_id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([tenant_id], package_from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn package_set(conn: &Connection, tenant_id: &str, p: &CreditPackage) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO credit_packages (tenant_id, package_id, name, credits, price_cents,
             original_cents, discount, description, popular, sort_order)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (tenant_id, package_id) DO UPDATE SET name = excluded.name,
             credits = excluded.credits, price_cents = excluded.price_cents,
             original_cents = excluded.original_cents, discount = excluded.discount,
             description = excluded.description, popular = excluded.popular,
             sort_order = excluded.sort_order",
    )?
    .execute(params![
        tenant_id,
        p.package_id,
        p.name,
        p.credits,
        p.price_cents,
        p.original_cents,
        p.discount,
        p.description,
        p.popular,
        p.sort_order
    ])?;
    Ok(())
}

const ORDER_COLUMNS: &str = "order_no, tenant_id, account_id, package_id, credits, amount_cents, \
     payment_method, status, paid_via, created_at, paid_at";

fn order_from_row(r: &Row<'_>) -> rusqlite::Result<Order> {
    let status: String = r.get(7)?;
    Ok(Order {
        order_no: r.get(0)?,
        tenant_id: r.get(1)?,
        account_id: r.get(2)?,
        package_id: r.get(3)?,
        credits: r.get(4)?,
        amount_cents: r.get(5)?,
        payment_method: r.get(6)?,
        status: OrderStatus::parse(&status).ok_or_else(|| bad(7, "order status"))?,
        paid_via: r.get(8)?,
        created_at: r.get(9)?,
        paid_at: r.get(10)?,
    })
}

fn order_create(conn: &Connection, account: &AccountRef, o: &Order) -> StoreResult<()> {
    open_account(conn, account, o.created_at)?;
    conn.prepare_cached(
        "INSERT INTO credit_orders (order_no, tenant_id, account_id, package_id, credits,
             amount_cents, payment_method, status, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
    )?
    .execute(params![
        o.order_no,
        o.tenant_id,
        account.id,
        o.package_id,
        o.credits,
        o.amount_cents,
        o.payment_method,
        o.created_at
    ])?;
    Ok(())
}

fn order_get(conn: &Connection, tenant_id: &str, order_no: &str) -> StoreResult<Option<Order>> {
    let sql =
        format!("SELECT {ORDER_COLUMNS} FROM credit_orders WHERE tenant_id = ?1 AND order_no = ?2");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([tenant_id, order_no], order_from_row)
        .optional()?)
}

fn order_list(conn: &Connection, q: &OrderQuery) -> StoreResult<OrderPage> {
    let status = q.status.map(OrderStatus::as_str);
    let filter = "account_id = ?1 AND (?2 IS NULL OR status = ?2)";
    let total: i64 = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM credit_orders WHERE {filter}"
        ))?
        .query_row(params![q.account_id, status], |r| r.get(0))?;
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM credit_orders WHERE {filter}
         ORDER BY created_at DESC, order_no DESC LIMIT ?3 OFFSET ?4"
    );
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![q.account_id, status, q.limit, offset],
        order_from_row,
    )?;
    Ok(OrderPage {
        items: rows.collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

fn order_pay(
    conn: &Connection,
    tenant_id: &str,
    order_no: &str,
    via: &str,
    at: Millis,
) -> StoreResult<PayOutcome> {
    let sql = format!(
        "UPDATE credit_orders SET status = 'paid', paid_via = ?3, paid_at = ?4
         WHERE tenant_id = ?1 AND order_no = ?2 AND status = 'pending' RETURNING {ORDER_COLUMNS}"
    );
    let paid = conn
        .prepare_cached(&sql)?
        .query_row(params![tenant_id, order_no, via, at], order_from_row)
        .optional()?;
    let Some(order) = paid else {
        return Ok(match order_get(conn, tenant_id, order_no)? {
            Some(_) => PayOutcome::AlreadyPaid,
            None => PayOutcome::NotFound,
        });
    };
    let key = order_key(order_no);
    let draft = Draft {
        account_id: &order.account_id,
        kind: EntryKind::Recharge,
        amount: order.credits,
        held: 0,
        idem_key: &key,
        job_id: None,
        reason: Some(&order.package_id),
        actor: Some(via),
        at,
    };
    apply(conn, &draft)?
        .map_err(|_| StoreError::Conflict("a recharge cannot lower a balance".into()))?;
    Ok(PayOutcome::Paid(order))
}

/// Rows a `reset` deletes, children first.
pub(super) const RESET_SQL: &str = "DELETE FROM credit_orders; DELETE FROM credit_packages
     WHERE tenant_id <> '*'; DELETE FROM mj_app_keys; DELETE FROM ledger_billing;
     DELETE FROM ledger_prices; DELETE FROM ledger_entries; DELETE FROM ledger_accounts;";

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn ledger_account(&self, account_id: &str) -> StoreResult<Option<Account>> {
        let account_id = account_id.to_owned();
        self.read(move |c| account(c, &account_id)).await
    }

    async fn ledger_post(&self, entry: NewEntry) -> StoreResult<PostOutcome> {
        self.write(move |c| post(c, &entry)).await
    }

    async fn ledger_entries(&self, query: EntryQuery) -> StoreResult<EntryPage> {
        self.read(move |c| entries(c, &query)).await
    }

    async fn ledger_totals(&self, account_id: &str) -> StoreResult<AccountTotals> {
        let account_id = account_id.to_owned();
        self.read(move |c| totals(c, &account_id)).await
    }

    async fn ledger_check(&self) -> StoreResult<Vec<Difference>> {
        self.read(check).await
    }

    async fn price_rules(&self, tenant_id: &str) -> StoreResult<Vec<PriceRule>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| price_rules(c, &tenant_id)).await
    }

    async fn price_set(&self, tenant_id: &str, rule: PriceRule) -> StoreResult<()> {
        let tenant_id = tenant_id.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO ledger_prices (tenant_id, operation, mode, provider, credits)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, operation, mode, provider)
                 DO UPDATE SET credits = excluded.credits",
            )?
            .execute(params![
                tenant_id,
                rule.operation,
                rule.mode,
                rule.provider,
                rule.credits
            ])?;
            Ok(())
        })
        .await
    }

    async fn price_delete(
        &self,
        tenant_id: &str,
        operation: &str,
        mode: &str,
        provider: &str,
    ) -> StoreResult<bool> {
        let key = [tenant_id, operation, mode, provider].map(str::to_owned);
        self.write(move |c| {
            let deleted = c
                .prepare_cached(
                    "DELETE FROM ledger_prices
                     WHERE tenant_id = ?1 AND operation = ?2 AND mode = ?3 AND provider = ?4",
                )?
                .execute(params![key[0], key[1], key[2], key[3]])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn billing_get(&self, tenant_id: &str) -> StoreResult<Billing> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| billing(c, &tenant_id)).await
    }

    async fn billing_set_prepaid(&self, tenant_id: &str, prepaid: bool) -> StoreResult<()> {
        let tenant_id = tenant_id.to_owned();
        self.write_at(move |c, now| {
            c.prepare_cached(
                "INSERT INTO ledger_billing (tenant_id, prepaid, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id) DO UPDATE SET prepaid = ?2, updated_at = ?3",
            )?
            .execute(params![tenant_id, prepaid, now])?;
            Ok(())
        })
        .await
    }

    async fn billing_set_payment_secret(
        &self,
        tenant_id: &str,
        sealed: Vec<u8>,
    ) -> StoreResult<()> {
        let tenant_id = tenant_id.to_owned();
        self.write_at(move |c, now| {
            c.prepare_cached(
                "INSERT INTO ledger_billing (tenant_id, payment_secret, updated_at)
                 VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant_id) DO UPDATE SET payment_secret = ?2, updated_at = ?3",
            )?
            .execute(params![tenant_id, sealed, now])?;
            Ok(())
        })
        .await
    }

    async fn mj_key_create(
        &self,
        tenant_id: &str,
        name: &str,
        key: NewApiKey,
        token_total: i64,
        at: Millis,
    ) -> StoreResult<MjAppKey> {
        let (tenant_id, name) = (tenant_id.to_owned(), name.to_owned());
        self.write(move |c| mj_key_create(c, &tenant_id, &name, &key, token_total, at))
            .await
    }

    async fn mj_key_by_name(&self, name: &str) -> StoreResult<Option<MjAppKey>> {
        let name = name.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {MJ_COLUMNS} FROM mj_app_keys WHERE name = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([name], mj_from_row)
                .optional()?)
        })
        .await
    }

    async fn mj_key_by_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<MjAppKey>> {
        let key_hash = *key_hash;
        self.read(move |c| {
            let sql = format!("SELECT {MJ_COLUMNS} FROM mj_app_keys WHERE key_hash = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([&key_hash[..]], mj_from_row)
                .optional()?)
        })
        .await
    }

    async fn packages(&self, tenant_id: &str) -> StoreResult<Vec<CreditPackage>> {
        let tenant_id = tenant_id.to_owned();
        self.read(move |c| packages(c, &tenant_id)).await
    }

    async fn package_set(&self, tenant_id: &str, package: CreditPackage) -> StoreResult<()> {
        let tenant_id = tenant_id.to_owned();
        self.write(move |c| package_set(c, &tenant_id, &package))
            .await
    }

    async fn package_delete(&self, tenant_id: &str, package_id: &str) -> StoreResult<bool> {
        let (tenant_id, package_id) = (tenant_id.to_owned(), package_id.to_owned());
        self.write(move |c| {
            let deleted = c
                .prepare_cached(
                    "DELETE FROM credit_packages WHERE tenant_id = ?1 AND package_id = ?2",
                )?
                .execute([tenant_id, package_id])?;
            Ok(deleted > 0)
        })
        .await
    }

    async fn order_create(&self, account: &AccountRef, order: Order) -> StoreResult<()> {
        let account = account.clone();
        self.write(move |c| order_create(c, &account, &order)).await
    }

    async fn order_get(&self, tenant_id: &str, order_no: &str) -> StoreResult<Option<Order>> {
        let (tenant_id, order_no) = (tenant_id.to_owned(), order_no.to_owned());
        self.read(move |c| order_get(c, &tenant_id, &order_no))
            .await
    }

    async fn order_find(&self, order_no: &str) -> StoreResult<Option<Order>> {
        let order_no = order_no.to_owned();
        self.read(move |c| {
            let sql = format!("SELECT {ORDER_COLUMNS} FROM credit_orders WHERE order_no = ?1");
            Ok(c.prepare_cached(&sql)?
                .query_row([order_no], order_from_row)
                .optional()?)
        })
        .await
    }

    async fn order_list(&self, query: OrderQuery) -> StoreResult<OrderPage> {
        self.read(move |c| order_list(c, &query)).await
    }

    async fn order_pay(
        &self,
        tenant_id: &str,
        order_no: &str,
        via: &str,
        at: Millis,
    ) -> StoreResult<PayOutcome> {
        let (tenant_id, order_no, via) =
            (tenant_id.to_owned(), order_no.to_owned(), via.to_owned());
        self.write(move |c| order_pay(c, &tenant_id, &order_no, &via, at))
            .await
    }
}
