-- The credit ledger (DESIGN decision 9): one append-only table of entries for every account
-- (a tenant, an end user, a Midjourney app key), and a cached balance per account that each
-- entry's transaction updates. `easel ledger check` recomputes the cache from the entries.
CREATE TABLE ledger_accounts (
    -- 'tenant:<tenant id>', 'user:<user id>', 'key:<api key id>'.
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('tenant', 'user', 'app_key')),
    -- What the account can spend now: every entry's amount summed (holds already taken off).
    balance    BIGINT NOT NULL DEFAULT 0 CHECK (balance >= 0),
    -- Open holds: reserved by jobs that have not ended.
    held       BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE ledger_entries (
    id         BIGSERIAL PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES ledger_accounts (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL CHECK (kind IN ('hold', 'settle', 'release', 'recharge', 'gift',
                                             'adjustment', 'refund', 'reset')),
    -- The change to the account's balance and to its held total.
    amount     BIGINT NOT NULL,
    held       BIGINT NOT NULL,
    -- 'job:<id>:hold', 'job:<id>:close' (a hold resolves once: settle or release),
    -- 'order:<order no>', or a caller's own key: writing a key twice writes nothing.
    idem_key   TEXT NOT NULL UNIQUE,
    job_id     TEXT,
    reason     TEXT,
    -- Who wrote it by hand (an admin id, `cli`); NULL for Easel's own entries.
    actor      TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_job ON ledger_entries (job_id) WHERE job_id IS NOT NULL;

-- Per-tenant prices: credits per image for an operation, mode and provider ('*' matches any).
-- No row: the defaults in `ledger::pricing`.
CREATE TABLE ledger_prices (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    operation TEXT NOT NULL,
    mode      TEXT NOT NULL,
    provider  TEXT NOT NULL,
    credits   BIGINT NOT NULL CHECK (credits >= 0),
    PRIMARY KEY (tenant_id, operation, mode, provider)
);

-- A tenant's billing: whether the job API charges its own account (prepaid), and the sealed
-- secret its payment provider signs recharge notifications with.
CREATE TABLE ledger_billing (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    prepaid        BOOLEAN NOT NULL DEFAULT false,
    payment_secret BYTEA,
    updated_at     BIGINT NOT NULL
);

-- The Midjourney seed's `user_info`: a named app key (a tenant API key) with a token account.
CREATE TABLE mj_app_keys (
    account_id TEXT PRIMARY KEY REFERENCES ledger_accounts (id) ON DELETE CASCADE,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name       TEXT NOT NULL UNIQUE,
    key_hash   BYTEA NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- Credit packages a consumer app sells. tenant_id '*' holds the defaults every tenant without
-- packages of its own sees (seeded below with the photo origin's four).
CREATE TABLE credit_packages (
    tenant_id      TEXT NOT NULL,
    package_id     TEXT NOT NULL,
    name           TEXT NOT NULL,
    credits        BIGINT NOT NULL CHECK (credits > 0),
    price_cents    BIGINT NOT NULL CHECK (price_cents >= 0),
    original_cents BIGINT NOT NULL CHECK (original_cents >= 0),
    discount       DOUBLE PRECISION NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    popular        BOOLEAN NOT NULL DEFAULT false,
    sort_order     BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, package_id)
);
INSERT INTO credit_packages VALUES
    ('*', 'basic', '基础套餐', 10, 990, 1000, 0.99, '适合尝鲜用户', false, 1),
    ('*', 'standard', '标准套餐', 50, 3990, 5000, 0.8, '最受欢迎', true, 2),
    ('*', 'premium', '高级套餐', 100, 6990, 10000, 0.7, '超值优惠', false, 3),
    ('*', 'enterprise', '企业套餐', 500, 29900, 50000, 0.6, '企业批量使用', false, 4);

-- Recharge orders: pending until paid, exactly once (the recharge entry's key is the order
-- number).
CREATE TABLE credit_orders (
    order_no       TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    account_id     TEXT NOT NULL REFERENCES ledger_accounts (id) ON DELETE CASCADE,
    package_id     TEXT NOT NULL,
    credits        BIGINT NOT NULL CHECK (credits > 0),
    amount_cents   BIGINT NOT NULL CHECK (amount_cents >= 0),
    payment_method TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('pending', 'paid')),
    paid_via       TEXT,
    created_at     BIGINT NOT NULL,
    paid_at        BIGINT
);
CREATE INDEX credit_orders_account ON credit_orders (account_id, created_at);
