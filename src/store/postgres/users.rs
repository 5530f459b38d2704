//! End users, sessions, refresh tokens, tenant host names and WeChat settings on PostgreSQL.

use async_trait::async_trait;
use sqlx::{FromRow, PgConnection};

use super::PgStore;
use crate::base::clock::Millis;
use crate::base::secret::Secret;
use crate::base::user::{
    AuthSession, EndUser, NewEndUser, NewRefreshToken, ProfileUpdate, RefreshOutcome, Role,
    UserStatus, WechatSettings,
};
use crate::store::{StoreError, StoreResult, UserStore};

const USER_COLUMNS: &str = "u.seq, u.id, u.tenant_id, u.email, u.username, u.password_hash, \
     u.wechat_openid, u.wechat_unionid, u.nickname, u.avatar, u.role, u.status, u.created_at, \
     u.updated_at, u.last_login_at";

#[derive(FromRow)]
struct UserRow {
    seq: i64,
    id: String,
    tenant_id: String,
    email: Option<String>,
    username: Option<String>,
    password_hash: Option<String>,
    wechat_openid: Option<String>,
    wechat_unionid: Option<String>,
    nickname: Option<String>,
    avatar: Option<String>,
    role: String,
    status: String,
    created_at: Millis,
    updated_at: Millis,
    last_login_at: Option<Millis>,
}

impl From<UserRow> for EndUser {
    fn from(r: UserRow) -> EndUser {
        EndUser {
            seq: r.seq,
            id: r.id,
            tenant_id: r.tenant_id,
            email: r.email,
            username: r.username,
            password_hash: r.password_hash.map(Secret::new),
            wechat_openid: r.wechat_openid,
            wechat_unionid: r.wechat_unionid,
            nickname: r.nickname,
            avatar: r.avatar,
            // The CHECK constraints allow nothing else.
            role: Role::parse(&r.role).unwrap_or(Role::User),
            status: UserStatus::parse(&r.status).unwrap_or(UserStatus::Inactive),
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_login_at: r.last_login_at,
        }
    }
}

#[derive(FromRow)]
struct SessionRow {
    session_id: String,
    session_tenant: String,
    session_user: String,
    session_created: Millis,
    session_revoked: Option<Millis>,
    #[sqlx(flatten)]
    user: UserRow,
}

/// A live user by one column of the tenant (`$1` tenant, `$2` value).
async fn find_by<T>(
    conn: &mut PgConnection,
    tenant_id: &str,
    column: &str,
    value: T,
    extra: &str,
) -> StoreResult<Option<EndUser>>
where
    T: 'static + Send + for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM end_users u
         WHERE u.tenant_id = $1 AND u.{column} = $2 AND u.deleted_at IS NULL {extra}"
    );
    let row: Option<UserRow> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(value)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(EndUser::from))
}

async fn get(conn: &mut PgConnection, tenant_id: &str, user_id: &str) -> StoreResult<EndUser> {
    find_by(conn, tenant_id, "id", user_id.to_owned(), "")
        .await?
        .ok_or(StoreError::NotFound)
}

/// The new user's starting credits: a `gift` entry in the creating transaction.
async fn grant_starting_credits(
    conn: &mut PgConnection,
    now: Millis,
    user: &NewEndUser,
) -> StoreResult<()> {
    if user.starting_credits <= 0 {
        return Ok(());
    }
    let entry = crate::base::ledger::starting_credits(
        &user.tenant_id,
        &user.id,
        user.starting_credits,
        now,
    );
    super::ledger::post_in(conn, &entry).await.map(|_| ())
}

async fn revoke_sessions(conn: &mut PgConnection, user_id: &str, now: Millis) -> StoreResult<()> {
    sqlx::query(
        "UPDATE auth_sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// `NotFound` unless an UPDATE changed a row.
fn changed(result: sqlx::postgres::PgQueryResult) -> StoreResult<()> {
    if result.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

/// The `WHERE` of every update of one live user: `$1` tenant, `$2` user.
const ONE_LIVE_USER: &str = "WHERE tenant_id = $1 AND id = $2 AND deleted_at IS NULL";

async fn session_get(
    conn: &mut PgConnection,
    session_id: &str,
) -> StoreResult<Option<(AuthSession, EndUser)>> {
    let sql = format!(
        "SELECT s.id AS session_id, s.tenant_id AS session_tenant, s.user_id AS session_user,
             s.created_at AS session_created, s.revoked_at AS session_revoked, {USER_COLUMNS}
         FROM auth_sessions s JOIN end_users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
           AND u.status = 'active'"
    );
    let row: Option<SessionRow> = sqlx::query_as(&sql)
        .bind(session_id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(|r| {
        let session = AuthSession {
            id: r.session_id,
            tenant_id: r.session_tenant,
            user_id: r.session_user,
            created_at: r.session_created,
            revoked_at: r.session_revoked,
        };
        (session, EndUser::from(r.user))
    }))
}

async fn insert_refresh(
    conn: &mut PgConnection,
    now: Millis,
    session_id: &str,
    token: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&token.token_hash[..])
    .bind(session_id)
    .bind(now)
    .bind(token.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn refresh_rotate(
    conn: &mut PgConnection,
    presented: &[u8; 32],
    next: &NewRefreshToken,
    now: Millis,
) -> StoreResult<RefreshOutcome> {
    // The row lock makes two concurrent presentations of one token see each other: the
    // second finds it used (a reuse), never both rotate.
    let found: Option<(String, Millis, Option<Millis>)> = sqlx::query_as(
        "SELECT session_id, expires_at, used_at FROM refresh_tokens WHERE token_hash = $1
         FOR UPDATE",
    )
    .bind(&presented[..])
    .fetch_optional(&mut *conn)
    .await?;
    let Some((session_id, expires_at, used_at)) = found else {
        return Ok(RefreshOutcome::Invalid);
    };
    if used_at.is_some() {
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(&session_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        return Ok(RefreshOutcome::Reused { session_id });
    }
    if expires_at <= now {
        return Ok(RefreshOutcome::Invalid);
    }
    let Some((session, user)) = session_get(conn, &session_id).await? else {
        return Ok(RefreshOutcome::Invalid);
    };
    sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1")
        .bind(&presented[..])
        .bind(now)
        .execute(&mut *conn)
        .await?;
    insert_refresh(conn, now, &session_id, next).await?;
    Ok(RefreshOutcome::Rotated {
        session,
        user: Box::new(user),
    })
}

impl PgStore {
    /// Sets one column of a live user (and `updated_at`) in one transaction, ending its
    /// sessions if `revoke`; the user afterwards, unless the change hid it (a deletion).
    async fn set_column<V>(
        &self,
        tenant_id: &str,
        user_id: &str,
        column: &'static str,
        value: V,
        revoke: bool,
    ) -> StoreResult<Option<EndUser>>
    where
        V: 'static + Send + for<'q> sqlx::Encode<'q, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    {
        let now = self.now();
        let mut tx = self.pool().begin().await?;
        let sql = format!("UPDATE end_users SET {column} = $3, updated_at = $4 {ONE_LIVE_USER}");
        let result = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(user_id)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        changed(result)?;
        if revoke {
            revoke_sessions(&mut tx, user_id, now).await?;
        }
        let user = find_by(&mut tx, tenant_id, "id", user_id.to_owned(), "").await?;
        tx.commit().await?;
        Ok(user)
    }
}

#[async_trait]
impl UserStore for PgStore {
    async fn user_create(&self, user: NewEndUser) -> StoreResult<EndUser> {
        let mut tx = self.pool().begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO end_users (id, tenant_id, email, username, password_hash,
                 wechat_openid, wechat_unionid, nickname, avatar, role, status, created_at,
                 updated_at)
             SELECT $1, id, $3, $4, $5, $6, $7, $8, $9, $10, 'active', $11, $11
             FROM tenants WHERE id = $2",
        )
        .bind(&user.id)
        .bind(&user.tenant_id)
        .bind(&user.email)
        .bind(&user.username)
        .bind(user.password_hash.as_ref().map(Secret::expose))
        .bind(&user.wechat_openid)
        .bind(&user.wechat_unionid)
        .bind(&user.nickname)
        .bind(&user.avatar)
        .bind(user.role.as_str())
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        changed(inserted)?;
        grant_starting_credits(&mut tx, self.now(), &user).await?;
        let created = get(&mut tx, &user.tenant_id, &user.id).await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn user_get(&self, tenant_id: &str, user_id: &str) -> StoreResult<Option<EndUser>> {
        let mut conn = self.pool().acquire().await?;
        find_by(&mut conn, tenant_id, "id", user_id.to_owned(), "").await
    }

    async fn user_get_by_seq(&self, tenant_id: &str, seq: i64) -> StoreResult<Option<EndUser>> {
        let mut conn = self.pool().acquire().await?;
        find_by(&mut conn, tenant_id, "seq", seq, "").await
    }

    async fn user_find_by_email(
        &self,
        tenant_id: &str,
        email: &str,
    ) -> StoreResult<Option<EndUser>> {
        let mut conn = self.pool().acquire().await?;
        find_by(&mut conn, tenant_id, "email", email.to_owned(), "").await
    }

    async fn user_find_by_openid(
        &self,
        tenant_id: &str,
        openid: &str,
    ) -> StoreResult<Option<EndUser>> {
        let mut conn = self.pool().acquire().await?;
        find_by(&mut conn, tenant_id, "wechat_openid", openid.to_owned(), "").await
    }

    async fn user_find_admin(
        &self,
        tenant_id: &str,
        username: &str,
    ) -> StoreResult<Option<EndUser>> {
        let mut conn = self.pool().acquire().await?;
        let extra = "AND u.role = 'admin'";
        find_by(&mut conn, tenant_id, "username", username.to_owned(), extra).await
    }

    async fn user_list(&self, tenant_id: &str) -> StoreResult<Vec<EndUser>> {
        let sql = format!(
            "SELECT {USER_COLUMNS} FROM end_users u
             WHERE u.tenant_id = $1 AND u.deleted_at IS NULL ORDER BY u.seq"
        );
        let rows: Vec<UserRow> = sqlx::query_as(&sql)
            .bind(tenant_id)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(EndUser::from).collect())
    }

    async fn user_update_profile(
        &self,
        tenant_id: &str,
        user_id: &str,
        update: ProfileUpdate,
    ) -> StoreResult<EndUser> {
        let mut conn = self.pool().acquire().await?;
        let sql = format!(
            "UPDATE end_users SET username = COALESCE($3, username),
                 avatar = COALESCE($4, avatar), nickname = COALESCE($5, nickname),
                 updated_at = $6 {ONE_LIVE_USER}"
        );
        let result = sqlx::query(&sql)
            .bind(tenant_id)
            .bind(user_id)
            .bind(&update.username)
            .bind(&update.avatar)
            .bind(&update.nickname)
            .bind(self.now())
            .execute(&mut *conn)
            .await?;
        changed(result)?;
        get(&mut conn, tenant_id, user_id).await
    }

    async fn user_touch_login(
        &self,
        tenant_id: &str,
        user_id: &str,
        now: Millis,
    ) -> StoreResult<EndUser> {
        self.set_column(tenant_id, user_id, "last_login_at", now, false)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn user_set_password(
        &self,
        tenant_id: &str,
        user_id: &str,
        password_hash: &str,
    ) -> StoreResult<()> {
        let hash = password_hash.to_owned();
        self.set_column(tenant_id, user_id, "password_hash", hash, true)
            .await
            .map(drop)
    }

    async fn user_set_status(
        &self,
        tenant_id: &str,
        user_id: &str,
        status: UserStatus,
    ) -> StoreResult<EndUser> {
        let revoke = status == UserStatus::Inactive;
        self.set_column(tenant_id, user_id, "status", status.as_str(), revoke)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn user_set_role(
        &self,
        tenant_id: &str,
        user_id: &str,
        role: Role,
    ) -> StoreResult<EndUser> {
        self.set_column(tenant_id, user_id, "role", role.as_str(), false)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn user_delete(&self, tenant_id: &str, user_id: &str) -> StoreResult<()> {
        self.set_column(tenant_id, user_id, "deleted_at", self.now(), true)
            .await
            .map(drop)
    }

    async fn session_create(
        &self,
        session: AuthSession,
        refresh: NewRefreshToken,
    ) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        let result = sqlx::query(
            "INSERT INTO auth_sessions (id, tenant_id, user_id, created_at)
             SELECT $1, tenant_id, id, $4 FROM end_users
             WHERE id = $3 AND tenant_id = $2 AND deleted_at IS NULL",
        )
        .bind(&session.id)
        .bind(&session.tenant_id)
        .bind(&session.user_id)
        .bind(session.created_at)
        .execute(&mut *tx)
        .await?;
        changed(result)?;
        insert_refresh(&mut tx, session.created_at, &session.id, &refresh).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session_get(&self, session_id: &str) -> StoreResult<Option<(AuthSession, EndUser)>> {
        let mut conn = self.pool().acquire().await?;
        session_get(&mut conn, session_id).await
    }

    async fn session_revoke(&self, session_id: &str, now: Millis) -> StoreResult<()> {
        sqlx::query(
            "UPDATE auth_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(session_id)
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn refresh_rotate(
        &self,
        presented_hash: &[u8; 32],
        next: NewRefreshToken,
        now: Millis,
    ) -> StoreResult<RefreshOutcome> {
        let mut tx = self.pool().begin().await?;
        let outcome = refresh_rotate(&mut tx, presented_hash, &next, now).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn tenant_hosts_set(&self, tenant_id: &str, hosts: Vec<String>) -> StoreResult<()> {
        let mut tx = self.pool().begin().await?;
        // Locks the tenant row, so two replacements of one tenant's hosts run one after the other.
        let exists: Option<String> =
            sqlx::query_scalar("SELECT id FROM tenants WHERE id = $1 FOR NO KEY UPDATE")
                .bind(tenant_id)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound);
        }
        sqlx::query("DELETE FROM tenant_hosts WHERE tenant_id = $1")
            .bind(tenant_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO tenant_hosts (host, tenant_id, created_at)
             SELECT host, $2, $3 FROM UNNEST($1::text[]) AS host",
        )
        .bind(&hosts)
        .bind(tenant_id)
        .bind(self.now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tenant_hosts(&self, tenant_id: &str) -> StoreResult<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT host FROM tenant_hosts WHERE tenant_id = $1 ORDER BY host")
                .bind(tenant_id)
                .fetch_all(self.pool())
                .await?,
        )
    }

    async fn tenant_by_host(&self, host: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT tenant_id FROM tenant_hosts WHERE host = $1")
                .bind(host)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn wechat_settings_set(&self, settings: WechatSettings) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO tenant_wechat (tenant_id, app_id, secret_sealed, base_url, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id) DO UPDATE SET app_id = EXCLUDED.app_id,
                 secret_sealed = EXCLUDED.secret_sealed, base_url = EXCLUDED.base_url,
                 updated_at = EXCLUDED.updated_at",
        )
        .bind(&settings.tenant_id)
        .bind(&settings.app_id)
        .bind(&settings.secret_sealed)
        .bind(&settings.base_url)
        .bind(self.now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn wechat_settings_get(&self, tenant_id: &str) -> StoreResult<Option<WechatSettings>> {
        let row: Option<(String, String, Vec<u8>, Option<String>)> = sqlx::query_as(
            "SELECT tenant_id, app_id, secret_sealed, base_url FROM tenant_wechat
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(
            |(tenant_id, app_id, secret_sealed, base_url)| WechatSettings {
                tenant_id,
                app_id,
                secret_sealed,
                base_url,
            },
        ))
    }
}
