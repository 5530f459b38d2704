//! Midjourney app keys: the origin's `user_info` rows (`user_name`, `app_key`, `token_total`,
//! `token_use`) as tenant API keys with a token account in the ledger.
//!
//! The ledger holds the truth; the origin's two numbers are views of it: `token_use` is what
//! settled since the last `reset-usage` plus what unfinished calls hold, and `token_total` is
//! that plus the balance. Changing `token_total` writes an `adjustment` of the difference;
//! `reset-usage` writes a `reset` that gives back what was used. A call is allowed while the
//! balance covers its price, which is the origin's `token_use < token_total`.

use rand::Rng;

use crate::accounts::keys;
use crate::base::clock::now_millis;
use crate::base::ledger::{AccountRef, EntryKind, MjAppKey, NewEntry, PostOutcome};
use crate::store::{Store, StoreError};

/// The origin's default `token_total`.
pub const DEFAULT_TOKEN_TOTAL: i64 = 100;
const KEY_CHARS: usize = 32;
const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The origin's view of an app key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub user_name: String,
    pub token_total: i64,
    pub token_use: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MjError {
    #[error("no app key named {0}")]
    UnknownName(String),
    #[error("no such app key")]
    UnknownKey,
    #[error("the name {0} is taken")]
    NameTaken(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for MjError {
    fn from(e: StoreError) -> Self {
        MjError::Store(e)
    }
}

/// A new app key in the origin's format: 32 random letters and digits.
fn new_app_key() -> String {
    let mut rng = rand::thread_rng();
    (0..KEY_CHARS)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Creates a named app key on `tenant_id` with `token_total` tokens; returns the key (shown
/// once) and its row.
pub async fn create(
    store: &dyn Store,
    tenant_id: &str,
    name: &str,
    token_total: i64,
) -> Result<(String, MjAppKey), MjError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(MjError::Invalid("the name must be 1-100 characters".into()));
    }
    if token_total < 0 {
        return Err(MjError::Invalid("TOKEN_TOTAL must not be negative".into()));
    }
    if store.mj_key_by_name(name).await?.is_some() {
        return Err(MjError::NameTaken(name.to_owned()));
    }
    let issued = keys::from_plaintext(new_app_key());
    let row = store
        .mj_key_create(tenant_id, name, issued.record, token_total, now_millis())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => MjError::NameTaken(name.to_owned()),
            other => MjError::Store(other),
        })?;
    Ok((issued.plaintext, row))
}

pub async fn by_name(store: &dyn Store, name: &str) -> Result<MjAppKey, MjError> {
    store
        .mj_key_by_name(name)
        .await?
        .ok_or_else(|| MjError::UnknownName(name.to_owned()))
}

pub async fn by_key(store: &dyn Store, app_key: &str) -> Result<MjAppKey, MjError> {
    store
        .mj_key_by_hash(&keys::hash_key(app_key))
        .await?
        .ok_or(MjError::UnknownKey)
}

/// `token_total` and `token_use` from the ledger.
pub async fn info(store: &dyn Store, key: &MjAppKey) -> Result<TokenInfo, MjError> {
    let totals = store.ledger_totals(&key.account_id).await?;
    let token_use = totals.settled_since_reset + totals.held;
    Ok(TokenInfo {
        user_name: key.name.clone(),
        token_total: totals.balance + token_use,
        token_use,
    })
}

fn account_of(key: &MjAppKey) -> AccountRef {
    AccountRef {
        id: key.account_id.clone(),
        tenant_id: key.tenant_id.clone(),
        kind: crate::base::ledger::AccountKind::AppKey,
    }
}

fn manual_entry(key: &MjAppKey, kind: EntryKind, amount: i64, reason: &str) -> NewEntry {
    NewEntry {
        account: account_of(key),
        kind,
        amount,
        idem_key: format!("{}:{}:{}", key.account_id, kind, ulid::Ulid::new()),
        reason: Some(reason.to_owned()),
        actor: Some("cli".into()),
        at: now_millis(),
    }
}

/// Sets `token_total`: an adjustment of the difference. Refused below `token_use` (the
/// balance never goes negative): reset the usage first.
pub async fn update_tokens(
    store: &dyn Store,
    key: &MjAppKey,
    token_total: i64,
) -> Result<TokenInfo, MjError> {
    if token_total < 0 {
        return Err(MjError::Invalid("TOTAL must not be negative".into()));
    }
    let now = info(store, key).await?;
    let delta = token_total - now.token_total;
    if delta != 0 {
        let entry = manual_entry(key, EntryKind::Adjustment, delta, "update-tokens");
        if let PostOutcome::Insufficient { .. } = store.ledger_post(entry).await? {
            return Err(MjError::Invalid(format!(
                "token_total {token_total} is below token_use {}; run reset-usage first",
                now.token_use
            )));
        }
    }
    info(store, key).await
}

/// Sets `token_use` back to what unfinished calls hold: a `reset` giving back what settled.
pub async fn reset_usage(store: &dyn Store, key: &MjAppKey) -> Result<TokenInfo, MjError> {
    let totals = store.ledger_totals(&key.account_id).await?;
    if totals.settled_since_reset > 0 {
        let entry = manual_entry(
            key,
            EntryKind::Reset,
            totals.settled_since_reset,
            "reset-usage",
        );
        store.ledger_post(entry).await?;
    }
    info(store, key).await
}
