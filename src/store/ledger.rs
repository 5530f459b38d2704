//! The credit ledger's part of the store (DESIGN decision 9): accounts and their append-only
//! entries, prices, billing settings, Midjourney app keys, credit packages and recharge
//! orders. Every [`Store`](super::Store) is also a [`LedgerStore`].
//!
//! A job's hold, settle and release are not here: they are written by `job_submit`,
//! `job_finish`, `job_cancel` and `job_maintain` in the transaction of the status change, so no
//! path can end a job without resolving its hold. What is here are the entries people and
//! payments write, and the reads.

use async_trait::async_trait;

use super::{NewApiKey, StoreResult};
use crate::base::clock::Millis;
use crate::base::ledger::{
    Account, AccountRef, AccountTotals, Billing, CreditPackage, Difference, EntryPage, EntryQuery,
    MjAppKey, NewEntry, Order, OrderPage, OrderQuery, PayOutcome, PostOutcome, PriceRule,
};

#[async_trait]
pub trait LedgerStore: Send + Sync {
    async fn ledger_account(&self, account_id: &str) -> StoreResult<Option<Account>>;
    /// One transaction: opens the account if new, writes the entry and moves the cached
    /// balance. A key written before is a `Duplicate` (nothing new); a balance that would go
    /// below zero is `Insufficient` (nothing written).
    async fn ledger_post(&self, entry: NewEntry) -> StoreResult<PostOutcome>;
    /// An account's entries, newest first.
    async fn ledger_entries(&self, query: EntryQuery) -> StoreResult<EntryPage>;
    async fn ledger_totals(&self, account_id: &str) -> StoreResult<AccountTotals>;
    /// Recomputes every cached total and every job's hold from the entries; the differences.
    async fn ledger_check(&self) -> StoreResult<Vec<Difference>>;

    /// The tenant's own price rules (without the defaults).
    async fn price_rules(&self, tenant_id: &str) -> StoreResult<Vec<PriceRule>>;
    /// Creates or replaces the rule for its (operation, mode, provider).
    async fn price_set(&self, tenant_id: &str, rule: PriceRule) -> StoreResult<()>;
    /// Whether there was such a rule.
    async fn price_delete(
        &self,
        tenant_id: &str,
        operation: &str,
        mode: &str,
        provider: &str,
    ) -> StoreResult<bool>;

    async fn billing_get(&self, tenant_id: &str) -> StoreResult<Billing>;
    async fn billing_set_prepaid(&self, tenant_id: &str, prepaid: bool) -> StoreResult<()>;
    async fn billing_set_payment_secret(&self, tenant_id: &str, sealed: Vec<u8>)
        -> StoreResult<()>;

    /// One transaction: the tenant API key, its token account, the app key row and a `gift`
    /// of `token_total`. `Conflict` if the name is taken.
    async fn mj_key_create(
        &self,
        tenant_id: &str,
        name: &str,
        key: NewApiKey,
        token_total: i64,
        at: Millis,
    ) -> StoreResult<MjAppKey>;
    async fn mj_key_by_name(&self, name: &str) -> StoreResult<Option<MjAppKey>>;
    async fn mj_key_by_hash(&self, key_hash: &[u8; 32]) -> StoreResult<Option<MjAppKey>>;

    /// The tenant's packages in display order, or the defaults (tenant `*`) if it has none.
    async fn packages(&self, tenant_id: &str) -> StoreResult<Vec<CreditPackage>>;
    async fn package_set(&self, tenant_id: &str, package: CreditPackage) -> StoreResult<()>;
    async fn package_delete(&self, tenant_id: &str, package_id: &str) -> StoreResult<bool>;

    /// Records a pending order (opening the account if new).
    async fn order_create(&self, account: &AccountRef, order: Order) -> StoreResult<()>;
    async fn order_get(&self, tenant_id: &str, order_no: &str) -> StoreResult<Option<Order>>;
    /// An order by its number alone (order numbers are unique): how a payment notification,
    /// which names only the order, finds the tenant whose secret must have signed it.
    async fn order_find(&self, order_no: &str) -> StoreResult<Option<Order>>;
    /// An account's orders, newest first.
    async fn order_list(&self, query: OrderQuery) -> StoreResult<OrderPage>;
    /// One transaction: pending → paid and the `recharge` entry (key `order:<no>`), or
    /// nothing at all. However many callers race, one of them gets `Paid`.
    async fn order_pay(
        &self,
        tenant_id: &str,
        order_no: &str,
        via: &str,
        at: Millis,
    ) -> StoreResult<PayOutcome>;
}
