//! The `easel` command line: `serve` (API, worker or both) and the origin's admin commands.
//!
//! Owns: argument parsing and what each command prints. Must not touch: SQL or HTTP
//! internals; commands go through [`crate::app`] and the `Store` trait.

mod admin;
mod ledger;
mod serve;
mod test_api;
mod users;
mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Config, FlagOverrides};
use crate::keypool::ProviderKeySpec;

#[derive(Debug, Parser)]
#[command(
    name = "easel",
    version,
    about = "Self-hosted asynchronous image-generation gateway"
)]
pub struct Cli {
    /// TOML configuration file (default: ./easel.toml if present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Data folder for the SQLite database, images and generated secrets.
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Database URL (sqlite://path).
    #[arg(long, global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// API, worker and maintenance in one process.
    All,
    /// Only the HTTP API.
    Api,
    /// Only the worker and maintenance.
    Worker,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run Easel.
    Serve {
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
        /// Port to listen on (origin: PORT).
        #[arg(long)]
        port: Option<u16>,
        /// A second port serving only /health and /metrics (server.ops_port): how a worker
        /// process is scraped.
        #[arg(long)]
        ops_port: Option<u16>,
    },
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Create test data: a tenant (TEST_API_KEY) and provider keys from GEMINI_API_KEY_1..N.
    Init,
    /// Delete all data. Needs `yes` or `--yes`.
    Reset {
        /// Type `yes` to confirm.
        confirm: Option<String>,
        #[arg(long)]
        yes: bool,
    },
    /// List tenants and provider keys (never the keys themselves).
    ShowKeys,
    /// Create a tenant and print its API key once.
    CreateTenant {
        name: String,
        /// Requests per minute.
        rpm: Option<u32>,
        /// Jobs running at once.
        concurrency: Option<u32>,
        /// Submits it may send at once (default: limits.tenant_burst).
        #[arg(long)]
        burst: Option<u32>,
        /// Send signed webhooks to this URL (prints the signing secret once).
        #[arg(long)]
        webhook_url: Option<String>,
        /// With --webhook-url: `terminal` (jobs that end) or `all` (every status change).
        #[arg(long, default_value = "terminal")]
        webhook_events: String,
    },
    /// Set a tenant's webhook URL (prints the signing secret once, when it is created).
    SetWebhook {
        tenant_id: String,
        url: String,
        /// `terminal` (jobs that end) or `all` (every status change).
        #[arg(long, default_value = "terminal")]
        events: String,
    },
    /// Make a new webhook signing secret (printed once); the old one signs beside it for a while.
    RotateWebhookSecret {
        tenant_id: String,
        /// How long the previous secret keeps signing (default: webhooks.rotation_overlap_secs).
        #[arg(long)]
        overlap_secs: Option<u64>,
    },
    /// Change a tenant's limits at run time (running servers see it within seconds).
    SetTenantLimits {
        tenant_id: String,
        rpm: u32,
        concurrency: u32,
        /// Submits it may send at once (kept as it is when not given).
        #[arg(long, conflicts_with = "default_burst")]
        burst: Option<u32>,
        /// Go back to the configured default burst (limits.tenant_burst).
        #[arg(long)]
        default_burst: bool,
    },
    /// Add an upstream provider key (stored encrypted).
    AddProviderKey(#[command(flatten)] ProviderKeySpec),
    /// Re-test an upstream key with a free upstream call; enable it if it works.
    TestProviderKey { key_id: String },
    /// Make an end user with role `admin` (signs in at POST /api/auth/admin/login). The
    /// password comes from a prompt, or the first line of stdin; never an argument.
    CreateAdmin {
        /// Tenant id or name; `default` is the default tenant.
        tenant: String,
        username: String,
    },
    /// A tenant's end users.
    #[command(subcommand)]
    Users(users::UsersCommand),
    /// What a tenant configures for its consumer apps (host names, WeChat).
    #[command(subcommand)]
    Tenants(users::TenantsCommand),
    /// The credit ledger: check, balances, adjustments, prepaid billing, prices, packages.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// Midjourney app keys and their token quotas (the origin's manage_users.py).
    #[command(subcommand, name = "mj-users")]
    MjUsers(ledger::MjCommand),
    /// Submit a job to a running server and follow it to the end.
    TestApi {
        /// Server URL (default: http://127.0.0.1:<port>).
        #[arg(long)]
        url: Option<String>,
        /// Tenant API key (default: TEST_API_KEY).
        #[arg(long, env = "TEST_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
        #[arg(long, default_value = "A lighthouse at dusk, watercolor")]
        prompt: String,
        #[arg(long, default_value = "draft")]
        mode: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

/// The most threads `spawn_blocking` may run at once.
const BLOCKING_THREADS: usize = 32;

/// Parses the command line, loads configuration and runs the command.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let (port, ops_port) = match &cli.command {
        Command::Serve { port, ops_port, .. } => (*port, *ops_port),
        _ => (None, None),
    };
    let flags = FlagOverrides {
        data_dir: cli.data_dir.clone(),
        port,
        ops_port,
        database_url: cli.database_url.clone(),
    };
    let config = match Config::load(cli.config.as_deref(), &flags) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        // Blocking work here (SQLite reads, file syncs, image codecs) is bounded by the cores
        // and the disk; tokio's 512 threads would only add stacks and allocator arenas.
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { role, .. } => serve::serve(config, role).await,
        Command::Migrate => admin::migrate(&config).await,
        Command::Init => admin::init(config).await,
        Command::Reset { confirm, yes } => {
            admin::reset(&config, yes || confirm.as_deref() == Some("yes")).await
        }
        Command::ShowKeys => admin::show_keys(&config).await,
        Command::CreateTenant {
            name,
            rpm,
            concurrency,
            burst,
            webhook_url,
            webhook_events,
        } => {
            let webhook = match webhook_url {
                Some(url) => Some((url, webhooks::parse_events(&webhook_events)?)),
                None => None,
            };
            let limits = admin::LimitArgs {
                rpm,
                concurrency,
                burst: burst.map(admin::BurstArg::Set),
            };
            admin::create_tenant(&config, &name, limits, webhook).await
        }
        Command::SetWebhook {
            tenant_id,
            url,
            events,
        } => webhooks::set_webhook(&config, &tenant_id, &url, &events).await,
        Command::RotateWebhookSecret {
            tenant_id,
            overlap_secs,
        } => webhooks::rotate(&config, &tenant_id, overlap_secs).await,
        Command::SetTenantLimits {
            tenant_id,
            rpm,
            concurrency,
            burst,
            default_burst,
        } => {
            let burst = match (burst, default_burst) {
                (Some(n), _) => Some(admin::BurstArg::Set(n)),
                (None, true) => Some(admin::BurstArg::Default),
                (None, false) => None,
            };
            let limits = admin::LimitArgs {
                rpm: Some(rpm),
                concurrency: Some(concurrency),
                burst,
            };
            admin::set_tenant_limits(&config, &tenant_id, limits).await
        }
        Command::AddProviderKey(spec) => admin::add_provider_key(config, spec).await,
        Command::TestProviderKey { key_id } => admin::test_provider_key(&config, &key_id).await,
        Command::CreateAdmin { tenant, username } => {
            users::create_admin(&config, &tenant, &username).await
        }
        Command::Users(command) => users::users(&config, command).await,
        Command::Tenants(command) => users::tenants(&config, command).await,
        Command::Ledger(command) => ledger::run(&config, command).await,
        Command::MjUsers(command) => ledger::run_mj(&config, command).await,
        Command::TestApi {
            url,
            api_key,
            prompt,
            mode,
            timeout_secs,
        } => {
            let url = url.unwrap_or_else(|| format!("http://127.0.0.1:{}", config.server.port));
            let api_key = api_key
                .ok_or_else(|| anyhow::anyhow!("no API key: pass --api-key or set TEST_API_KEY"))?;
            test_api::run(&url, &api_key, &prompt, &mode, timeout_secs).await
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
