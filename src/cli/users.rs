//! End-user commands: `create-admin`, `users list|deactivate|activate|set-role`, and what a
//! tenant configures for its consumer apps: `tenants hosts` and `tenants wechat`.
//!
//! Passwords and app secrets are never arguments (they would sit in shell history and the
//! process list): they come from a prompt, or the first line of stdin when it is not a
//! terminal.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::accounts::tenancy::{parse_hosts, TenantResolver};
use crate::accounts::users::{normalize_email, Accounts};
use crate::accounts::wechat::check_base_url;
use crate::app::{open_accounts, open_store};
use crate::base::secret::Sealer;
use crate::base::user::{EndUser, Role, UserStatus, WechatSettings};
use crate::config::Config;
use crate::limits::{Limiter, MemoryLimiter};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List a tenant's end users (never a password or token).
    List { tenant: String },
    /// Stop a user signing in; its tokens stop working (other processes: within seconds).
    Deactivate { tenant: String, user: String },
    /// Let a deactivated user sign in again.
    Activate { tenant: String, user: String },
    /// Make a user `user` or `admin`.
    SetRole {
        tenant: String,
        user: String,
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Show the host names a tenant claims, or replace them with HOSTS (`--clear`: none).
    /// Consumer requests to a claimed host belong to that tenant before sign-in.
    Hosts {
        tenant: String,
        hosts: Vec<String>,
        #[arg(long)]
        clear: bool,
    },
    /// Set a tenant's WeChat mini-program (the app secret is read from a prompt or stdin and
    /// stored sealed).
    Wechat {
        tenant: String,
        app_id: String,
        /// code2Session base URL (default: wechat.base_url).
        #[arg(long)]
        base_url: Option<String>,
    },
}

/// The store and the accounts service, as a server builds them (limits in memory).
async fn open(config: &Config) -> anyhow::Result<(Arc<dyn Store>, Accounts, Sealer)> {
    std::fs::create_dir_all(&config.data_dir)?;
    let store = open_store(config).await?;
    let sealer = Sealer::from_env(&config.data_dir)?;
    let limiter: Arc<dyn Limiter> = Arc::new(MemoryLimiter::new());
    let accounts = open_accounts(config, &store, &sealer, &limiter)?;
    Ok((store, accounts, sealer))
}

/// A tenant by id or name; `default` is the default tenant.
async fn tenant_id(
    config: &Config,
    store: &Arc<dyn Store>,
    wanted: &str,
) -> anyhow::Result<String> {
    if wanted == "default" {
        let resolver = TenantResolver::new(store.clone(), config.users.default_tenant.clone());
        return resolver
            .default_tenant()
            .await
            .map_err(|_| anyhow::anyhow!("there is no tenant yet"));
    }
    let tenants = store.tenant_list().await?;
    let found: Vec<_> = tenants
        .iter()
        .filter(|t| t.id == wanted || t.name == wanted)
        .collect();
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!("no tenant {wanted}"),
        _ => bail!("several tenants are named {wanted}; give its id"),
    }
}

/// A user of the tenant by id, numeric user_id, email, or admin username.
async fn find_user(store: &dyn Store, tenant: &str, wanted: &str) -> anyhow::Result<EndUser> {
    let found = match wanted.parse::<i64>() {
        Ok(seq) => store.user_get_by_seq(tenant, seq).await?,
        Err(_) if wanted.contains('@') => {
            store
                .user_find_by_email(tenant, &normalize_email(wanted))
                .await?
        }
        Err(_) => match store.user_get(tenant, wanted).await? {
            Some(user) => Some(user),
            None => store.user_find_admin(tenant, wanted).await?,
        },
    };
    found.ok_or_else(|| anyhow::anyhow!("no user {wanted} in tenant {tenant}"))
}

/// A secret from a no-echo prompt on a terminal, else the first line of stdin.
fn read_secret(prompt: &str) -> anyhow::Result<String> {
    let value = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(prompt).context("reading from the terminal")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading stdin")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    Ok(value)
}

/// `easel create-admin TENANT USERNAME`: an end user with role `admin`, who signs in at
/// `POST /api/auth/admin/login`.
pub async fn create_admin(config: &Config, tenant: &str, username: &str) -> anyhow::Result<()> {
    let username = username.trim();
    if !(3..=50).contains(&username.chars().count()) {
        bail!("USERNAME must be 3 to 50 characters");
    }
    let (store, accounts, _) = open(config).await?;
    let tenant = tenant_id(config, &store, tenant).await?;
    let password = read_secret("Password: ")?;
    if password.chars().count() < 6 {
        bail!("the password must be at least 6 characters");
    }
    let admin = accounts
        .create_admin(&tenant, username, &password)
        .await
        .map_err(|e| match e {
            crate::accounts::users::AccountError::Store(crate::store::StoreError::Conflict(_)) => {
                anyhow::anyhow!("tenant {tenant} already has an admin named {username}")
            }
            other => anyhow::anyhow!(other),
        })?;
    println!(
        "admin created: {} (user_id {}) in tenant {tenant}",
        admin.id, admin.seq
    );
    Ok(())
}

pub async fn users(config: &Config, command: UsersCommand) -> anyhow::Result<()> {
    let (store, accounts, _) = open(config).await?;
    match command {
        UsersCommand::List { tenant } => {
            let tenant = tenant_id(config, &store, &tenant).await?;
            let users = store.user_list(&tenant).await?;
            println!("Users of {tenant} ({}):", users.len());
            for u in &users {
                println!(
                    "  {:<6} {}  {:<6} {:<8} email={} username={} openid={}",
                    u.seq,
                    u.id,
                    u.role,
                    u.status,
                    u.email.as_deref().unwrap_or("-"),
                    u.username.as_deref().unwrap_or("-"),
                    u.wechat_openid.as_deref().unwrap_or("-"),
                );
            }
        }
        UsersCommand::Deactivate { tenant, user } => {
            set_status(
                config,
                &store,
                &accounts,
                &tenant,
                &user,
                UserStatus::Inactive,
            )
            .await?;
        }
        UsersCommand::Activate { tenant, user } => {
            set_status(
                config,
                &store,
                &accounts,
                &tenant,
                &user,
                UserStatus::Active,
            )
            .await?;
        }
        UsersCommand::SetRole { tenant, user, role } => {
            let role = Role::parse(&role)
                .ok_or_else(|| anyhow::anyhow!("ROLE must be `user` or `admin`"))?;
            let tenant = tenant_id(config, &store, &tenant).await?;
            let found = find_user(store.as_ref(), &tenant, &user).await?;
            let updated = store
                .user_set_role(&tenant, &found.id, role)
                .await
                .map_err(|e| match e {
                    crate::store::StoreError::Conflict(_) => anyhow::anyhow!(
                        "another admin of {tenant} has the username of {}",
                        found.id
                    ),
                    other => anyhow::anyhow!(other),
                })?;
            println!("{} ({}): role {}", updated.id, updated.seq, updated.role);
        }
    }
    Ok(())
}

async fn set_status(
    config: &Config,
    store: &Arc<dyn Store>,
    accounts: &Accounts,
    tenant: &str,
    user: &str,
    status: UserStatus,
) -> anyhow::Result<()> {
    let tenant = tenant_id(config, store, tenant).await?;
    let found = find_user(store.as_ref(), &tenant, user).await?;
    let updated = accounts.set_status(&tenant, &found.id, status).await?;
    println!("{} ({}): {}", updated.id, updated.seq, updated.status);
    Ok(())
}

pub async fn tenants(config: &Config, command: TenantsCommand) -> anyhow::Result<()> {
    let (store, _, sealer) = open(config).await?;
    match command {
        TenantsCommand::Hosts {
            tenant,
            hosts,
            clear,
        } => {
            let tenant = tenant_id(config, &store, &tenant).await?;
            if clear || !hosts.is_empty() {
                let hosts = parse_hosts(&hosts).map_err(anyhow::Error::msg)?;
                store
                    .tenant_hosts_set(&tenant, hosts)
                    .await
                    .map_err(|e| match e {
                        crate::store::StoreError::Conflict(_) => {
                            anyhow::anyhow!("another tenant already claims one of these hosts")
                        }
                        other => anyhow::anyhow!(other),
                    })?;
            }
            let claimed = store.tenant_hosts(&tenant).await?;
            println!("hosts of {tenant}: {}", claimed.join(" "));
        }
        TenantsCommand::Wechat {
            tenant,
            app_id,
            base_url,
        } => {
            let tenant = tenant_id(config, &store, &tenant).await?;
            if let Some(url) = &base_url {
                check_base_url(url).map_err(anyhow::Error::msg)?;
            }
            let secret = read_secret("WeChat app secret: ")?;
            if secret.trim().is_empty() || app_id.trim().is_empty() {
                bail!("APP_ID and the app secret must not be empty");
            }
            store
                .wechat_settings_set(WechatSettings {
                    tenant_id: tenant.clone(),
                    app_id: app_id.trim().to_owned(),
                    secret_sealed: sealer.seal(secret.trim()),
                    base_url,
                })
                .await?;
            println!("wechat sign-in of {tenant}: app {}", app_id.trim());
        }
    }
    Ok(())
}
