-- End users of each tenant's consumer apps (email + password, WeChat), their sign-in sessions
-- (a session is one family of refresh tokens), the host names a tenant claims, and a tenant's
-- WeChat mini-program settings. Timestamps are milliseconds since the Unix epoch.

CREATE TABLE end_users (
    -- The photo contract's numeric user_id.
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email          TEXT,
    username       TEXT,
    password_hash  TEXT,
    wechat_openid  TEXT,
    wechat_unionid TEXT,
    nickname       TEXT,
    avatar         TEXT,
    role           TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    status         TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    last_login_at  INTEGER,
    -- A deleted user stays for the records that point at it, hidden everywhere.
    deleted_at     INTEGER
);
-- The same email or openid in two tenants is two users; within a tenant, one live user each.
CREATE UNIQUE INDEX end_users_email ON end_users (tenant_id, email)
    WHERE email IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX end_users_openid ON end_users (tenant_id, wechat_openid)
    WHERE wechat_openid IS NOT NULL AND deleted_at IS NULL;
CREATE UNIQUE INDEX end_users_admin_name ON end_users (tenant_id, username)
    WHERE role = 'admin' AND deleted_at IS NULL;
CREATE INDEX end_users_tenant ON end_users (tenant_id, seq);

CREATE TABLE auth_sessions (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES end_users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX auth_sessions_user ON auth_sessions (user_id) WHERE revoked_at IS NULL;

CREATE TABLE refresh_tokens (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash BLOB PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES auth_sessions (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

CREATE TABLE tenant_hosts (
    host       TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
CREATE INDEX tenant_hosts_tenant ON tenant_hosts (tenant_id);

CREATE TABLE tenant_wechat (
    tenant_id     TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    app_id        TEXT NOT NULL,
    -- The app secret, sealed with the master key.
    secret_sealed BLOB NOT NULL,
    base_url      TEXT,
    updated_at    INTEGER NOT NULL
);
