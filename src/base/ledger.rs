//! The credit ledger's rows as the rest of Easel sees them: accounts, entries, what a job is
//! charged, the prices, app keys, packages and orders, and the pure rules that judge the
//! ledger (`easel ledger check`).
//!
//! An entry changes an account's `balance` (what it can spend) and its `held` total (what
//! unfinished jobs reserved). A hold takes the price off the balance and adds it to `held`; a
//! settle only clears `held` (the credits are spent); a release gives them back. Every entry
//! has an idempotency key, so a retried step never counts twice.

use std::fmt;

use serde::Serialize;

use crate::base::clock::Millis;
use crate::base::job::JobStatus;

/// Who an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Tenant,
    User,
    AppKey,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Tenant => "tenant",
            AccountKind::User => "user",
            AccountKind::AppKey => "app_key",
        }
    }

    pub fn parse(s: &str) -> Option<AccountKind> {
        [AccountKind::Tenant, AccountKind::User, AccountKind::AppKey]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Which account, and whose: enough to open it on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRef {
    pub id: String,
    pub tenant_id: String,
    pub kind: AccountKind,
}

impl AccountRef {
    /// The tenant's own account (what the job API charges under prepaid billing).
    pub fn tenant(tenant_id: &str) -> AccountRef {
        AccountRef {
            id: format!("tenant:{tenant_id}"),
            tenant_id: tenant_id.to_owned(),
            kind: AccountKind::Tenant,
        }
    }

    /// An end user's account.
    pub fn user(tenant_id: &str, user_id: &str) -> AccountRef {
        AccountRef {
            id: format!("user:{user_id}"),
            tenant_id: tenant_id.to_owned(),
            kind: AccountKind::User,
        }
    }

    /// A Midjourney app key's token account.
    pub fn app_key(tenant_id: &str, api_key_id: &str) -> AccountRef {
        AccountRef {
            id: format!("key:{api_key_id}"),
            tenant_id: tenant_id.to_owned(),
            kind: AccountKind::AppKey,
        }
    }
}

/// An account with its cached totals.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: String,
    pub tenant_id: String,
    pub kind: AccountKind,
    /// Spendable now (holds already taken off).
    pub balance: i64,
    /// Reserved by jobs that have not ended.
    pub held: i64,
    pub created_at: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Hold,
    Settle,
    Release,
    Recharge,
    Gift,
    Adjustment,
    Refund,
    /// The MJ `reset-usage`: gives back what was spent since the last reset.
    Reset,
}

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        EntryKind::Hold,
        EntryKind::Settle,
        EntryKind::Release,
        EntryKind::Recharge,
        EntryKind::Gift,
        EntryKind::Adjustment,
        EntryKind::Refund,
        EntryKind::Reset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Hold => "hold",
            EntryKind::Settle => "settle",
            EntryKind::Release => "release",
            EntryKind::Recharge => "recharge",
            EntryKind::Gift => "gift",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Refund => "refund",
            EntryKind::Reset => "reset",
        }
    }

    pub fn parse(s: &str) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Kinds a person (an admin, a payment) may post; the job kinds belong to the store.
    pub fn is_grant(self) -> bool {
        !matches!(
            self,
            EntryKind::Hold | EntryKind::Settle | EntryKind::Release
        )
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub account_id: String,
    pub kind: EntryKind,
    /// Change to the balance.
    pub amount: i64,
    /// Change to the held total.
    pub held: i64,
    pub idem_key: String,
    pub job_id: Option<String>,
    pub reason: Option<String>,
    pub actor: Option<String>,
    pub created_at: Millis,
}

/// The idempotency key of a job's hold.
pub fn hold_key(job_id: &str) -> String {
    format!("job:{job_id}:hold")
}

/// The idempotency key of a job's settle or release: one key, so a hold resolves once.
pub fn close_key(job_id: &str) -> String {
    format!("job:{job_id}:close")
}

/// The idempotency key of a paid order's recharge.
pub fn order_key(order_no: &str) -> String {
    format!("order:{order_no}")
}

/// The `gift` of a new end user's starting credits (key `user:<id>:starting`, so a retried
/// sign-up grants once); written in the transaction that creates the user.
pub fn starting_credits(tenant_id: &str, user_id: &str, amount: i64, at: Millis) -> NewEntry {
    NewEntry {
        account: AccountRef::user(tenant_id, user_id),
        kind: EntryKind::Gift,
        amount,
        idem_key: format!("user:{user_id}:starting"),
        reason: Some("starting credits".into()),
        actor: None,
        at,
    }
}

/// What a job costs, held from `account` in the submit transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Charge {
    pub account: AccountRef,
    /// Credits; a charge of 0 holds nothing.
    pub amount: i64,
}

/// A grant or correction written by hand or by a payment (never a job's own step).
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub account: AccountRef,
    pub kind: EntryKind,
    /// Change to the balance; may be negative only for `adjustment`.
    pub amount: i64,
    pub idem_key: String,
    pub reason: Option<String>,
    pub actor: Option<String>,
    pub at: Millis,
}

/// What posting an entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum PostOutcome {
    Posted(Entry),
    /// The key was written before: nothing new, here is the first entry.
    Duplicate(Entry),
    /// The balance would go below zero; nothing written.
    Insufficient {
        required: i64,
        available: i64,
    },
}

/// Filter and page of an account's entries, newest first.
#[derive(Debug, Clone, Default)]
pub struct EntryQuery {
    pub account_id: String,
    pub kinds: Vec<EntryKind>,
    pub from: Option<Millis>,
    /// Exclusive.
    pub until: Option<Millis>,
    pub offset: u64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EntryPage {
    pub items: Vec<Entry>,
    pub total: u64,
}

/// Sums over an account's entries, for balance and statistics views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountTotals {
    pub balance: i64,
    pub held: i64,
    /// Everything granted: recharges, gifts, refunds, resets and positive adjustments.
    pub granted: i64,
    pub recharged: i64,
    pub recharge_count: u64,
    /// Spent by settled jobs.
    pub settled: i64,
    /// Jobs charged (holds written).
    pub hold_count: u64,
    /// Spent by settled jobs since the last `reset` entry (the MJ `token_use`, with `held`).
    pub settled_since_reset: i64,
}

/// A price rule: credits per image for an operation, mode and provider (`*` for any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceRule {
    pub operation: String,
    pub mode: String,
    pub provider: String,
    pub credits: i64,
}

pub const ANY: &str = "*";

/// The most specific rule for `(operation, mode, provider)`: an exact field beats `*`,
/// operation first, then mode, then provider.
pub fn best_rule<'a>(
    rules: &'a [PriceRule],
    operation: &str,
    mode: &str,
    provider: &str,
) -> Option<&'a PriceRule> {
    let fits = |rule: &str, asked: &str| rule == ANY || rule == asked;
    rules
        .iter()
        .filter(|r| {
            fits(&r.operation, operation) && fits(&r.mode, mode) && fits(&r.provider, provider)
        })
        .max_by_key(|r| (r.operation != ANY, r.mode != ANY, r.provider != ANY))
}

/// A tenant's billing settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Billing {
    /// The job API holds each job's price from the tenant's account.
    pub prepaid: bool,
    /// Sealed secret that payment notifications are signed with.
    pub payment_secret: Option<Vec<u8>>,
}

/// A Midjourney app key: a tenant API key with a token account (the origin's `user_info`).
#[derive(Debug, Clone, PartialEq)]
pub struct MjAppKey {
    pub name: String,
    pub tenant_id: String,
    pub account_id: String,
    pub created_at: Millis,
}

/// A credit package as sold (prices in cents).
#[derive(Debug, Clone, PartialEq)]
pub struct CreditPackage {
    pub package_id: String,
    pub name: String,
    pub credits: i64,
    pub price_cents: i64,
    pub original_cents: i64,
    pub discount: f64,
    pub description: String,
    pub popular: bool,
    pub sort_order: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Paid,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
        }
    }

    pub fn parse(s: &str) -> Option<OrderStatus> {
        match s {
            "pending" => Some(OrderStatus::Pending),
            "paid" => Some(OrderStatus::Paid),
            _ => None,
        }
    }
}

/// A recharge order.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub order_no: String,
    pub tenant_id: String,
    pub account_id: String,
    pub package_id: String,
    pub credits: i64,
    pub amount_cents: i64,
    pub payment_method: String,
    pub status: OrderStatus,
    pub paid_via: Option<String>,
    pub created_at: Millis,
    pub paid_at: Option<Millis>,
}

#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    pub account_id: String,
    pub status: Option<OrderStatus>,
    pub offset: u64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderPage {
    pub items: Vec<Order>,
    pub total: u64,
}

/// What paying an order did.
#[derive(Debug, Clone, PartialEq)]
pub enum PayOutcome {
    /// Pending → paid now, and the recharge entry written.
    Paid(Order),
    /// Already paid: nothing written.
    AlreadyPaid,
    NotFound,
}

/// One disagreement `easel ledger check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// `account <id>` or `job <id>`.
    pub subject: String,
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.what)
    }
}

/// An account's cached totals next to the sums of its entries.
#[derive(Debug, Clone)]
pub struct AccountSums {
    pub account_id: String,
    pub balance: i64,
    pub held: i64,
    pub entries_amount: i64,
    pub entries_held: i64,
}

/// A charged job: its status (None: the job row is gone), what is still held for it, and the
/// kinds of the entries that closed its hold.
#[derive(Debug, Clone)]
pub struct JobHold {
    pub job_id: String,
    pub status: Option<JobStatus>,
    pub open: i64,
    pub closes: Vec<EntryKind>,
}

/// Judges the ledger: every cached total equals its entries, every ended job's hold was
/// settled (SUCCEEDED) or released (FAILED, CANCELED) exactly once, and every unfinished job's
/// hold is still open.
pub fn judge(accounts: &[AccountSums], holds: &[JobHold]) -> Vec<Difference> {
    let mut found = Vec::new();
    for a in accounts {
        let subject = format!("account {}", a.account_id);
        if a.balance != a.entries_amount {
            found.push(Difference {
                subject: subject.clone(),
                what: format!(
                    "cached balance {} but the entries sum to {}",
                    a.balance, a.entries_amount
                ),
            });
        }
        if a.held != a.entries_held {
            found.push(Difference {
                subject,
                what: format!(
                    "cached held {} but the entries hold {}",
                    a.held, a.entries_held
                ),
            });
        }
    }
    for h in holds {
        if let Some(what) = judge_hold(h) {
            found.push(Difference {
                subject: format!("job {}", h.job_id),
                what,
            });
        }
    }
    found
}

fn judge_hold(h: &JobHold) -> Option<String> {
    let Some(status) = h.status else {
        return (h.open != 0).then(|| format!("{} still held for a job that is gone", h.open));
    };
    let expected = match status {
        JobStatus::Succeeded => Some(EntryKind::Settle),
        JobStatus::Failed | JobStatus::Canceled => Some(EntryKind::Release),
        _ => None,
    };
    match expected {
        None if h.open <= 0 || !h.closes.is_empty() => Some(format!(
            "{status} but its hold is closed ({:?}, {} open)",
            h.closes, h.open
        )),
        Some(kind) if h.open != 0 || h.closes != [kind] => Some(format!(
            "{status}: expected one {kind} and nothing open, found {:?} and {} open",
            h.closes, h.open
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(operation: &str, mode: &str, provider: &str, credits: i64) -> PriceRule {
        PriceRule {
            operation: operation.into(),
            mode: mode.into(),
            provider: provider.into(),
            credits,
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rules = [
            rule("*", "*", "*", 1),
            rule("generate", "final", "*", 3),
            rule("generate", "*", "gemini", 2),
        ];
        let pick = |o, m, p| best_rule(&rules, o, m, p).map(|r| r.credits);
        assert_eq!(pick("generate", "final", "gemini"), Some(3));
        assert_eq!(pick("generate", "draft", "gemini"), Some(2));
        assert_eq!(pick("edit", "draft", "local"), Some(1));
        assert_eq!(best_rule(&rules[1..], "edit", "draft", "x"), None);
    }

    #[test]
    fn judge_finds_every_kind_of_difference() {
        let sums = |balance, entries_amount| AccountSums {
            account_id: "a".into(),
            balance,
            held: 0,
            entries_amount,
            entries_held: 0,
        };
        assert!(judge(&[sums(5, 5)], &[]).is_empty());
        assert_eq!(judge(&[sums(5, 4)], &[]).len(), 1);
        let hold = |status, open, closes: Vec<EntryKind>| JobHold {
            job_id: "j".into(),
            status,
            open,
            closes,
        };
        let ok = [
            hold(Some(JobStatus::Queued), 1, vec![]),
            hold(Some(JobStatus::Succeeded), 0, vec![EntryKind::Settle]),
            hold(Some(JobStatus::Canceled), 0, vec![EntryKind::Release]),
        ];
        assert!(judge(&[], &ok).is_empty());
        let bad = [
            hold(Some(JobStatus::Running), 0, vec![EntryKind::Release]),
            hold(Some(JobStatus::Succeeded), 0, vec![EntryKind::Release]),
            hold(Some(JobStatus::Failed), 1, vec![]),
            hold(None, 1, vec![]),
        ];
        assert_eq!(judge(&[], &bad).len(), 4);
    }
}
