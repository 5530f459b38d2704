//! End users, sessions, refresh tokens, tenant host names and WeChat settings on SQLite.

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::SqliteStore;
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

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<EndUser> {
    user_from_row_at(row, 0)
}

/// A live user by one column (`id`, `seq`, `email`, `wechat_openid`) of the tenant.
fn find_by<P: rusqlite::ToSql>(
    conn: &Connection,
    tenant_id: &str,
    column: &str,
    value: P,
    extra: &str,
) -> StoreResult<Option<EndUser>> {
    let sql = format!(
        "SELECT {USER_COLUMNS} FROM end_users u
         WHERE u.tenant_id = ?1 AND u.{column} = ?2 AND u.deleted_at IS NULL {extra}"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row(params![tenant_id, value], user_from_row)
        .optional()?)
}

fn get(conn: &Connection, tenant_id: &str, user_id: &str) -> StoreResult<EndUser> {
    find_by(conn, tenant_id, "id", user_id, "")?.ok_or(StoreError::NotFound)
}

fn create(conn: &Connection, now: Millis, user: &NewEndUser) -> StoreResult<EndUser> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO end_users (id, tenant_id, email, username, password_hash,
                 wechat_openid, wechat_unionid, nickname, avatar, role, status, created_at,
                 updated_at)
             SELECT ?1, id, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'active', ?11, ?11
             FROM tenants WHERE id = ?2",
        )?
        .execute(params![
            user.id,
            user.tenant_id,
            user.email,
            user.username,
            user.password_hash.as_ref().map(Secret::expose),
            user.wechat_openid,
            user.wechat_unionid,
            user.nickname,
            user.avatar,
            user.role.as_str(),
            now
        ])?;
    if inserted == 0 {
        return Err(StoreError::NotFound);
    }
    grant_starting_credits(conn, now, user)?;
    get(conn, &user.tenant_id, &user.id)
}

/// The new user's starting credits: a `gift` entry in the creating transaction.
fn grant_starting_credits(conn: &Connection, now: Millis, user: &NewEndUser) -> StoreResult<()> {
    if user.starting_credits <= 0 {
        return Ok(());
    }
    let entry = crate::base::ledger::starting_credits(
        &user.tenant_id,
        &user.id,
        user.starting_credits,
        now,
    );
    super::ledger::post(conn, &entry).map(|_| ())
}

fn revoke_sessions(conn: &Connection, user_id: &str, now: Millis) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE auth_sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![user_id, now])?;
    Ok(())
}

/// Runs an UPDATE of one live user (`?1` tenant, `?2` user, then `values`); `NotFound` if none.
fn update_user(
    conn: &Connection,
    tenant_id: &str,
    user_id: &str,
    set: &str,
    values: &[&dyn rusqlite::ToSql],
) -> StoreResult<()> {
    let sql = format!(
        "UPDATE end_users SET {set} WHERE tenant_id = ?1 AND id = ?2 AND deleted_at IS NULL"
    );
    let mut all: Vec<&dyn rusqlite::ToSql> = vec![&tenant_id, &user_id];
    all.extend_from_slice(values);
    let changed = conn.prepare_cached(&sql)?.execute(all.as_slice())?;
    if changed == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

fn session_get(conn: &Connection, session_id: &str) -> StoreResult<Option<(AuthSession, EndUser)>> {
    let sql = format!(
        "SELECT s.id, s.tenant_id, s.user_id, s.created_at, s.revoked_at, {USER_COLUMNS}
         FROM auth_sessions s JOIN end_users u ON u.id = s.user_id
         WHERE s.id = ?1 AND s.revoked_at IS NULL AND u.deleted_at IS NULL
           AND u.status = 'active'"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([session_id], |row| {
            let session = AuthSession {
                id: row.get(0)?,
                tenant_id: row.get(1)?,
                user_id: row.get(2)?,
                created_at: row.get(3)?,
                revoked_at: row.get(4)?,
            };
            // The user's columns follow the session's five.
            let user = user_from_row_at(row, 5)?;
            Ok((session, user))
        })
        .optional()?)
}

/// [`user_from_row`] for a row whose user columns start at `offset`.
fn user_from_row_at(row: &Row<'_>, offset: usize) -> rusqlite::Result<EndUser> {
    let role: String = row.get(offset + 10)?;
    let status: String = row.get(offset + 11)?;
    Ok(EndUser {
        seq: row.get(offset)?,
        id: row.get(offset + 1)?,
        tenant_id: row.get(offset + 2)?,
        email: row.get(offset + 3)?,
        username: row.get(offset + 4)?,
        password_hash: row.get::<_, Option<String>>(offset + 5)?.map(Secret::new),
        wechat_openid: row.get(offset + 6)?,
        wechat_unionid: row.get(offset + 7)?,
        nickname: row.get(offset + 8)?,
        avatar: row.get(offset + 9)?,
        // The CHECK constraints allow nothing else.
        role: Role::parse(&role).unwrap_or(Role::User),
        status: UserStatus::parse(&status).unwrap_or(UserStatus::Inactive),
        created_at: row.get(offset + 12)?,
        updated_at: row.get(offset + 13)?,
        last_login_at: row.get(offset + 14)?,
    })
}

fn insert_refresh(
    conn: &Connection,
    now: Millis,
    session_id: &str,
    token: &NewRefreshToken,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![
        &token.token_hash[..],
        session_id,
        now,
        token.expires_at
    ])?;
    Ok(())
}

fn refresh_rotate(
    conn: &Connection,
    presented: &[u8; 32],
    next: &NewRefreshToken,
    now: Millis,
) -> StoreResult<RefreshOutcome> {
    let found: Option<(String, Millis, Option<Millis>)> = conn
        .prepare_cached(
            "SELECT session_id, expires_at, used_at FROM refresh_tokens WHERE token_hash = ?1",
        )?
        .query_row([&presented[..]], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((session_id, expires_at, used_at)) = found else {
        return Ok(RefreshOutcome::Invalid);
    };
    if used_at.is_some() {
        conn.prepare_cached(
            "UPDATE auth_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        )?
        .execute(params![session_id, now])?;
        return Ok(RefreshOutcome::Reused { session_id });
    }
    if expires_at <= now {
        return Ok(RefreshOutcome::Invalid);
    }
    let Some((session, user)) = session_get(conn, &session_id)? else {
        return Ok(RefreshOutcome::Invalid);
    };
    conn.prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1")?
        .execute(params![&presented[..], now])?;
    insert_refresh(conn, now, &session_id, next)?;
    Ok(RefreshOutcome::Rotated {
        session,
        user: Box::new(user),
    })
}

fn hosts_set(conn: &Connection, now: Millis, tenant_id: &str, hosts: &[String]) -> StoreResult<()> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM tenants WHERE id = ?1")?
        .query_row([tenant_id], |r| r.get(0))
        .optional()?;
    if exists.is_none() {
        return Err(StoreError::NotFound);
    }
    conn.prepare_cached("DELETE FROM tenant_hosts WHERE tenant_id = ?1")?
        .execute([tenant_id])?;
    for host in hosts {
        conn.prepare_cached(
            "INSERT INTO tenant_hosts (host, tenant_id, created_at) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![host, tenant_id, now])?;
    }
    Ok(())
}

fn wechat_get(conn: &Connection, tenant_id: &str) -> StoreResult<Option<WechatSettings>> {
    Ok(conn
        .prepare_cached(
            "SELECT tenant_id, app_id, secret_sealed, base_url FROM tenant_wechat
             WHERE tenant_id = ?1",
        )?
        .query_row([tenant_id], |r| {
            Ok(WechatSettings {
                tenant_id: r.get(0)?,
                app_id: r.get(1)?,
                secret_sealed: r.get(2)?,
                base_url: r.get(3)?,
            })
        })
        .optional()?)
}

impl SqliteStore {
    /// Sets one column of a live user (and `updated_at`), ending its sessions if `revoke`;
    /// the user afterwards, unless the change hid it (a deletion).
    async fn set_column<V: rusqlite::ToSql + Send + 'static>(
        &self,
        tenant_id: &str,
        user_id: &str,
        column: &'static str,
        value: V,
        revoke: bool,
    ) -> StoreResult<Option<EndUser>> {
        let (t, u) = (tenant_id.to_owned(), user_id.to_owned());
        self.write_at(move |c, now| {
            let set = format!("{column} = ?3, updated_at = ?4");
            update_user(c, &t, &u, &set, &[&value, &now])?;
            if revoke {
                revoke_sessions(c, &u, now)?;
            }
            find_by(c, &t, "id", &u, "")
        })
        .await
    }
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn user_create(&self, user: NewEndUser) -> StoreResult<EndUser> {
        self.write_at(move |c, now| create(c, now, &user)).await
    }

    async fn user_get(&self, tenant_id: &str, user_id: &str) -> StoreResult<Option<EndUser>> {
        let (t, u) = (tenant_id.to_owned(), user_id.to_owned());
        self.read(move |c| find_by(c, &t, "id", u, "")).await
    }

    async fn user_get_by_seq(&self, tenant_id: &str, seq: i64) -> StoreResult<Option<EndUser>> {
        let t = tenant_id.to_owned();
        self.read(move |c| find_by(c, &t, "seq", seq, "")).await
    }

    async fn user_find_by_email(
        &self,
        tenant_id: &str,
        email: &str,
    ) -> StoreResult<Option<EndUser>> {
        let (t, e) = (tenant_id.to_owned(), email.to_owned());
        self.read(move |c| find_by(c, &t, "email", e, "")).await
    }

    async fn user_find_by_openid(
        &self,
        tenant_id: &str,
        openid: &str,
    ) -> StoreResult<Option<EndUser>> {
        let (t, o) = (tenant_id.to_owned(), openid.to_owned());
        self.read(move |c| find_by(c, &t, "wechat_openid", o, ""))
            .await
    }

    async fn user_find_admin(
        &self,
        tenant_id: &str,
        username: &str,
    ) -> StoreResult<Option<EndUser>> {
        let (t, n) = (tenant_id.to_owned(), username.to_owned());
        self.read(move |c| find_by(c, &t, "username", n, "AND u.role = 'admin'"))
            .await
    }

    async fn user_list(&self, tenant_id: &str) -> StoreResult<Vec<EndUser>> {
        let t = tenant_id.to_owned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM end_users u
                 WHERE u.tenant_id = ?1 AND u.deleted_at IS NULL ORDER BY u.seq"
            );
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map([&t], user_from_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn user_update_profile(
        &self,
        tenant_id: &str,
        user_id: &str,
        update: ProfileUpdate,
    ) -> StoreResult<EndUser> {
        let (t, u) = (tenant_id.to_owned(), user_id.to_owned());
        self.write_at(move |c, now| {
            update_user(
                c,
                &t,
                &u,
                "username = COALESCE(?3, username), avatar = COALESCE(?4, avatar),
                 nickname = COALESCE(?5, nickname), updated_at = ?6",
                &[&update.username, &update.avatar, &update.nickname, &now],
            )?;
            get(c, &t, &u)
        })
        .await
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
        let (t, u) = (tenant_id.to_owned(), user_id.to_owned());
        self.write_at(move |c, now| {
            update_user(c, &t, &u, "deleted_at = ?3, updated_at = ?3", &[&now])?;
            revoke_sessions(c, &u, now)
        })
        .await
    }

    async fn session_create(
        &self,
        session: AuthSession,
        refresh: NewRefreshToken,
    ) -> StoreResult<()> {
        self.write(move |c| {
            let inserted = c
                .prepare_cached(
                    "INSERT INTO auth_sessions (id, tenant_id, user_id, created_at)
                     SELECT ?1, tenant_id, id, ?4 FROM end_users
                     WHERE id = ?3 AND tenant_id = ?2 AND deleted_at IS NULL",
                )?
                .execute(params![
                    session.id,
                    session.tenant_id,
                    session.user_id,
                    session.created_at
                ])?;
            if inserted == 0 {
                return Err(StoreError::NotFound);
            }
            insert_refresh(c, session.created_at, &session.id, &refresh)
        })
        .await
    }

    async fn session_get(&self, session_id: &str) -> StoreResult<Option<(AuthSession, EndUser)>> {
        let s = session_id.to_owned();
        self.read(move |c| session_get(c, &s)).await
    }

    async fn session_revoke(&self, session_id: &str, now: Millis) -> StoreResult<()> {
        let s = session_id.to_owned();
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE auth_sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            )?
            .execute(params![s, now])?;
            Ok(())
        })
        .await
    }

    async fn refresh_rotate(
        &self,
        presented_hash: &[u8; 32],
        next: NewRefreshToken,
        now: Millis,
    ) -> StoreResult<RefreshOutcome> {
        let presented = *presented_hash;
        self.write(move |c| refresh_rotate(c, &presented, &next, now))
            .await
    }

    async fn tenant_hosts_set(&self, tenant_id: &str, hosts: Vec<String>) -> StoreResult<()> {
        let t = tenant_id.to_owned();
        self.write_at(move |c, now| hosts_set(c, now, &t, &hosts))
            .await
    }

    async fn tenant_hosts(&self, tenant_id: &str) -> StoreResult<Vec<String>> {
        let t = tenant_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT host FROM tenant_hosts WHERE tenant_id = ?1 ORDER BY host",
            )?;
            let rows = stmt.query_map([&t], |r| r.get(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn tenant_by_host(&self, host: &str) -> StoreResult<Option<String>> {
        let h = host.to_owned();
        self.read(move |c| {
            Ok(
                c.prepare_cached("SELECT tenant_id FROM tenant_hosts WHERE host = ?1")?
                    .query_row([&h], |r| r.get(0))
                    .optional()?,
            )
        })
        .await
    }

    async fn wechat_settings_set(&self, settings: WechatSettings) -> StoreResult<()> {
        self.write_at(move |c, now| {
            c.prepare_cached(
                "INSERT INTO tenant_wechat (tenant_id, app_id, secret_sealed, base_url, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (tenant_id) DO UPDATE SET app_id = excluded.app_id,
                     secret_sealed = excluded.secret_sealed, base_url = excluded.base_url,
                     updated_at = excluded.updated_at",
            )?
            .execute(params![
                settings.tenant_id,
                settings.app_id,
                settings.secret_sealed,
                settings.base_url,
                now
            ])?;
            Ok(())
        })
        .await
    }

    async fn wechat_settings_get(&self, tenant_id: &str) -> StoreResult<Option<WechatSettings>> {
        let t = tenant_id.to_owned();
        self.read(move |c| wechat_get(c, &t)).await
    }
}
