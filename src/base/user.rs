//! End users: the people who use a tenant's consumer apps (the editor web app, the photo
//! mini-program), their sign-in sessions and rotating refresh tokens, and what a tenant
//! configures for them (host names it claims, its WeChat mini-program).
//!
//! Owns: the row types the store reads and writes and the accounts module works with. Must
//! not touch: anything else in the crate.

use std::fmt;

use crate::base::clock::Millis;
use crate::base::secret::Secret;

/// `user` or `admin` (the photo origin's roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// `active` or `inactive` (the photo origin's status values); an inactive user cannot sign
/// in and its tokens stop working.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    Inactive,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Inactive => "inactive",
        }
    }

    pub fn parse(text: &str) -> Option<UserStatus> {
        match text {
            "active" => Some(UserStatus::Active),
            "inactive" => Some(UserStatus::Inactive),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for UserStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An end user as stored. `seq` is the photo contract's numeric `user_id`; `id` (a ULID) is
/// the editor contract's string `id`. The password hash is a [`Secret`] so no `Debug` print
/// shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndUser {
    pub seq: i64,
    pub id: String,
    pub tenant_id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub password_hash: Option<Secret>,
    pub wechat_openid: Option<String>,
    pub wechat_unionid: Option<String>,
    pub nickname: Option<String>,
    pub avatar: Option<String>,
    pub role: Role,
    pub status: UserStatus,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub last_login_at: Option<Millis>,
}

/// What a new end user is created with.
#[derive(Debug, Clone)]
pub struct NewEndUser {
    pub id: String,
    pub tenant_id: String,
    pub email: Option<String>,
    pub username: Option<String>,
    pub password_hash: Option<Secret>,
    pub wechat_openid: Option<String>,
    pub wechat_unionid: Option<String>,
    pub nickname: Option<String>,
    pub avatar: Option<String>,
    pub role: Role,
    /// Credits granted in the creating transaction (the tenant's starting credits).
    pub starting_credits: i64,
}

/// Changes to a user's profile; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProfileUpdate {
    pub username: Option<String>,
    pub avatar: Option<String>,
    pub nickname: Option<String>,
}

/// A sign-in session: one family of refresh tokens. Access tokens carry its id; revoking it
/// ends every token of the family at once.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSession {
    pub id: String,
    pub tenant_id: String,
    pub user_id: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A refresh token as stored: only its SHA-256.
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: [u8; 32],
    pub expires_at: Millis,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshOutcome {
    /// The token was current: it is now used, the new one is current; the session's user.
    Rotated {
        session: AuthSession,
        user: Box<EndUser>,
    },
    /// The token had been used before: the whole family (this session) is now revoked.
    Reused { session_id: String },
    /// Unknown, expired, or its session revoked or its user gone or inactive.
    Invalid,
}

/// A tenant's WeChat mini-program, with the app secret sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct WechatSettings {
    pub tenant_id: String,
    pub app_id: String,
    pub secret_sealed: Vec<u8>,
    /// `None`: the configured `wechat.base_url`.
    pub base_url: Option<String>,
}
