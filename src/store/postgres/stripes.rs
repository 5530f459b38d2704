//! Hold stripes (migration 0022): an account's spendable credits live on its row and on up to
//! 64 stripe rows; a hold is taken from, and a close credited to, the stripe of the database
//! connection that writes it (`pg_backend_pid() % 64`), so two connections rarely meet on one.
//! What a stripe holds may go below zero (a hold closed through another connection); only the
//! account's sum means anything, and `ledger check` checks it.
//!
//! Why: on one row, every paid submit of a tenant queued on that row's lock until its commit,
//! so 64 connections made paid submits 0.3x as fast as unpaid ones. Stripes spread the queue;
//! the rare stripe that runs dry is refilled under the locks of the row and of every stripe, so
//! "cannot pay" still means the whole account cannot.
//!
//! Lock order, everywhere: the account row, then its stripes by number. A fast hold locks one
//! stripe (and, through its entry's foreign key, shares the row's key). Locks here are `FOR NO
//! KEY UPDATE`, which leaves those key shares free: `FOR UPDATE` would deadlock with a fast
//! hold waiting for its entry's key share while owning a stripe the refill wants.
//! Owns: the stripe SQL. Must not touch: entries (the ledger writes them) or jobs.

use std::sync::LazyLock;

use sqlx::PgConnection;

use crate::store::StoreResult;

/// How many stripes an account may have.
const STRIPES: i16 = 64;

/// The stripe of the connection running the statement (a SQL expression).
pub(super) static THIS_STRIPE: LazyLock<String> =
    LazyLock::new(|| format!("(pg_backend_pid() % {STRIPES})::SMALLINT"));

/// What account `a` can spend: its row and its stripes (a SQL expression).
pub(super) const TOTAL_BALANCE: &str = "(a.balance + coalesce((SELECT sum(s.balance)
     FROM ledger_stripes s WHERE s.account_id = a.id), 0))::BIGINT";
/// What account `a` holds for jobs still open (a SQL expression).
pub(super) const TOTAL_HELD: &str = "(a.held + coalesce((SELECT sum(s.held)
     FROM ledger_stripes s WHERE s.account_id = a.id), 0))::BIGINT";

/// Locks the account row and its stripes (in the caller's transaction) and answers their
/// balances: the row's, and `(stripe, balance)` per stripe. `None` if there is no account.
async fn lock_all(
    conn: &mut PgConnection,
    account_id: &str,
) -> StoreResult<Option<(i64, Vec<(i16, i64)>)>> {
    let row: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM ledger_accounts WHERE id = $1 FOR NO KEY UPDATE")
            .bind(account_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let stripes: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT stripe, balance FROM ledger_stripes WHERE account_id = $1
         ORDER BY stripe FOR NO KEY UPDATE",
    )
    .bind(account_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some((row, stripes)))
}

/// How a total is spread by a refill: the hold's stripe gets the price and its share, the
/// others an equal share when it is at least one price (else nothing: a small balance stays in
/// one place), the row the rest.
fn spread(total: i64, price: i64, target: i16) -> (i64, Vec<(i16, i64)>) {
    let share = (total - price) / i64::from(STRIPES);
    let share = if share >= price.max(1) { share } else { 0 };
    let stripes: Vec<(i16, i64)> = (0..STRIPES)
        .map(|s| (s, if s == target { price + share } else { share }))
        .collect();
    let placed: i64 = stripes.iter().map(|(_, b)| b).sum();
    (total - placed, stripes)
}

/// Refills this connection's stripe so that it can pay `price`, from the row and the other
/// stripes, in the caller's transaction (whose locks then keep it paid); `false` when the
/// whole account cannot pay.
pub(super) async fn refill(
    conn: &mut PgConnection,
    account_id: &str,
    price: i64,
) -> StoreResult<bool> {
    let Some((row, stripes)) = lock_all(conn, account_id).await? else {
        return Ok(false);
    };
    let total = row + stripes.iter().map(|(_, b)| b).sum::<i64>();
    if total < price {
        return Ok(false);
    }
    let target: i16 = sqlx::query_scalar(&format!("SELECT {}", *THIS_STRIPE))
        .fetch_one(&mut *conn)
        .await?;
    let (rest, spread) = spread(total, price, target);
    let (numbers, balances): (Vec<i16>, Vec<i64>) = spread.into_iter().unzip();
    place(conn, account_id, rest, &numbers, &balances).await?;
    Ok(true)
}

/// Writes a spread: the row's balance and each stripe's (created as needed; what stripes
/// hold is left as it is).
async fn place(
    conn: &mut PgConnection,
    account_id: &str,
    row: i64,
    numbers: &[i16],
    balances: &[i64],
) -> StoreResult<()> {
    sqlx::query("UPDATE ledger_accounts SET balance = $2 WHERE id = $1")
        .bind(account_id)
        .bind(row)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO ledger_stripes (account_id, stripe, balance)
         SELECT $1, n, b FROM unnest($2::SMALLINT[], $3::BIGINT[]) AS t (n, b)
         ON CONFLICT (account_id, stripe) DO UPDATE SET balance = excluded.balance",
    )
    .bind(account_id)
    .bind(numbers)
    .bind(balances)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Brings every stripe's balance back to the account row, in the caller's transaction: how a
/// debit that is not a hold (an admin's negative adjustment) sees the whole balance.
pub(super) async fn sweep(conn: &mut PgConnection, account_id: &str) -> StoreResult<()> {
    let Some((row, stripes)) = lock_all(conn, account_id).await? else {
        return Ok(());
    };
    let total = row + stripes.iter().map(|(_, b)| b).sum::<i64>();
    let numbers: Vec<i16> = stripes.iter().map(|(n, _)| *n).collect();
    place(conn, account_id, total, &numbers, &vec![0; numbers.len()]).await
}

#[cfg(test)]
mod tests {
    use super::spread;

    fn placed(row: i64, stripes: &[(i16, i64)]) -> i64 {
        row + stripes.iter().map(|(_, b)| b).sum::<i64>()
    }

    #[test]
    fn a_large_balance_is_spread_and_nothing_is_lost() {
        let (row, stripes) = spread(1_000_003, 2, 5);
        assert_eq!(placed(row, &stripes), 1_000_003);
        assert_eq!(stripes.len(), 64);
        assert_eq!(stripes[5].1, 2 + 15_625);
        assert!(stripes.iter().all(|(_, b)| *b >= 15_625));
        assert!(row < 64);
    }

    #[test]
    fn a_small_balance_stays_on_the_holding_stripe() {
        let (row, stripes) = spread(200, 1, 3);
        assert_eq!(placed(row, &stripes), 200);
        assert_eq!(stripes[3].1, 4, "the price and one share");
        let (row, stripes) = spread(20, 1, 3);
        assert_eq!((row, stripes[3].1), (19, 1));
        let (row, stripes) = spread(7, 3, 9);
        assert_eq!((row, stripes[9].1), (4, 3));
        assert!(stripes
            .iter()
            .filter(|(n, _)| *n != 9)
            .all(|(_, b)| *b == 0));
    }
}
