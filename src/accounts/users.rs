//! End users of a tenant: sign-up, sign-in (email + password, admin username + password,
//! WeChat), sessions, token checks, rotation, profile changes and sign-out.
//!
//! Owns: the rules (who may sign in, what revokes what, which tenant a user is in) over the
//! store's [`crate::store::UserStore`]. Must not touch: HTTP shapes (the API layer turns
//! [`AccountError`] into each contract's error) or credits (read through [`credit_balance`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::config::UsersConfig;
use super::guard::{Attempt, SignInGuard};
use super::passwords::{PasswordError, Passwords};
use super::tokens::{refresh_hash, TokenError, TokenKeys};
use super::wechat::{MiniProgram, WechatClient, WechatError, WechatIdentity};
use crate::base::clock::now_millis;
use crate::base::secret::{Sealer, Secret};
use crate::base::user::{
    AuthSession, EndUser, NewEndUser, ProfileUpdate, RefreshOutcome, Role, UserStatus,
};
use crate::limits::Limiter;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Wrong password, unknown account: the same answer for both.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The password was right but the account is inactive.
    #[error("account is deactivated")]
    Deactivated,
    #[error("email already registered")]
    EmailTaken,
    #[error("too many failed sign-ins")]
    TooManyAttempts(Duration),
    #[error("no valid token: {0:?}")]
    Unauthenticated(AuthFailure),
    /// A refresh token that is unknown, expired, or whose session ended.
    #[error("refresh token invalid")]
    RefreshInvalid,
    /// A refresh token used a second time: its whole family is revoked.
    #[error("refresh token reused")]
    RefreshReused,
    #[error("current password is incorrect")]
    CurrentPasswordWrong,
    #[error(transparent)]
    Wechat(#[from] WechatError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl From<PasswordError> for AccountError {
    fn from(e: PasswordError) -> Self {
        AccountError::Internal(e.to_string())
    }
}

/// Why a request carries no valid end-user token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Invalid,
    Expired,
    /// Signed and current, but its session was revoked or its user deleted or deactivated.
    Revoked,
}

/// A signed-in user with fresh tokens.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: EndUser,
    pub access_token: String,
    /// `None` when only the access token was renewed (the origins' bearer refresh).
    pub refresh_token: Option<String>,
    pub is_new_user: bool,
}

/// The user behind a valid access token.
#[derive(Debug, Clone)]
pub struct Authed {
    pub user: EndUser,
    pub session_id: String,
}

/// Sessions checked lately: session id → (its user, when checked).
type SessionCache = HashMap<String, (EndUser, Instant)>;
/// Past this many entries the cache is cleared rather than grown without bound.
const SESSION_CACHE_MAX: usize = 100_000;

/// The accounts service; cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    sealer: Sealer,
    passwords: Passwords,
    tokens: TokenKeys,
    guard: SignInGuard,
    wechat: WechatClient,
    wechat_base_url: String,
    /// The default tenant's mini-program, from config.
    wechat_default: Option<(String, Secret)>,
    starting_credits: i64,
    session_ttl: Duration,
    sessions: Arc<RwLock<SessionCache>>,
}

/// The parts [`Accounts`] is built from.
pub struct AccountsDeps {
    pub store: Arc<dyn Store>,
    pub sealer: Sealer,
    pub limiter: Arc<dyn Limiter>,
    pub jwt_secret: Vec<u8>,
    pub users: UsersConfig,
    pub wechat: super::config::WechatConfig,
}

/// The balance shown in a user's `credits` field: the ledger account's spendable credits
/// (0 for a user with no account yet, or while the store cannot say).
pub async fn credit_balance(store: &dyn Store, user: &EndUser) -> i64 {
    let account = crate::base::ledger::AccountRef::user(&user.tenant_id, &user.id);
    match store.ledger_account(&account.id).await {
        Ok(Some(found)) => found.balance,
        _ => 0,
    }
}

/// Emails compare trimmed and lowercased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new().to_string().to_lowercase())
}

impl Accounts {
    pub fn new(deps: AccountsDeps) -> Result<Accounts, AccountError> {
        let passwords = Passwords::new(&deps.users)?;
        let tokens = TokenKeys::new(
            &deps.jwt_secret,
            deps.users.access_ttl(),
            deps.users.refresh_ttl(),
        );
        let wechat_default = match (&deps.wechat.app_id, &deps.wechat.app_secret) {
            (Some(id), Some(secret)) if !id.trim().is_empty() => {
                Some((id.trim().to_owned(), secret.clone()))
            }
            _ => None,
        };
        Ok(Accounts {
            guard: SignInGuard::new(deps.limiter, &deps.users),
            store: deps.store,
            sealer: deps.sealer,
            passwords,
            tokens,
            wechat: WechatClient::new(Duration::from_millis(deps.wechat.timeout_ms.max(100))),
            wechat_base_url: deps.wechat.base_url,
            wechat_default,
            starting_credits: deps.users.starting_credits,
            session_ttl: Duration::from_millis(deps.users.session_cache_ms),
            sessions: Arc::new(RwLock::new(HashMap::new())),
        })
    }

    pub fn tokens(&self) -> &TokenKeys {
        &self.tokens
    }

    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// Email sign-up: a new user with the tenant's starting credits, signed in.
    pub async fn register(
        &self,
        tenant_id: &str,
        email: &str,
        username: &str,
        password: &str,
    ) -> Result<SignedIn, AccountError> {
        let email = normalize_email(email);
        if self
            .store
            .user_find_by_email(tenant_id, &email)
            .await?
            .is_some()
        {
            return Err(AccountError::EmailTaken);
        }
        let hash = self.passwords.hash(password).await?;
        let new = NewEndUser {
            email: Some(email),
            username: Some(username.to_owned()),
            password_hash: Some(Secret::new(hash)),
            ..self.new_user(tenant_id, Role::User)
        };
        let user = match self.store.user_create(new).await {
            Ok(user) => user,
            Err(StoreError::Conflict(_)) => return Err(AccountError::EmailTaken),
            Err(e) => return Err(e.into()),
        };
        let mut signed = self.start_session(user).await?;
        signed.is_new_user = true;
        Ok(signed)
    }

    /// A new end user of `tenant_id`, with nothing but its id and starting credits.
    pub fn new_user(&self, tenant_id: &str, role: Role) -> NewEndUser {
        NewEndUser {
            id: new_id("usr"),
            tenant_id: tenant_id.to_owned(),
            email: None,
            username: None,
            password_hash: None,
            wechat_openid: None,
            wechat_unionid: None,
            nickname: None,
            avatar: None,
            role,
            starting_credits: self.starting_credits,
        }
    }

    /// Email + password sign-in.
    pub async fn login(
        &self,
        tenant_id: &str,
        email: &str,
        password: &str,
        address: &str,
    ) -> Result<SignedIn, AccountError> {
        let email = normalize_email(email);
        let attempt = self.begin(tenant_id, &email, address).await?;
        let found = self.store.user_find_by_email(tenant_id, &email).await;
        self.password_sign_in(attempt, found, password).await
    }

    /// An admin's username + password sign-in (`POST /api/auth/admin/login`).
    pub async fn admin_login(
        &self,
        tenant_id: &str,
        username: &str,
        password: &str,
        address: &str,
    ) -> Result<SignedIn, AccountError> {
        let login = format!("admin:{}", username.trim());
        let attempt = self.begin(tenant_id, &login, address).await?;
        let found = self.store.user_find_admin(tenant_id, username.trim()).await;
        self.password_sign_in(attempt, found, password).await
    }

    async fn begin(
        &self,
        tenant_id: &str,
        login: &str,
        address: &str,
    ) -> Result<Attempt, AccountError> {
        self.guard
            .begin(tenant_id, login, address)
            .await
            .map_err(AccountError::TooManyAttempts)
    }

    /// Verifies `password` (against the dummy hash when there is no such user, so both take
    /// the same time), counts a failure, and signs the user in.
    async fn password_sign_in(
        &self,
        attempt: Attempt,
        found: Result<Option<EndUser>, StoreError>,
        password: &str,
    ) -> Result<SignedIn, AccountError> {
        let found = match found {
            Ok(found) => found,
            Err(e) => {
                self.guard.finish(attempt, false).await;
                return Err(e.into());
            }
        };
        let stored = found
            .as_ref()
            .and_then(|u| u.password_hash.as_ref())
            .map(|h| h.expose().to_owned());
        let verified = self.passwords.verify(password, stored.as_deref()).await;
        let matched = matches!(verified, Ok(true));
        self.guard.finish(attempt, !matched).await;
        verified?;
        let user = match found {
            Some(user) if matched => user,
            _ => return Err(AccountError::InvalidCredentials),
        };
        if user.status != UserStatus::Active {
            return Err(AccountError::Deactivated);
        }
        self.start_session(user).await
    }

    /// Stamps the sign-in and opens a session with a fresh access and refresh token.
    async fn start_session(&self, user: EndUser) -> Result<SignedIn, AccountError> {
        let now = now_millis();
        let user = self
            .store
            .user_touch_login(&user.tenant_id, &user.id, now)
            .await?;
        let session_id = new_id("ses");
        let (refresh, record) = self.tokens.new_refresh(now);
        let session = AuthSession {
            id: session_id.clone(),
            tenant_id: user.tenant_id.clone(),
            user_id: user.id.clone(),
            created_at: now,
            revoked_at: None,
        };
        self.store.session_create(session, record).await?;
        Ok(SignedIn {
            access_token: self.tokens.issue(&user, &session_id, now),
            refresh_token: Some(refresh),
            user,
            is_new_user: false,
        })
    }

    /// The tenant's mini-program: its own settings, else (for the default tenant) config.
    pub async fn mini_program(
        &self,
        tenant_id: &str,
        is_default_tenant: bool,
    ) -> Result<MiniProgram, AccountError> {
        if let Some(settings) = self.store.wechat_settings_get(tenant_id).await? {
            let secret = self.sealer.open(&settings.secret_sealed).map_err(|e| {
                AccountError::Internal(format!("tenant {tenant_id} wechat secret: {e}"))
            })?;
            return Ok(MiniProgram {
                base_url: settings
                    .base_url
                    .unwrap_or_else(|| self.wechat_base_url.clone()),
                app_id: settings.app_id,
                app_secret: Secret::new(secret),
            });
        }
        match &self.wechat_default {
            Some((app_id, secret)) if is_default_tenant => Ok(MiniProgram {
                base_url: self.wechat_base_url.clone(),
                app_id: app_id.clone(),
                app_secret: secret.clone(),
            }),
            _ => Err(WechatError::NotConfigured.into()),
        }
    }

    /// WeChat sign-in: `code2Session`, then the user with that openid, made on first sign-in
    /// (with the starting credits, `nickname` default `用户`).
    pub async fn wechat_login(
        &self,
        app: &MiniProgram,
        tenant_id: &str,
        code: &str,
        profile: ProfileUpdate,
    ) -> Result<SignedIn, AccountError> {
        let identity = self.wechat.code_to_session(app, code).await?;
        let (user, is_new_user) = self.wechat_user(tenant_id, identity, profile).await?;
        if user.status != UserStatus::Active {
            return Err(AccountError::Deactivated);
        }
        let mut signed = self.start_session(user).await?;
        signed.is_new_user = is_new_user;
        Ok(signed)
    }

    async fn wechat_user(
        &self,
        tenant_id: &str,
        identity: WechatIdentity,
        profile: ProfileUpdate,
    ) -> Result<(EndUser, bool), AccountError> {
        if let Some(user) = self
            .store
            .user_find_by_openid(tenant_id, &identity.openid)
            .await?
        {
            return Ok((user, false));
        }
        let new = NewEndUser {
            wechat_openid: Some(identity.openid.clone()),
            wechat_unionid: identity.unionid,
            nickname: Some(profile.nickname.unwrap_or_else(|| "用户".into())),
            avatar: profile.avatar,
            ..self.new_user(tenant_id, Role::User)
        };
        match self.store.user_create(new).await {
            Ok(user) => Ok((user, true)),
            // Two first sign-ins at once: the other one made the user.
            Err(StoreError::Conflict(_)) => self
                .store
                .user_find_by_openid(tenant_id, &identity.openid)
                .await?
                .map(|u| (u, false))
                .ok_or_else(|| AccountError::Internal("wechat user vanished".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The user behind an access token, if its signature, expiry, session and user are good.
    pub async fn authenticate(&self, token: &str) -> Result<Authed, AccountError> {
        let claims = self.tokens.verify(token).map_err(|e| {
            AccountError::Unauthenticated(match e {
                TokenError::Expired => AuthFailure::Expired,
                TokenError::Invalid => AuthFailure::Invalid,
            })
        })?;
        let user = match self.cached_session(&claims.sid) {
            Some(user) => user,
            None => {
                let Some((_, user)) = self.store.session_get(&claims.sid).await? else {
                    return Err(AccountError::Unauthenticated(AuthFailure::Revoked));
                };
                self.cache_session(&claims.sid, &user);
                user
            }
        };
        if user.id != claims.sub || user.tenant_id != claims.tid {
            return Err(AccountError::Unauthenticated(AuthFailure::Invalid));
        }
        Ok(Authed {
            user,
            session_id: claims.sid,
        })
    }

    /// Rotates a refresh token: a new access and refresh token in the same session. A token
    /// presented twice revokes the session.
    pub async fn refresh(&self, presented: &str) -> Result<SignedIn, AccountError> {
        let now = now_millis();
        let (refresh, record) = self.tokens.new_refresh(now);
        match self
            .store
            .refresh_rotate(&refresh_hash(presented), record, now)
            .await?
        {
            RefreshOutcome::Rotated { session, user } => Ok(SignedIn {
                access_token: self.tokens.issue(&user, &session.id, now),
                refresh_token: Some(refresh),
                user: *user,
                is_new_user: false,
            }),
            RefreshOutcome::Reused { session_id } => {
                self.forget_session(&session_id);
                tracing::warn!(session = %session_id, "refresh token reused; session revoked");
                Err(AccountError::RefreshReused)
            }
            RefreshOutcome::Invalid => Err(AccountError::RefreshInvalid),
        }
    }

    /// The origins' refresh: a new access token for the same session.
    pub fn reissue(&self, authed: &Authed) -> SignedIn {
        SignedIn {
            access_token: self
                .tokens
                .issue(&authed.user, &authed.session_id, now_millis()),
            refresh_token: None,
            user: authed.user.clone(),
            is_new_user: false,
        }
    }

    /// Changes the password after checking the current one (a wrong one counts as a failed
    /// sign-in). Every session ends; the caller gets a new one.
    pub async fn change_password(
        &self,
        authed: &Authed,
        current: &str,
        new: &str,
        address: &str,
    ) -> Result<SignedIn, AccountError> {
        let user = &authed.user;
        let login = user.email.clone().unwrap_or_else(|| user.id.clone());
        let attempt = self.begin(&user.tenant_id, &login, address).await?;
        let stored = user.password_hash.as_ref().map(|h| h.expose().to_owned());
        let verified = self.passwords.verify(current, stored.as_deref()).await;
        let matched = matches!(verified, Ok(true));
        self.guard.finish(attempt, !matched).await;
        if !verified? {
            return Err(AccountError::CurrentPasswordWrong);
        }
        let hash = self.passwords.hash(new).await?;
        self.store
            .user_set_password(&user.tenant_id, &user.id, &hash)
            .await?;
        self.forget_user(&user.id);
        self.start_session(user.clone()).await
    }

    pub async fn update_profile(
        &self,
        authed: &Authed,
        update: ProfileUpdate,
    ) -> Result<EndUser, AccountError> {
        let user = self
            .store
            .user_update_profile(&authed.user.tenant_id, &authed.user.id, update)
            .await?;
        self.forget_user(&user.id);
        Ok(user)
    }

    /// Deletes the account; every token of it stops working.
    pub async fn delete(&self, authed: &Authed) -> Result<(), AccountError> {
        self.store
            .user_delete(&authed.user.tenant_id, &authed.user.id)
            .await?;
        self.forget_user(&authed.user.id);
        Ok(())
    }

    /// Ends the session of this token (and its refresh tokens).
    pub async fn sign_out(&self, authed: &Authed) -> Result<(), AccountError> {
        self.store
            .session_revoke(&authed.session_id, now_millis())
            .await?;
        self.forget_session(&authed.session_id);
        Ok(())
    }

    /// Sets a user's status; `inactive` ends every session.
    pub async fn set_status(
        &self,
        tenant_id: &str,
        user_id: &str,
        status: UserStatus,
    ) -> Result<EndUser, AccountError> {
        let user = self
            .store
            .user_set_status(tenant_id, user_id, status)
            .await?;
        self.forget_user(user_id);
        Ok(user)
    }

    /// Makes an admin (`easel create-admin`): username + password, role `admin`.
    pub async fn create_admin(
        &self,
        tenant_id: &str,
        username: &str,
        password: &str,
    ) -> Result<EndUser, AccountError> {
        let hash = self.passwords.hash(password).await?;
        let new = NewEndUser {
            username: Some(username.to_owned()),
            nickname: Some(username.to_owned()),
            password_hash: Some(Secret::new(hash)),
            ..self.new_user(tenant_id, Role::Admin)
        };
        Ok(self.store.user_create(new).await?)
    }

    fn cached_session(&self, session_id: &str) -> Option<EndUser> {
        let cache = self.sessions.read().ok()?;
        let (user, at) = cache.get(session_id)?;
        (at.elapsed() < self.session_ttl).then(|| user.clone())
    }

    fn cache_session(&self, session_id: &str, user: &EndUser) {
        if self.session_ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.sessions.write() {
            if cache.len() >= SESSION_CACHE_MAX {
                cache.clear();
            }
            cache.insert(session_id.to_owned(), (user.clone(), Instant::now()));
        }
    }

    fn forget_session(&self, session_id: &str) {
        if let Ok(mut cache) = self.sessions.write() {
            cache.remove(session_id);
        }
    }

    fn forget_user(&self, user_id: &str) {
        if let Ok(mut cache) = self.sessions.write() {
            cache.retain(|_, (user, _)| user.id != user_id);
        }
    }
}
