//! The ledger's commands: `easel ledger ...` (check, balances, adjustments, prepaid billing,
//! prices, packages, orders, the payment secret) and `easel mj-users ...` (the Midjourney
//! origin's `manage_users.py`). A TENANT argument is a tenant id or a tenant name (`default`
//! names the default tenant).

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::app::open_store;
use crate::base::clock::now_millis;
use crate::base::ledger::{AccountRef, CreditPackage, PayOutcome, PriceRule};
use crate::base::secret::Sealer;
use crate::config::Config;
use crate::ledger::mj;
use crate::store::{Store, Tenant};

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every balance and open hold from the entries; exit 1 on any difference.
    Check,
    /// An account's balance: `tenant`, `user:<id>` or `key:<api key id>`.
    Balance {
        tenant: String,
        account: String,
    },
    /// Add (or, negative, remove) credits with a reason: an `adjustment` entry (`--gift`: a
    /// `gift`). Never below zero.
    Adjust {
        tenant: String,
        account: String,
        #[arg(allow_negative_numbers = true)]
        amount: i64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        gift: bool,
    },
    /// Whether the job API charges the tenant's own account (`on` or `off`).
    Prepaid {
        tenant: String,
        state: String,
    },
    /// List the tenant's price rules (credits per image; no rule: 1).
    Prices {
        tenant: String,
    },
    /// Set the price of an operation, mode and provider (`*` for any).
    SetPrice {
        tenant: String,
        operation: String,
        mode: String,
        provider: String,
        credits: i64,
    },
    DeletePrice {
        tenant: String,
        operation: String,
        mode: String,
        provider: String,
    },
    /// List the credit packages (`*` for the defaults every tenant without its own sees).
    Packages {
        tenant: String,
    },
    /// Create or replace a credit package (prices in yuan, like 39.9).
    SetPackage {
        tenant: String,
        package_id: String,
        name: String,
        credits: i64,
        price: f64,
        #[arg(long)]
        original_price: Option<f64>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        popular: bool,
        #[arg(long, default_value_t = 0)]
        sort_order: i64,
    },
    DeletePackage {
        tenant: String,
        package_id: String,
    },
    /// Mark a pending recharge order paid (once) and credit it.
    ConfirmOrder {
        tenant: String,
        order_no: String,
    },
    /// Make a new payment-notification secret for the tenant (printed once).
    PaymentSecret {
        tenant: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum MjCommand {
    /// Create an app key (printed once) with TOKEN_TOTAL tokens (default 100).
    Create {
        name: String,
        token_total: Option<i64>,
        /// The tenant the key belongs to (default: the default tenant).
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Show an app key's tokens by its name.
    Info { name: String },
    /// Show an app key's tokens by the key.
    InfoKey { app_key: String },
    /// Set token_total.
    UpdateTokens { app_key: String, total: i64 },
    /// Set token_use back to zero (calls still running stay counted).
    ResetUsage { app_key: String },
}

/// A tenant by id, else by name.
async fn resolve_tenant(store: &dyn Store, arg: &str) -> anyhow::Result<Tenant> {
    if let Some(t) = store.tenant_get(arg).await? {
        return Ok(t);
    }
    let mut named: Vec<Tenant> = store
        .tenant_list()
        .await?
        .into_iter()
        .filter(|t| t.name == arg)
        .collect();
    match named.len() {
        1 => Ok(named.remove(0)),
        0 => bail!("no tenant {arg}"),
        n => bail!("{n} tenants are named {arg}; use the tenant id"),
    }
}

fn account_ref(tenant: &Tenant, account: &str) -> anyhow::Result<AccountRef> {
    crate::ledger::parse_account(&tenant.id, account).ok_or_else(|| {
        anyhow::anyhow!("ACCOUNT must be `tenant`, `user:<id>` or `key:<api key id>`")
    })
}

fn yuan_to_cents(yuan: f64) -> anyhow::Result<i64> {
    if !(0.0..=1e9).contains(&yuan) {
        bail!("a price must be between 0 and 1e9");
    }
    Ok((yuan * 100.0).round() as i64)
}

pub async fn run(config: &Config, command: LedgerCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let s = store.as_ref();
    match command {
        LedgerCommand::Check => check(s).await,
        LedgerCommand::Balance { tenant, account } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            let account = account_ref(&tenant, &account)?;
            let totals = s.ledger_totals(&account.id).await?;
            println!("account: {}", account.id);
            println!("balance: {}", totals.balance);
            println!("held: {}", totals.held);
            println!("settled: {}", totals.settled);
            Ok(())
        }
        LedgerCommand::Adjust {
            tenant,
            account,
            amount,
            reason,
            gift,
        } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            let account = account_ref(&tenant, &account)?;
            adjust(s, account, amount, reason, gift).await
        }
        LedgerCommand::Prepaid { tenant, state } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            let prepaid = match state.as_str() {
                "on" => true,
                "off" => false,
                _ => bail!("STATE must be on or off"),
            };
            s.billing_set_prepaid(&tenant.id, prepaid).await?;
            println!("tenant {}: prepaid billing {state}", tenant.id);
            Ok(())
        }
        LedgerCommand::Prices { tenant } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            let rules = s.price_rules(&tenant.id).await?;
            if rules.is_empty() {
                println!("no rules: every image costs 1 credit");
            }
            for r in rules {
                println!(
                    "{} {} {} = {} per image",
                    r.operation, r.mode, r.provider, r.credits
                );
            }
            Ok(())
        }
        LedgerCommand::SetPrice {
            tenant,
            operation,
            mode,
            provider,
            credits,
        } => {
            if credits < 0 {
                bail!("CREDITS must not be negative");
            }
            let tenant = resolve_tenant(s, &tenant).await?;
            let rule = PriceRule {
                operation,
                mode,
                provider,
                credits,
            };
            s.price_set(&tenant.id, rule).await?;
            println!("price set (running servers apply it within 5 s)");
            Ok(())
        }
        LedgerCommand::DeletePrice {
            tenant,
            operation,
            mode,
            provider,
        } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            if !s
                .price_delete(&tenant.id, &operation, &mode, &provider)
                .await?
            {
                bail!("no such price rule");
            }
            println!("price rule deleted");
            Ok(())
        }
        LedgerCommand::Packages { tenant } => {
            let tenant_id = package_tenant(s, &tenant).await?;
            for p in s.packages(&tenant_id).await? {
                println!(
                    "{} {} credits={} price={:.2} popular={}",
                    p.package_id,
                    p.name,
                    p.credits,
                    p.price_cents as f64 / 100.0,
                    p.popular
                );
            }
            Ok(())
        }
        LedgerCommand::SetPackage {
            tenant,
            package_id,
            name,
            credits,
            price,
            original_price,
            description,
            popular,
            sort_order,
        } => {
            if credits <= 0 {
                bail!("CREDITS must be at least 1");
            }
            let tenant_id = package_tenant(s, &tenant).await?;
            let price_cents = yuan_to_cents(price)?;
            let original_cents = yuan_to_cents(original_price.unwrap_or(price))?;
            let discount = if original_cents > 0 {
                price_cents as f64 / original_cents as f64
            } else {
                1.0
            };
            let package = CreditPackage {
                package_id,
                name,
                credits,
                price_cents,
                original_cents,
                discount: (discount * 100.0).round() / 100.0,
                description,
                popular,
                sort_order,
            };
            s.package_set(&tenant_id, package).await?;
            println!("package set");
            Ok(())
        }
        LedgerCommand::DeletePackage { tenant, package_id } => {
            let tenant_id = package_tenant(s, &tenant).await?;
            if !s.package_delete(&tenant_id, &package_id).await? {
                bail!("no package {package_id}");
            }
            println!("package deleted");
            Ok(())
        }
        LedgerCommand::ConfirmOrder { tenant, order_no } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            match s
                .order_pay(&tenant.id, &order_no, "admin:cli", now_millis())
                .await?
            {
                PayOutcome::Paid(order) => {
                    println!("order {order_no} paid: {} credits", order.credits);
                    Ok(())
                }
                PayOutcome::AlreadyPaid => bail!("order {order_no} was already paid"),
                PayOutcome::NotFound => bail!("no order {order_no}"),
            }
        }
        LedgerCommand::PaymentSecret { tenant } => {
            let tenant = resolve_tenant(s, &tenant).await?;
            std::fs::create_dir_all(&config.data_dir)?;
            let sealer = Sealer::from_env(&config.data_dir)?;
            let bytes: [u8; 32] = rand::random();
            let secret = hex::encode(bytes);
            s.billing_set_payment_secret(&tenant.id, sealer.seal(&secret))
                .await?;
            println!("payment secret (shown once, store it now): {secret}");
            Ok(())
        }
    }
}

/// Packages take `*` (the defaults) besides a tenant.
async fn package_tenant(store: &dyn Store, arg: &str) -> anyhow::Result<String> {
    if arg == "*" {
        return Ok(arg.to_owned());
    }
    Ok(resolve_tenant(store, arg).await?.id)
}

async fn check(store: &dyn Store) -> anyhow::Result<()> {
    let differences = crate::ledger::check(store).await?;
    for d in &differences {
        println!("{d}");
    }
    if !differences.is_empty() {
        bail!("the ledger has {} difference(s)", differences.len());
    }
    println!("ledger check: 0 differences");
    Ok(())
}

async fn adjust(
    store: &dyn Store,
    account: AccountRef,
    amount: i64,
    reason: String,
    gift: bool,
) -> anyhow::Result<()> {
    let adjustment = crate::ledger::Adjustment {
        account,
        amount,
        gift,
        reason,
        actor: "cli".into(),
        idem_key: None,
    };
    let entry = crate::ledger::adjust(store, adjustment).await?;
    let balance = store.ledger_totals(&entry.account_id).await?.balance;
    println!("{} {}: balance {balance}", entry.kind, entry.amount);
    Ok(())
}

fn print_info(info: &mj::TokenInfo) {
    println!("user_name: {}", info.user_name);
    println!("token_total: {}", info.token_total);
    println!("token_use: {}", info.token_use);
}

pub async fn run_mj(config: &Config, command: MjCommand) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let s = store.as_ref();
    let info = match command {
        MjCommand::Create {
            name,
            token_total,
            tenant,
        } => {
            let tenant = resolve_tenant(s, &tenant)
                .await
                .context("the app key's tenant (create one, or pass --tenant)")?;
            let total = token_total.unwrap_or(mj::DEFAULT_TOKEN_TOTAL);
            let (key, row) = mj::create(s, &tenant.id, &name, total).await?;
            println!("app_key: {key}");
            mj::info(s, &row).await?
        }
        MjCommand::Info { name } => mj::info(s, &mj::by_name(s, &name).await?).await?,
        MjCommand::InfoKey { app_key } => mj::info(s, &mj::by_key(s, &app_key).await?).await?,
        MjCommand::UpdateTokens { app_key, total } => {
            mj::update_tokens(s, &mj::by_key(s, &app_key).await?, total).await?
        }
        MjCommand::ResetUsage { app_key } => {
            mj::reset_usage(s, &mj::by_key(s, &app_key).await?).await?
        }
    };
    print_info(&info);
    Ok(())
}
