//! Extractors of the consumer routes: the client's address, the tenant a request is for, the
//! signed-in end user ([`SignedIn`], [`AdminUser`]) and a lenient JSON body. Rejections are
//! already in the consumer contracts' bodies.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::reply::{auth_failure, common_failure, union_error};
use crate::accounts::users::{AccountError, AuthFailure, Authed};
use crate::app::App;
use crate::base::user::Role;

/// The client's address: the TCP peer, or the nearest `X-Forwarded-For` hop that is not a
/// trusted proxy when the peer is one (`server.trusted_proxies`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddr(pub String);

impl FromRequestParts<App> for ClientAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(client_address(parts, app, peer)))
    }
}

fn client_address(parts: &Parts, app: &App, peer: Option<IpAddr>) -> String {
    let Some(peer) = peer else {
        return "unknown".into();
    };
    // Validated at start; an unparsable list trusts nobody.
    let proxies = app.config.server.proxies().unwrap_or_default();
    let trusted = |ip: &IpAddr| proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return peer.to_string();
    }
    let hops: Vec<IpAddr> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    // From the nearest hop back: the first one not ours is the client.
    hops.iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or(hops.first())
        .unwrap_or(&peer)
        .to_string()
}

/// The tenant of a request before sign-in: the one claiming its `Host`, else the default.
pub struct HostTenant(pub String);

impl FromRequestParts<App> for HostTenant {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let host = parts.headers.get(HOST).and_then(|v| v.to_str().ok());
        match app.tenancy.for_host(host).await {
            Ok(tenant) => Ok(HostTenant(tenant)),
            Err(crate::store::StoreError::NotFound) => Err(union_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "No tenant serves this host",
                "服务未配置",
            )),
            Err(e) => Err(failure(AccountError::Store(e))),
        }
    }
}

/// The token of `Authorization: <scheme> <token>`. The editor origin ignored the scheme
/// word; the photo origin wanted `Bearer`; any word is accepted.
pub fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let header = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (_, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The signed-in end user behind the request's access token (whichever way it signed in).
pub struct SignedIn(pub Authed);

impl FromRequestParts<App> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        authenticate(app, &parts.headers).await.map(SignedIn)
    }
}

fn failure(error: AccountError) -> Response {
    common_failure(&error).unwrap_or_else(super::reply::internal)
}

/// The user behind the headers' access token. A token is refused when the request's host is
/// claimed by another tenant than the token's.
pub async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Authed, Response> {
    let token = presented_token(headers).ok_or_else(|| auth_failure(AuthFailure::Missing))?;
    let authed = app.accounts.authenticate(token).await.map_err(failure)?;
    if let Some(host) = headers.get(HOST).and_then(|v| v.to_str().ok()) {
        let claimed = app
            .tenancy
            .claimed(host)
            .await
            .map_err(|e| failure(AccountError::Store(e)))?;
        if claimed.is_some_and(|tenant| tenant != authed.user.tenant_id) {
            return Err(auth_failure(AuthFailure::Invalid));
        }
    }
    Ok(authed)
}

/// A signed-in end user with role `admin`: 401 `请先登录` without a valid token, 403
/// `需要管理员权限` for another role (the photo origin's admin middleware).
pub struct AdminUser(pub Authed);

impl FromRequestParts<App> for AdminUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Response> {
        let SignedIn(authed) = SignedIn::from_request_parts(parts, app)
            .await
            .map_err(|_| {
                union_error(
                    StatusCode::UNAUTHORIZED,
                    "Access token required",
                    "请先登录",
                )
            })?;
        if authed.user.role != Role::Admin {
            return Err(union_error(
                StatusCode::FORBIDDEN,
                "Access denied",
                "需要管理员权限",
            ));
        }
        Ok(AdminUser(authed))
    }
}

/// A request body read as a JSON object; an empty body is `{}` (as express.json gave the
/// origins). `Err` carries what was wrong, for the route to answer in its contract's form.
pub struct JsonBody(pub Result<Map<String, Value>, String>);

impl FromRequest<App> for JsonBody {
    type Rejection = Infallible;

    async fn from_request(req: Request, app: &App) -> Result<Self, Infallible> {
        let limit = app.config.server.max_body_bytes;
        let Ok(body) = Bytes::from_request(req, app).await else {
            return Ok(JsonBody(Err(format!(
                "request body is larger than {limit} bytes"
            ))));
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(JsonBody(Ok(Map::new())));
        }
        Ok(JsonBody(match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err("request body must be a JSON object".into()),
            Err(_) => Err("request body is not valid JSON".into()),
        }))
    }
}

impl crate::api::credits::CreditsCaller for SignedIn {
    fn tenant_id(&self) -> &str {
        &self.0.user.tenant_id
    }

    fn user_id(&self) -> &str {
        &self.0.user.id
    }
}

impl crate::api::credits::CreditsTenant for HostTenant {
    fn tenant_id(&self) -> &str {
        &self.0
    }
}
