//! The `easel` command line, run as processes on a fresh data folder with a clean
//! environment: the admin commands, their refusals, and `serve` + `test-api` end to end.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use easel::accounts::keys::hash_key;
use easel::base::secret::{fingerprint, Sealer};
use easel::store::sqlite::SqliteStore;
use easel::store::Store;
use tokio::io::{AsyncBufReadExt, BufReader};

const EXE: &str = env!("CARGO_BIN_EXE_easel");

/// A data folder and a way to run `easel` on it.
struct Cli {
    dir: tempfile::TempDir,
}

/// What a finished command left behind.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "expected success: {self:?}");
        self
    }

    fn fails(&self, code: i32, message: &str) -> &Self {
        assert_eq!(self.code, Some(code), "expected exit {code}: {self:?}");
        assert!(
            self.stderr.contains(message),
            "stderr should say {message:?}: {self:?}"
        );
        self
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

impl From<Output> for Ran {
    fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `easel --data-dir <dir>` with nothing from this process's environment but PATH and HOME,
/// run inside the data folder so no stray `easel.toml` is read.
fn base_command(dir: &Path) -> Command {
    let mut cmd = Command::new(EXE);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .arg("--data-dir")
        .arg(dir);
    cmd
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut cmd = base_command(self.path());
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run easel").into()
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.path().join("easel.db")).expect("open db")
    }

    /// Every byte under the data folder (database, WAL, keys), to search for leaked secrets.
    fn all_bytes(&self) -> Vec<(String, Vec<u8>)> {
        fn walk(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if let Ok(bytes) = std::fs::read(&path) {
                    out.push((path.display().to_string(), bytes));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), &mut out);
        out
    }

    fn assert_not_stored(&self, secret: &str) {
        let files = self.all_bytes();
        assert!(
            files.iter().any(|(name, _)| name.ends_with("easel.db")),
            "no database among {:?}",
            files.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        for (name, bytes) in files {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} found in plain text in {name}"
            );
        }
    }
}

/// The `img_` key on the line that announces it.
fn printed_key(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.contains("API key (shown once"))
        .unwrap_or_else(|| panic!("no API key line in:\n{stdout}"));
    let key = line
        .split_whitespace()
        .find(|w| w.starts_with("img_"))
        .unwrap_or_else(|| panic!("no img_ key on: {line}"));
    assert_eq!(key.len(), 36, "img_ + 32 characters: {key}");
    assert!(key[4..].chars().all(|c| c.is_ascii_alphanumeric()), "{key}");
    key.to_owned()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn create_tenant_prints_the_key_once_and_show_keys_never_does() {
    let cli = Cli::new();
    let out = cli.run(&["create-tenant", "My Company", "100", "10"]);
    out.ok();
    assert!(
        out.stdout.contains("tenant created: My Company (ten_"),
        "{out:?}"
    );
    assert!(out.stdout.contains("rpm=100 concurrency=10"), "{out:?}");
    let key = printed_key(&out.stdout);

    let shown = cli.run(&["show-keys"]);
    shown.ok();
    assert!(shown.stdout.contains("Tenants (1):"), "{shown:?}");
    let line = shown
        .stdout
        .lines()
        .find(|l| l.contains("My Company"))
        .unwrap_or_else(|| panic!("tenant not listed: {shown:?}"));
    assert!(
        line.contains("rpm=100") && line.contains("concurrency=10"),
        "{line}"
    );
    assert!(
        !shown.stdout.contains(&key[4..]),
        "show-keys printed the key"
    );
    assert!(
        !shown.stdout.contains(&key[..12]),
        "show-keys printed a key prefix"
    );
    cli.assert_not_stored(&key);

    // The printed key is the one the store recognises.
    let found = runtime()
        .block_on(cli.store().api_key_find(&hash_key(&key)))
        .expect("api_key_find")
        .expect("the printed key authenticates");
    assert_eq!(found.tenant.name, "My Company");
    assert_eq!(
        (found.tenant.rpm_limit, found.tenant.concurrency_limit),
        (100, 10)
    );

    // Limits default to the configured tenant limits; every tenant gets its own key.
    let out = cli.run(&["create-tenant", "Defaults Inc"]);
    out.ok();
    assert!(out.stdout.contains("rpm=60 concurrency=5"), "{out:?}");
    assert_ne!(printed_key(&out.stdout), key);
    assert!(cli.run(&["show-keys"]).stdout.contains("Tenants (2):"));
}

#[test]
fn add_provider_key_stores_only_a_sealed_secret_and_a_fingerprint() {
    let cli = Cli::new();
    let secret = "AIzaTESTKEY123";
    let out = cli.run(&[
        "add-provider-key",
        "gemini",
        secret,
        "60",
        "2",
        "--endpoint",
        "https://relay.example.com",
        "--priority",
        "5",
        "--project",
        "p1",
    ]);
    out.ok();
    let fp = fingerprint(secret);
    assert!(out.stdout.contains("provider key added: pk_"), "{out:?}");
    assert!(out.stdout.contains(&fp), "{out:?}");
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));

    let shown = cli.run(&["show-keys"]);
    shown.ok();
    assert!(shown.stdout.contains("Provider keys (1):"), "{shown:?}");
    let line = shown
        .stdout
        .lines()
        .find(|l| l.contains(&fp))
        .unwrap_or_else(|| panic!("fingerprint not shown: {shown:?}"));
    for part in [
        "gemini",
        "rpm=60",
        "concurrency=2",
        "priority=5",
        "project=p1",
        "endpoint=https://relay.example.com",
        "enabled",
    ] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!shown.stdout.contains(secret) && !shown.stderr.contains(secret));
    cli.assert_not_stored(secret);
    assert!(!cli
        .all_bytes()
        .iter()
        .any(|(_, b)| b.windows(10).any(|w| w == b"TESTKEY123")));

    // Sealed, not lost: the master key in the data folder opens it.
    let keys = runtime()
        .block_on(cli.store().provider_key_list())
        .expect("list");
    assert_eq!(keys.len(), 1);
    let sealer = Sealer::load(None, cli.path()).expect("master key");
    assert_eq!(sealer.open(&keys[0].secret_sealed).expect("open"), secret);
    assert_eq!(keys[0].project.as_deref(), Some("p1"));

    // The same key twice is refused.
    cli.run(&["add-provider-key", "gemini", secret, "60", "2"])
        .fails(1, "already registered");
    assert!(cli
        .run(&["show-keys"])
        .stdout
        .contains("Provider keys (1):"));
}

#[test]
fn bad_arguments_fail_with_a_clear_message_and_write_nothing() {
    let cli = Cli::new();
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["add-provider-key", "dalle", "K1", "60", "2"],
            1,
            "unknown provider 'dalle': expected one of gemini, openai, midjourney",
        ),
        (
            &["add-provider-key", "stability", "K1", "60", "2"],
            1,
            "unknown provider 'stability': expected one of gemini, openai, midjourney",
        ),
        (
            &["add-provider-key", "gemini", "K1", "0", "2"],
            1,
            "RPM and CONCURRENCY must be at least 1",
        ),
        (
            &["add-provider-key", "gemini", "K1", "60", "0"],
            1,
            "RPM and CONCURRENCY must be at least 1",
        ),
        (
            &[
                "add-provider-key",
                "gemini",
                "K1",
                "60",
                "2",
                "--endpoint",
                "relay",
            ],
            1,
            "--endpoint is not a valid URL",
        ),
        (
            &[
                "add-provider-key",
                "gemini",
                "K1",
                "60",
                "2",
                "--endpoint",
                "ftp://relay.example.com",
            ],
            1,
            "--endpoint must be an http or https URL",
        ),
        (
            &["add-provider-key", "gemini", "   ", "60", "2"],
            1,
            "the key must not be empty",
        ),
        (
            &["add-provider-key", "gemini", "K1"],
            2,
            "the following required arguments were not provided",
        ),
        (
            &["add-provider-key", "gemini", "K1", "sixty", "2"],
            2,
            "invalid value 'sixty'",
        ),
        (
            &["create-tenant"],
            2,
            "the following required arguments were not provided",
        ),
        (&["create-tenant", "  "], 1, "tenant name must not be empty"),
        (
            &["create-tenant", "Zero", "0", "5"],
            1,
            "RPM and CONCURRENCY must be at least 1",
        ),
        (
            &["create-tenant", "Zero", "60", "0"],
            1,
            "RPM and CONCURRENCY must be at least 1",
        ),
        (
            &["create-tenant", "Neg", "-1"],
            2,
            "unexpected argument '-1'",
        ),
        (
            &["launch-rockets"],
            2,
            "unrecognized subcommand 'launch-rockets'",
        ),
    ];
    for (args, code, message) in cases {
        let out = cli.run(args);
        assert_eq!(out.code, Some(*code), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(message),
            "{args:?} should say {message:?}: {out:?}"
        );
    }
    let shown = cli.run(&["show-keys"]);
    shown.ok();
    assert!(shown.stdout.contains("Tenants (0):"), "{shown:?}");
    assert!(shown.stdout.contains("Provider keys (0):"), "{shown:?}");
}

#[test]
fn reset_needs_confirmation() {
    let cli = Cli::new();
    let populate = || {
        cli.run(&["create-tenant", "Doomed"]).ok();
        cli.run(&["add-provider-key", "gemini", "sk-doomed", "60", "2"])
            .ok();
    };
    populate();
    for refused in [&["reset"][..], &["reset", "no"], &["reset", "YES!"]] {
        cli.run(refused)
            .fails(1, "run `easel reset yes` (or `--yes`) to confirm");
    }
    let shown = cli.run(&["show-keys"]);
    assert!(shown.stdout.contains("Tenants (1):"), "{shown:?}");
    assert!(shown.stdout.contains("Provider keys (1):"), "{shown:?}");

    for confirmed in [&["reset", "yes"][..], &["reset", "--yes"]] {
        let out = cli.run(confirmed);
        out.ok();
        assert!(out.stdout.contains("all data deleted"), "{out:?}");
        let shown = cli.run(&["show-keys"]);
        assert!(
            shown.stdout.contains("Tenants (0):"),
            "{confirmed:?}: {shown:?}"
        );
        assert!(shown.stdout.contains("Provider keys (0):"), "{shown:?}");
        populate();
    }
}

#[test]
fn init_creates_the_test_tenant_and_gemini_keys_once() {
    let cli = Cli::new();
    let test_key = "img_initTestKey0123456789abcdefghijkl";
    let env = [
        ("TEST_API_KEY", test_key),
        ("GEMINI_API_KEY_1", "AIzaINITKEYONE111"),
        ("GEMINI_API_KEY_2", "AIzaINITKEYTWO222"),
        // A gap ends the list: key 4 is not read.
        ("GEMINI_API_KEY_4", "AIzaINITKEYFOUR44"),
    ];
    let out = cli.run_with(&["init"], &env);
    out.ok();
    assert!(out.stdout.contains("test tenant created: ten_"), "{out:?}");
    assert!(
        out.stdout.contains("init done: 2 provider key(s) added"),
        "{out:?}"
    );
    assert!(
        !out.stdout.contains("API key (shown once"),
        "TEST_API_KEY is not echoed"
    );
    let shown = cli.run(&["show-keys"]);
    assert!(shown.stdout.contains("Tenants (1):"), "{shown:?}");
    assert!(shown.stdout.contains("Provider keys (2):"), "{shown:?}");
    for secret in ["AIzaINITKEYONE111", "AIzaINITKEYTWO222"] {
        assert!(shown.stdout.contains(&fingerprint(secret)), "{shown:?}");
        assert!(!shown.stdout.contains(secret));
        cli.assert_not_stored(secret);
    }
    assert!(!shown.stdout.contains(&fingerprint("AIzaINITKEYFOUR44")));
    let rt = runtime();
    let found = rt
        .block_on(cli.store().api_key_find(&hash_key(test_key)))
        .expect("find")
        .expect("TEST_API_KEY authenticates");
    assert_eq!(found.tenant.name, "test");
    cli.assert_not_stored(test_key);

    // Again: nothing duplicated.
    let again = cli.run_with(&["init"], &env);
    again.ok();
    assert!(
        again.stdout.contains("test tenant already exists"),
        "{again:?}"
    );
    assert!(again.stdout.contains("already registered"), "{again:?}");
    assert!(
        again.stdout.contains("init done: 0 provider key(s) added"),
        "{again:?}"
    );
    let shown = cli.run(&["show-keys"]);
    assert!(shown.stdout.contains("Tenants (1):"), "{shown:?}");
    assert!(shown.stdout.contains("Provider keys (2):"), "{shown:?}");
}

#[test]
fn init_without_test_api_key_prints_a_random_key() {
    let cli = Cli::new();
    let out = cli.run(&["init"]);
    out.ok();
    let key = printed_key(&out.stdout);
    assert!(
        out.stdout.contains("init done: 0 provider key(s) added"),
        "{out:?}"
    );
    let found = runtime()
        .block_on(cli.store().api_key_find(&hash_key(&key)))
        .expect("find");
    assert_eq!(found.map(|r| r.tenant.name).as_deref(), Some("test"));
}

#[test]
fn migrate_creates_the_schema_and_is_idempotent() {
    let cli = Cli::new();
    let db = cli.path().join("easel.db");
    assert!(!db.exists());
    for _ in 0..2 {
        let out = cli.run(&["migrate"]);
        out.ok();
        let expected = format!("database is up to date: sqlite://{}", db.display());
        assert!(out.stdout.contains(&expected), "{out:?}");
    }
    let conn = rusqlite::Connection::open(&db).expect("open");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("user_version");
    // One per file in migrations/sqlite.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
        .expect("migrations folder")
        .count() as i64;
    assert_eq!(version, files);
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN
             ('tenants', 'api_keys', 'provider_keys', 'jobs', 'job_events', 'idempotency_keys',
              'nodes')",
            [],
            |r| r.get(0),
        )
        .expect("tables");
    assert_eq!(tables, 7);
}

/// `DATABASE_URL=postgres://...` runs the PostgreSQL migrations (in a schema of its own here,
/// through the URL's `options`), and the password never reaches the output.
#[test]
fn migrate_on_postgres_creates_the_schema_and_hides_the_password() {
    let Some(base) = std::env::var("EASEL_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("migrate_on_postgres skipped: EASEL_TEST_PG_URL unset");
        return;
    };
    let schema = format!(
        "easel_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let rt = runtime();
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut conn)
            .await
            .expect("create schema");
    });
    // The test server trusts local connections, so any password is accepted.
    let mut url = url::Url::parse(&base).expect("EASEL_TEST_PG_URL");
    url.set_password(Some("pw-s3cret")).expect("password");
    url.query_pairs_mut()
        .append_pair("options", &format!("-c search_path={schema}"));
    let cli = Cli::new();
    for _ in 0..2 {
        let out = cli.run_with(&["migrate"], &[("DATABASE_URL", url.as_str())]);
        out.ok();
        assert!(
            out.stdout.contains("database is up to date: postgres"),
            "{out:?}"
        );
        assert!(out.stdout.contains(":****@"), "{out:?}");
        assert!(!format!("{out:?}").contains("pw-s3cret"), "{out:?}");
    }
    assert!(!cli.path().join("easel.db").exists(), "no SQLite database");
    rt.block_on(async {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND
             table_name IN ('tenants', 'api_keys', 'provider_keys', 'jobs', 'job_events',
                            'idempotency_keys', 'nodes')",
        )
        .bind(&schema)
        .fetch_one(&mut conn)
        .await
        .expect("tables");
        assert_eq!(tables, 7);
        let applied: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {schema}._sqlx_migrations WHERE success"
        ))
        .fetch_one(&mut conn)
        .await
        .expect("migrations");
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .expect("migrations folder")
            .count() as i64;
        assert_eq!(applied, files, "every migration applied");
        sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&mut conn)
            .await
            .expect("drop schema");
    });
}

/// An unreachable PostgreSQL fails the command with the URL redacted.
#[test]
fn postgres_connection_errors_never_print_the_password() {
    let cli = Cli::new();
    let out = cli.run_with(
        &["migrate"],
        &[
            (
                "DATABASE_URL",
                "postgres://easel:pw-s3cret@127.0.0.1:1/easel",
            ),
            ("EASEL_DATABASE__ACQUIRE_TIMEOUT_SECS", "1"),
        ],
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr
            .contains("postgres://easel:****@127.0.0.1:1/easel"),
        "{out:?}"
    );
    assert!(!format!("{out:?}").contains("pw-s3cret"), "{out:?}");
}

// ---- serve ----

/// Runs `easel` with `input` on its stdin (not a terminal: the first line is the secret).
fn run_with_stdin(cli: &Cli, args: &[&str], input: &str) -> Ran {
    use std::io::Write;
    let mut child = base_command(cli.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run easel");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("wait").into()
}

#[test]
fn create_admin_users_and_tenant_settings_keep_secrets_out_of_arguments_and_storage() {
    let cli = Cli::new();
    cli.run(&["create-tenant", "shop"]).ok();
    let made = run_with_stdin(
        &cli,
        &["create-admin", "default", "boss"],
        "Sup3r-secret-pw\n",
    );
    made.ok();
    assert!(made.stdout.contains("admin created"), "{made:?}");
    run_with_stdin(
        &cli,
        &["create-admin", "default", "boss"],
        "An0ther-secret\n",
    )
    .fails(1, "already has an admin named boss");
    run_with_stdin(
        &cli,
        &["create-admin", "default", "bo"],
        "Sup3r-secret-pw\n",
    )
    .fails(1, "USERNAME must be 3 to 50 characters");
    run_with_stdin(&cli, &["create-admin", "default", "short"], "12345\n")
        .fails(1, "at least 6 characters");
    run_with_stdin(
        &cli,
        &["create-admin", "nosuchtenant", "boss2"],
        "Sup3r-secret-pw\n",
    )
    .fails(1, "no tenant nosuchtenant");

    let listed = cli.run(&["users", "list", "shop"]);
    listed.ok();
    assert!(listed.stdout.contains("username=boss"), "{listed:?}");
    assert!(
        listed.stdout.contains("admin") && listed.stdout.contains("active"),
        "{listed:?}"
    );
    assert!(!listed.stdout.contains("argon2"), "{listed:?}");
    let off = cli.run(&["users", "deactivate", "default", "boss"]);
    assert!(off.ok().stdout.contains("inactive"), "{off:?}");
    let role = cli.run(&["users", "set-role", "default", "boss", "user"]);
    assert!(role.ok().stdout.contains("role user"), "{role:?}");
    cli.run(&["users", "set-role", "default", "boss", "owner"])
        .fails(1, "ROLE must be `user` or `admin`");
    cli.run(&["users", "deactivate", "default", "nobody@example.com"])
        .fails(1, "no user nobody@example.com");

    let hosts = cli.run(&[
        "tenants",
        "hosts",
        "default",
        "Photo.Example.com",
        "b.example",
    ]);
    assert!(
        hosts.ok().stdout.contains("b.example photo.example.com"),
        "{hosts:?}"
    );
    cli.run(&["tenants", "hosts", "default", "bad host"])
        .fails(1, "is not a host name");
    let cleared = cli.run(&["tenants", "hosts", "default", "--clear"]);
    assert!(cleared.ok().stdout.trim_end().ends_with(':'), "{cleared:?}");
    let wechat = run_with_stdin(
        &cli,
        &["tenants", "wechat", "default", "wx123"],
        "wx-app-secret-value\n",
    );
    assert!(wechat.ok().stdout.contains("app wx123"), "{wechat:?}");
    run_with_stdin(
        &cli,
        &[
            "tenants",
            "wechat",
            "default",
            "wx123",
            "--base-url",
            "ftp://x",
        ],
        "s\n",
    )
    .fails(1, "is not an http(s) URL");
    cli.assert_not_stored("Sup3r-secret-pw");
    cli.assert_not_stored("wx-app-secret-value");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `easel serve` as a child; stdout lines arrive on `lines`.
struct Server {
    child: tokio::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    base: String,
}

impl Server {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Server {
        let port = free_port();
        let mut cmd = base_command(dir);
        cmd.args(["serve", "--port", &port.to_string()])
            .env("EASEL_SERVER__HOST", "127.0.0.1")
            .env("EASEL_PROVIDERS__LOCAL__DRAFT_SIZE", "64")
            .env("EASEL_WORKER__POLL_MS", "50")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("serve-{port}.log"))).expect("log"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn easel serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Server {
            child,
            lines,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Stdout up to and including the first line containing `needle`.
    async fn read_until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    let done = line.contains(needle);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("server stdout closed before {needle:?}: {seen:?}"),
                Err(_) => panic!("no {needle:?} within 15 s: {seen:?}"),
            }
        }
    }

    async fn wait_healthy(&self) {
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(15), "no /health");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status (panics if it takes more than `within`).
    async fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running");
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        tokio::time::timeout(within, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("server still running {within:?} after SIGTERM"))
            .expect("wait")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_test_api_end_to_end_then_stop_on_sigterm() {
    let cli = Cli::new();
    let key = "img_serveTestKey0123456789abcdefghij";
    let mut server = Server::start(cli.path(), &[("TEST_API_KEY", key)]);
    let banner = server.read_until("Easel listening on").await;
    assert!(
        banner
            .iter()
            .any(|l| l.contains("Created tenant 'default'") && l.contains("TEST_API_KEY")),
        "{banner:?}"
    );
    assert!(
        !banner.iter().any(|l| l.contains(key)),
        "the key is not echoed"
    );
    server.wait_healthy().await;

    let mut cmd = base_command(cli.path());
    cmd.args([
        "test-api",
        "--url",
        &server.base,
        "--api-key",
        key,
        "--timeout-secs",
        "30",
    ]);
    let out: Ran = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("test-api")
        .into();
    out.ok();
    assert!(out.stdout.contains("submitted job "), "{out:?}");
    assert!(out.stdout.contains("SUCCEEDED"), "{out:?}");
    assert!(out.stdout.contains("test-api: OK"), "{out:?}");

    // A wrong key fails test-api, with a non-zero exit.
    let mut cmd = base_command(cli.path());
    cmd.args(["test-api", "--url", &server.base, "--api-key", "img_wrong"]);
    let bad: Ran = tokio::process::Command::from(cmd)
        .output()
        .await
        .expect("test-api")
        .into();
    bad.fails(1, "submit failed: HTTP 401");

    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "exit after SIGTERM: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_an_empty_database_prints_a_working_key_once() {
    let cli = Cli::new();
    let mut server = Server::start(cli.path(), &[]);
    let banner = server.read_until("Easel listening on").await;
    let key = printed_key(&banner.join("\n"));
    server.wait_healthy().await;
    let http = reqwest::Client::new();
    let jobs = format!("{}/v1/jobs", server.base);
    let ok = http.get(&jobs).bearer_auth(&key).send().await.expect("get");
    assert_eq!(ok.status(), 200);
    let denied = http
        .get(&jobs)
        .bearer_auth("img_00000000000000000000000000000000")
        .send()
        .await
        .expect("get");
    assert_eq!(denied.status(), 401);
    let status = server.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");

    // A second start on the same database makes no new tenant and prints no key.
    let mut again = Server::start(cli.path(), &[]);
    let banner = again.read_until("Easel listening on").await;
    assert!(
        !banner
            .iter()
            .any(|l| l.contains("API key") || l.contains("Created tenant")),
        "{banner:?}"
    );
    let status = again.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let tenants = cli.store().tenant_list().await.expect("list");
    assert_eq!(tenants.len(), 1);
}

/// A worker process serves no API, but `--ops-port` gives it `/health` and `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_health_and_metrics_on_its_ops_port() {
    let cli = Cli::new();
    let (api_port, ops_port) = (free_port(), free_port());
    let mut cmd = base_command(cli.path());
    cmd.args(["serve", "--role", "worker", "--port", &api_port.to_string()])
        .args(["--ops-port", &ops_port.to_string()])
        .env("EASEL_SERVER__HOST", "127.0.0.1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn easel serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let announced = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("Health and metrics on") {
                return line;
            }
        }
        panic!("stdout closed before the ops port was announced");
    })
    .await
    .expect("ops port announced within 15 s");
    assert!(announced.contains(&ops_port.to_string()), "{announced}");
    let http = reqwest::Client::new();
    let ops = format!("http://127.0.0.1:{ops_port}");
    let health = http
        .get(format!("{ops}/health"))
        .send()
        .await
        .expect("health");
    assert_eq!(health.status(), 200);
    let metrics = http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), 200);
    assert!(metrics
        .text()
        .await
        .expect("text")
        .contains("easel_build_info"));
    let api = http
        .get(format!("{ops}/v1/jobs"))
        .send()
        .await
        .expect("api");
    assert_eq!(api.status(), 404, "the ops port serves no API");
    assert!(
        http.get(format!("http://127.0.0.1:{api_port}/health"))
            .send()
            .await
            .is_err(),
        "a worker does not listen on the API port"
    );
    child.kill().await.expect("kill");
}
