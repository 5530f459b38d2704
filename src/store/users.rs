//! The end-user half of the store: end users of each tenant, their sign-in sessions and
//! refresh tokens, the host names a tenant claims and its WeChat settings.
//!
//! A supertrait of [`super::Store`], so every engine implements it (in its own `users.rs`)
//! and callers reach it through the one `Arc<dyn Store>`. Each method is one transaction.

use async_trait::async_trait;

use super::StoreResult;
use crate::base::clock::Millis;
use crate::base::user::{
    AuthSession, EndUser, NewEndUser, NewRefreshToken, ProfileUpdate, RefreshOutcome, Role,
    UserStatus, WechatSettings,
};

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates the user and grants its starting credits in the same transaction.
    /// `Conflict` when the tenant already has a live user with that email or WeChat openid (or
    /// an admin with that username); `NotFound` for an unknown tenant.
    async fn user_create(&self, user: NewEndUser) -> StoreResult<EndUser>;
    /// A live (not deleted) user of the tenant, by its string id.
    async fn user_get(&self, tenant_id: &str, user_id: &str) -> StoreResult<Option<EndUser>>;
    /// A live user by numeric id (the photo contract's `user_id`).
    async fn user_get_by_seq(&self, tenant_id: &str, seq: i64) -> StoreResult<Option<EndUser>>;
    /// A live user by email (compared as stored: callers normalise it).
    async fn user_find_by_email(
        &self,
        tenant_id: &str,
        email: &str,
    ) -> StoreResult<Option<EndUser>>;
    /// A live user by WeChat openid.
    async fn user_find_by_openid(
        &self,
        tenant_id: &str,
        openid: &str,
    ) -> StoreResult<Option<EndUser>>;
    /// A live admin by username.
    async fn user_find_admin(
        &self,
        tenant_id: &str,
        username: &str,
    ) -> StoreResult<Option<EndUser>>;
    /// The tenant's live users, oldest first.
    async fn user_list(&self, tenant_id: &str) -> StoreResult<Vec<EndUser>>;
    async fn user_update_profile(
        &self,
        tenant_id: &str,
        user_id: &str,
        update: ProfileUpdate,
    ) -> StoreResult<EndUser>;
    /// Stamps a successful sign-in.
    async fn user_touch_login(
        &self,
        tenant_id: &str,
        user_id: &str,
        now: Millis,
    ) -> StoreResult<EndUser>;
    /// Replaces the password hash and revokes every session of the user.
    async fn user_set_password(
        &self,
        tenant_id: &str,
        user_id: &str,
        password_hash: &str,
    ) -> StoreResult<()>;
    /// Sets the status; `inactive` also revokes every session.
    async fn user_set_status(
        &self,
        tenant_id: &str,
        user_id: &str,
        status: UserStatus,
    ) -> StoreResult<EndUser>;
    /// `Conflict` when making an admin whose username another admin of the tenant has.
    async fn user_set_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Role,
    ) -> StoreResult<EndUser>;
    /// Deletes the user (its row stays, hidden, for the records that point at it) and
    /// revokes every session; its email and openid are free again.
    async fn user_delete(&self, tenant_id: &str, user_id: &str) -> StoreResult<()>;

    /// Starts a session for a live user with its first refresh token.
    async fn session_create(
        &self,
        session: AuthSession,
        refresh: NewRefreshToken,
    ) -> StoreResult<()>;
    /// The session and its user, if the session is not revoked and the user is live.
    async fn session_get(&self, session_id: &str) -> StoreResult<Option<(AuthSession, EndUser)>>;
    /// Revokes one session (sign-out). Revoking twice is harmless.
    async fn session_revoke(&self, session_id: &str, now: Millis) -> StoreResult<()>;
    /// Marks the presented refresh token used and stores `next` in its family, if the token
    /// is current, unexpired at `now`, and its session and user are valid. A token used
    /// before revokes its whole family ([`RefreshOutcome::Reused`]).
    async fn refresh_rotate(
        &self,
        presented_hash: &[u8; 32],
        next: NewRefreshToken,
        now: Millis,
    ) -> StoreResult<RefreshOutcome>;

    /// Replaces the host names the tenant claims. `Conflict` if another tenant claims one.
    async fn tenant_hosts_set(&self, tenant_id: &str, hosts: Vec<String>) -> StoreResult<()>;
    async fn tenant_hosts(&self, tenant_id: &str) -> StoreResult<Vec<String>>;
    /// The tenant that claims `host` (lowercase, without port).
    async fn tenant_by_host(&self, host: &str) -> StoreResult<Option<String>>;

    async fn wechat_settings_set(&self, settings: WechatSettings) -> StoreResult<()>;
    async fn wechat_settings_get(&self, tenant_id: &str) -> StoreResult<Option<WechatSettings>>;
}
