//! Payment notifications: how a recharge order becomes paid. The origin's callback took any
//! `{order_no}` unsigned; here a notification must carry a signature of its raw body made
//! with the tenant's payment secret, and an order is paid exactly once (the store's
//! `order_pay` is one transaction guarded on `status = 'pending'`).
//!
//! [`PaymentVerifier`] is the seam for a real provider (WeChat Pay, Alipay): it turns a raw
//! notification into the order it pays, or refuses it. [`HmacVerifier`] is the built-in one.

use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use sha2::Sha256;

use crate::base::clock::{now_millis, Millis};
use crate::base::ledger::{AccountRef, Order, OrderStatus, PayOutcome};
use crate::base::secret::Sealer;
use crate::store::{Store, StoreError};

/// The header the built-in verifier reads: `sha256=<hex of HMAC-SHA256(secret, raw body)>`.
pub const SIGNATURE_HEADER: &str = "x-easel-signature";

/// A verified notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentNotice {
    pub order_no: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentRefusal {
    #[error("the notification is not signed")]
    Unsigned,
    #[error("the notification's signature does not match")]
    BadSignature,
    #[error("the notification body is not valid: {0}")]
    Malformed(String),
}

/// Checks a payment notification from its raw body and signature header.
pub trait PaymentVerifier: Send + Sync {
    fn verify(
        &self,
        secret: &[u8],
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<PaymentNotice, PaymentRefusal>;
}

/// HMAC-SHA256 of the raw body with the tenant's secret, hex, in [`SIGNATURE_HEADER`].
#[derive(Debug, Default, Clone, Copy)]
pub struct HmacVerifier;

#[derive(Deserialize)]
struct NoticeBody {
    order_no: String,
}

/// The signature header value for `body` (what a payment relay sends; tests use it too).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, body).finalize().into_bytes())
    )
}

fn mac(secret: &[u8], body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    mac
}

impl PaymentVerifier for HmacVerifier {
    fn verify(
        &self,
        secret: &[u8],
        body: &[u8],
        signature: Option<&str>,
    ) -> Result<PaymentNotice, PaymentRefusal> {
        let signature = signature
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(PaymentRefusal::Unsigned)?;
        let hex_part = signature.strip_prefix("sha256=").unwrap_or(signature);
        let given = hex::decode(hex_part).map_err(|_| PaymentRefusal::BadSignature)?;
        mac(secret, body)
            .verify_slice(&given)
            .map_err(|_| PaymentRefusal::BadSignature)?;
        let notice: NoticeBody =
            serde_json::from_slice(body).map_err(|e| PaymentRefusal::Malformed(e.to_string()))?;
        let order_no = notice.order_no.trim();
        if order_no.is_empty() || order_no.len() > 64 {
            return Err(PaymentRefusal::Malformed("order_no".into()));
        }
        Ok(PaymentNotice {
            order_no: order_no.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_right_signature_passes() {
        let body = br#"{"order_no":"ORDER1"}"#;
        let v = HmacVerifier;
        let good = sign(b"s3cret", body);
        assert_eq!(
            v.verify(b"s3cret", body, Some(&good)),
            Ok(PaymentNotice {
                order_no: "ORDER1".into()
            })
        );
        assert_eq!(
            v.verify(b"s3cret", body, None),
            Err(PaymentRefusal::Unsigned)
        );
        assert_eq!(
            v.verify(b"other", body, Some(&good)),
            Err(PaymentRefusal::BadSignature)
        );
        let tampered = br#"{"order_no":"ORDER2"}"#;
        assert_eq!(
            v.verify(b"s3cret", tampered, Some(&good)),
            Err(PaymentRefusal::BadSignature)
        );
        assert_eq!(
            v.verify(b"s3cret", body, Some("sha256=zz")),
            Err(PaymentRefusal::BadSignature)
        );
    }
}

/// Payment methods a recharge may name (the origin's two).
pub const PAYMENT_METHODS: &[&str] = &["wechat", "alipay"];

/// Why a recharge order was not created.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no such package")]
    UnknownPackage,
    #[error("unknown payment method")]
    UnknownMethod,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `ORDER` + milliseconds + six random capitals and digits, as the origin makes them.
fn new_order_no(at: Millis) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    let tail: String = (0..6)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect();
    format!("ORDER{at}{tail}")
}

/// A pending order for one of the tenant's packages, paid into `account`.
pub async fn create_order(
    store: &dyn Store,
    account: &AccountRef,
    package_id: &str,
    payment_method: &str,
) -> Result<Order, OrderError> {
    if !PAYMENT_METHODS.contains(&payment_method) {
        return Err(OrderError::UnknownMethod);
    }
    let package = store
        .packages(&account.tenant_id)
        .await?
        .into_iter()
        .find(|p| p.package_id == package_id)
        .ok_or(OrderError::UnknownPackage)?;
    let at = now_millis();
    let order = Order {
        order_no: new_order_no(at),
        tenant_id: account.tenant_id.clone(),
        account_id: account.id.clone(),
        package_id: package.package_id,
        credits: package.credits,
        amount_cents: package.price_cents,
        payment_method: payment_method.to_owned(),
        status: OrderStatus::Pending,
        paid_via: None,
        created_at: at,
        paid_at: None,
    };
    store.order_create(account, order.clone()).await?;
    Ok(order)
}

/// Why a payment notification changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Refused(#[from] PaymentRefusal),
    /// No such order, or it was paid already (a replay).
    #[error("the order does not exist or was already paid")]
    NotPayable,
    /// The order's tenant has no payment secret: nothing can be verified.
    #[error("payments are not configured for this tenant")]
    NotConfigured,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Verifies a notification with the secret of the tenant whose order it names, then pays
/// the order (exactly once: a replay is `NotPayable`).
pub async fn handle_notification(
    store: &dyn Store,
    sealer: &Sealer,
    verifier: &dyn PaymentVerifier,
    body: &[u8],
    signature: Option<&str>,
) -> Result<Order, NotifyError> {
    // The body is not trusted yet: only to find whose secret must have signed it.
    let claimed: NoticeBody =
        serde_json::from_slice(body).map_err(|e| PaymentRefusal::Malformed(e.to_string()))?;
    let order = store
        .order_find(claimed.order_no.trim())
        .await?
        .ok_or(NotifyError::NotPayable)?;
    let sealed = store
        .billing_get(&order.tenant_id)
        .await?
        .payment_secret
        .ok_or(NotifyError::NotConfigured)?;
    let secret = sealer
        .open(&sealed)
        .map_err(|_| NotifyError::NotConfigured)?;
    let notice = verifier.verify(secret.as_bytes(), body, signature)?;
    match store
        .order_pay(
            &order.tenant_id,
            &notice.order_no,
            "payment-callback",
            now_millis(),
        )
        .await?
    {
        PayOutcome::Paid(order) => Ok(order),
        PayOutcome::AlreadyPaid | PayOutcome::NotFound => Err(NotifyError::NotPayable),
    }
}
