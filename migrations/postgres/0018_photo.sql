-- The photo app (src/photo): scenes (prompt templates), tasks (a batch of N jobs of one image
-- each, so each image's credit is settled or released on its own), the works tasks make and
-- the app's settings. Rows are per tenant; JSON columns hold text.

CREATE TABLE photo_scenes (
    scene_id        TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    scene_name      TEXT NOT NULL,
    category        TEXT NOT NULL,
    description     TEXT,
    prompt_template TEXT NOT NULL,
    cover_image     TEXT,
    parameters      TEXT,
    tags            TEXT,
    status          TEXT NOT NULL DEFAULT 'active',
    display_order   BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX photo_scenes_order ON photo_scenes (tenant_id, display_order, created_at);

CREATE TABLE photo_tasks (
    task_id            TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    user_seq           BIGINT NOT NULL,
    type               TEXT NOT NULL,
    status             TEXT NOT NULL,
    batch_count        BIGINT NOT NULL,
    images             TEXT NOT NULL,
    scene_id           TEXT,
    parameters         TEXT NOT NULL,
    custom_description TEXT,
    prompt             TEXT NOT NULL,
    credits            BIGINT NOT NULL,
    error              TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    completed_at       BIGINT
);
CREATE INDEX photo_tasks_user ON photo_tasks (tenant_id, user_id, created_at);
CREATE INDEX photo_tasks_tenant ON photo_tasks (tenant_id, created_at);

-- The jobs of a task, in image order.
CREATE TABLE photo_task_jobs (
    job_id  TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    idx     BIGINT NOT NULL
);
CREATE INDEX photo_task_jobs_task ON photo_task_jobs (task_id, idx);

CREATE TABLE photo_works (
    work_id            TEXT PRIMARY KEY,
    tenant_id          TEXT NOT NULL,
    user_id            TEXT NOT NULL,
    user_seq           BIGINT NOT NULL,
    task_id            TEXT NOT NULL UNIQUE,
    type               TEXT NOT NULL,
    status             TEXT NOT NULL,
    images             TEXT NOT NULL,
    original_images    TEXT NOT NULL,
    parameters         TEXT NOT NULL,
    custom_description TEXT,
    ai_description     TEXT,
    is_public          BIGINT NOT NULL DEFAULT 0,
    is_favorite        BIGINT NOT NULL DEFAULT 0,
    tags               TEXT NOT NULL DEFAULT '[]',
    error              TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    completed_at       BIGINT
);
CREATE INDEX photo_works_user ON photo_works (tenant_id, user_id, status, created_at);
CREATE INDEX photo_works_public ON photo_works (tenant_id, is_public, status, created_at);

-- Settings: tenant '*' holds the defaults every tenant reads until it sets its own.
CREATE TABLE photo_config (
    tenant_id    TEXT NOT NULL,
    config_key   TEXT NOT NULL,
    config_value TEXT NOT NULL,
    value_type   TEXT NOT NULL DEFAULT 'string',
    description  TEXT,
    updated_at   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, config_key)
);
INSERT INTO photo_config (tenant_id, config_key, config_value, value_type, description) VALUES
    ('*', 'site_name', 'AI摄影系统', 'string', '站点名称'),
    ('*', 'default_credits', '10', 'number', '新用户默认积分'),
    ('*', 'credits_per_image', '1', 'number', '每张图片消耗积分'),
    ('*', 'max_batch_count', '50', 'number', '单次任务最大生成数量'),
    ('*', 'enable_registration', 'true', 'boolean', '是否允许新用户注册');
