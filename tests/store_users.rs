//! The `Store` conformance suite for end users, sessions, refresh tokens, tenant host names
//! and WeChat settings, run unchanged on SQLite and (with `EASEL_TEST_PG_URL`) PostgreSQL.

use std::sync::Arc;

use easel::base::clock::{now_millis, WallClock};
use easel::base::secret::Secret;
use easel::base::user::{
    AuthSession, NewEndUser, NewRefreshToken, ProfileUpdate, RefreshOutcome, Role, UserStatus,
    WechatSettings,
};
use easel::store::{NewApiKey, NewTenant, Store, StoreError, Tenant};

#[path = "common/stores.rs"]
mod stores;

// One backend under test: a fresh database and a clock that moves only when told.
use stores::ClockedStore as Bundle;

fn ulid() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

async fn tenant(store: &dyn Store, name: &str) -> Tenant {
    let seed = format!("img_{name}_{}", ulid());
    store
        .tenant_create(
            NewTenant {
                id: format!("ten_{}", ulid()),
                name: name.to_owned(),
                rpm_limit: 60,
                concurrency_limit: 5,
                burst: None,
            },
            NewApiKey {
                id: format!("key_{}", ulid()),
                key_hash: easel::accounts::keys::hash_key(&seed),
                prefix: seed.chars().take(8).collect(),
            },
        )
        .await
        .expect("tenant_create")
}

fn new_user(tenant_id: &str) -> NewEndUser {
    NewEndUser {
        id: format!("usr_{}", ulid()),
        tenant_id: tenant_id.to_owned(),
        email: None,
        username: None,
        password_hash: None,
        wechat_openid: None,
        wechat_unionid: None,
        nickname: None,
        avatar: None,
        role: Role::User,
        starting_credits: 10,
    }
}

fn by_email(tenant_id: &str, email: &str) -> NewEndUser {
    NewEndUser {
        email: Some(email.to_owned()),
        username: Some("alice".into()),
        password_hash: Some(Secret::new("$argon2id$fake")),
        ..new_user(tenant_id)
    }
}

fn refresh(seed: &str) -> NewRefreshToken {
    NewRefreshToken {
        token_hash: easel::accounts::tokens::refresh_hash(seed),
        expires_at: now_millis() + 60_000,
    }
}

async fn session(store: &dyn Store, tenant_id: &str, user_id: &str, token: &str) -> String {
    let id = format!("ses_{}", ulid());
    let session = AuthSession {
        id: id.clone(),
        tenant_id: tenant_id.to_owned(),
        user_id: user_id.to_owned(),
        created_at: now_millis(),
        revoked_at: None,
    };
    store
        .session_create(session, refresh(token))
        .await
        .expect("session_create");
    id
}

async fn users_are_per_tenant_and_unique_within_one(b: Bundle) {
    let s = b.store.as_ref();
    let (a, other) = (tenant(s, "A").await, tenant(s, "B").await);
    let first = s.user_create(by_email(&a.id, "x@y.io")).await.unwrap();
    assert_eq!(first.role, Role::User);
    assert_eq!(first.status, UserStatus::Active);
    assert_eq!(first.email.as_deref(), Some("x@y.io"));
    assert_eq!(
        first.password_hash.as_ref().map(Secret::expose),
        Some("$argon2id$fake")
    );
    // Same email in the same tenant: refused. In another tenant: another user.
    assert!(matches!(
        s.user_create(by_email(&a.id, "x@y.io")).await,
        Err(StoreError::Conflict(_))
    ));
    let second = s.user_create(by_email(&other.id, "x@y.io")).await.unwrap();
    assert_ne!(first.id, second.id);
    assert!(second.seq > first.seq, "numeric ids grow");
    let found = s
        .user_find_by_email(&a.id, "x@y.io")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found, first);
    assert_eq!(
        s.user_get_by_seq(&a.id, first.seq).await.unwrap(),
        Some(first.clone())
    );
    // Scoped: tenant B cannot read A's user by id or seq.
    assert_eq!(s.user_get(&other.id, &first.id).await.unwrap(), None);
    assert_eq!(s.user_get_by_seq(&other.id, first.seq).await.unwrap(), None);
    // WeChat openids: one per tenant.
    let wx = NewEndUser {
        wechat_openid: Some("o1".into()),
        ..new_user(&a.id)
    };
    let wx_user = s.user_create(wx.clone()).await.unwrap();
    assert!(matches!(
        s.user_create(NewEndUser {
            id: format!("usr_{}", ulid()),
            ..wx
        })
        .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.user_find_by_openid(&a.id, "o1")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(wx_user.id)
    );
    assert_eq!(s.user_find_by_openid(&other.id, "o1").await.unwrap(), None);
    let listed: Vec<String> = s
        .user_list(&a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.email.unwrap_or_default())
        .collect();
    assert_eq!(listed, ["x@y.io", ""]);
    // Unknown tenant.
    assert!(matches!(
        s.user_create(new_user("ten_nope")).await,
        Err(StoreError::NotFound)
    ));
}

async fn admins_are_found_by_username_and_unique(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A").await;
    let admin = NewEndUser {
        username: Some("root".into()),
        role: Role::Admin,
        ..new_user(&t.id)
    };
    let made = s.user_create(admin.clone()).await.unwrap();
    assert_eq!(made.role, Role::Admin);
    assert_eq!(
        s.user_find_admin(&t.id, "root")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(made.id.clone())
    );
    assert!(matches!(
        s.user_create(NewEndUser {
            id: format!("usr_{}", ulid()),
            ..admin
        })
        .await,
        Err(StoreError::Conflict(_))
    ));
    // A plain user named root is no admin, until promoted (then it collides).
    let plain = s
        .user_create(NewEndUser {
            username: Some("root".into()),
            ..new_user(&t.id)
        })
        .await
        .unwrap();
    assert_eq!(
        s.user_find_admin(&t.id, "root")
            .await
            .unwrap()
            .map(|u| u.id),
        Some(made.id.clone())
    );
    assert!(matches!(
        s.user_set_role(&t.id, &plain.id, Role::Admin).await,
        Err(StoreError::Conflict(_))
    ));
    let demoted = s.user_set_role(&t.id, &made.id, Role::User).await.unwrap();
    assert_eq!(demoted.role, Role::User);
    assert_eq!(s.user_find_admin(&t.id, "root").await.unwrap(), None);
}

async fn profile_login_and_status_changes(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A").await;
    let u = s.user_create(by_email(&t.id, "p@q.io")).await.unwrap();
    let update = ProfileUpdate {
        username: Some("bob".into()),
        avatar: Some("https://a/b.png".into()),
        nickname: None,
    };
    let changed = s.user_update_profile(&t.id, &u.id, update).await.unwrap();
    assert_eq!(changed.username.as_deref(), Some("bob"));
    assert_eq!(changed.avatar.as_deref(), Some("https://a/b.png"));
    // None leaves a field alone.
    let same = s
        .user_update_profile(&t.id, &u.id, ProfileUpdate::default())
        .await
        .unwrap();
    assert_eq!(same.username.as_deref(), Some("bob"));
    // Stamps come from the store's clock.
    b.clock.advance(std::time::Duration::from_secs(3600));
    let now = b.clock.now_millis();
    let touched = s.user_touch_login(&t.id, &u.id, now).await.unwrap();
    assert_eq!(touched.last_login_at, Some(now));
    assert_eq!(touched.updated_at, now);
    assert_eq!(touched.created_at, u.created_at);
    assert!(u.created_at <= now - 3_600_000);
    let off = s
        .user_set_status(&t.id, &u.id, UserStatus::Inactive)
        .await
        .unwrap();
    assert_eq!(off.status, UserStatus::Inactive);
    assert!(matches!(
        s.user_update_profile("ten_other", &u.id, ProfileUpdate::default())
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn sessions_end_on_revoke_password_status_and_delete(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A").await;
    let u = s.user_create(by_email(&t.id, "s@q.io")).await.unwrap();
    let one = session(s, &t.id, &u.id, "rt1").await;
    let two = session(s, &t.id, &u.id, "rt2").await;
    let (got, user) = s.session_get(&one).await.unwrap().expect("live session");
    assert_eq!(
        (got.user_id.as_str(), user.id.as_str()),
        (u.id.as_str(), u.id.as_str())
    );
    s.session_revoke(&one, now_millis()).await.unwrap();
    assert!(s.session_get(&one).await.unwrap().is_none());
    assert!(
        s.session_get(&two).await.unwrap().is_some(),
        "only that session ends"
    );
    // A password change ends every session.
    s.user_set_password(&t.id, &u.id, "$argon2id$new")
        .await
        .unwrap();
    assert!(s.session_get(&two).await.unwrap().is_none());
    let three = session(s, &t.id, &u.id, "rt3").await;
    s.user_set_status(&t.id, &u.id, UserStatus::Inactive)
        .await
        .unwrap();
    assert!(s.session_get(&three).await.unwrap().is_none());
    s.user_set_status(&t.id, &u.id, UserStatus::Active)
        .await
        .unwrap();
    let four = session(s, &t.id, &u.id, "rt4").await;
    s.user_delete(&t.id, &u.id).await.unwrap();
    assert!(s.session_get(&four).await.unwrap().is_none());
    assert_eq!(s.user_get(&t.id, &u.id).await.unwrap(), None);
    assert!(matches!(
        s.user_delete(&t.id, &u.id).await,
        Err(StoreError::NotFound)
    ));
    // The email is free again.
    s.user_create(by_email(&t.id, "s@q.io")).await.unwrap();
    // No session for a deleted user.
    let refused = s
        .session_create(
            AuthSession {
                id: format!("ses_{}", ulid()),
                tenant_id: t.id.clone(),
                user_id: u.id.clone(),
                created_at: now_millis(),
                revoked_at: None,
            },
            refresh("rt5"),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::NotFound)));
}

async fn refresh_rotates_and_reuse_revokes_the_family(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A").await;
    let u = s.user_create(by_email(&t.id, "r@q.io")).await.unwrap();
    let sid = session(s, &t.id, &u.id, "first").await;
    let hash = |seed: &str| easel::accounts::tokens::refresh_hash(seed);
    let now = now_millis();
    match s
        .refresh_rotate(&hash("first"), refresh("second"), now)
        .await
        .unwrap()
    {
        RefreshOutcome::Rotated { session, user } => {
            assert_eq!(session.id, sid);
            assert_eq!(user.id, u.id);
        }
        other => panic!("expected a rotation, got {other:?}"),
    }
    assert!(matches!(
        s.refresh_rotate(&hash("second"), refresh("third"), now)
            .await
            .unwrap(),
        RefreshOutcome::Rotated { .. }
    ));
    // "first" again: a reuse. The family (session) ends, "third" with it.
    assert_eq!(
        s.refresh_rotate(&hash("first"), refresh("x"), now)
            .await
            .unwrap(),
        RefreshOutcome::Reused {
            session_id: sid.clone()
        }
    );
    assert!(s.session_get(&sid).await.unwrap().is_none());
    assert_eq!(
        s.refresh_rotate(&hash("third"), refresh("y"), now)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert_eq!(
        s.refresh_rotate(&hash("never-issued"), refresh("z"), now)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    // Expired.
    let other = session(s, &t.id, &u.id, "old").await;
    assert_eq!(
        s.refresh_rotate(&hash("old"), refresh("w"), now + 120_000)
            .await
            .unwrap(),
        RefreshOutcome::Invalid
    );
    assert!(
        s.session_get(&other).await.unwrap().is_some(),
        "an expired token ends nothing"
    );
}

async fn concurrent_refreshes_rotate_once(b: Bundle) {
    let s = b.store.clone();
    let t = tenant(s.as_ref(), "A").await;
    let u = s.user_create(by_email(&t.id, "c@q.io")).await.unwrap();
    session(s.as_ref(), &t.id, &u.id, "shared").await;
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let s: Arc<dyn Store> = s.clone();
            tokio::spawn(async move {
                s.refresh_rotate(
                    &easel::accounts::tokens::refresh_hash("shared"),
                    refresh(&format!("next{n}")),
                    now_millis(),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut rotated = 0;
    for task in tasks {
        if matches!(task.await.unwrap(), RefreshOutcome::Rotated { .. }) {
            rotated += 1;
        }
    }
    assert_eq!(
        rotated, 1,
        "one presentation rotates; the others are reuses"
    );
}

async fn hosts_are_claimed_by_one_tenant(b: Bundle) {
    let s = b.store.as_ref();
    let (a, other) = (tenant(s, "A").await, tenant(s, "B").await);
    s.tenant_hosts_set(&a.id, vec!["a.example".into(), "b.example".into()])
        .await
        .unwrap();
    assert_eq!(
        s.tenant_hosts(&a.id).await.unwrap(),
        ["a.example", "b.example"]
    );
    assert_eq!(
        s.tenant_by_host("a.example").await.unwrap(),
        Some(a.id.clone())
    );
    assert!(matches!(
        s.tenant_hosts_set(&other.id, vec!["b.example".into()])
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.tenant_hosts(&other.id).await.unwrap(),
        Vec::<String>::new()
    );
    s.tenant_hosts_set(&a.id, vec!["c.example".into()])
        .await
        .unwrap();
    assert_eq!(s.tenant_by_host("a.example").await.unwrap(), None);
    s.tenant_hosts_set(&other.id, vec!["b.example".into()])
        .await
        .unwrap();
    assert_eq!(
        s.tenant_by_host("b.example").await.unwrap(),
        Some(other.id.clone())
    );
    assert!(matches!(
        s.tenant_hosts_set("ten_nope", vec![]).await,
        Err(StoreError::NotFound)
    ));
}

async fn wechat_settings_round_trip(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A").await;
    assert_eq!(s.wechat_settings_get(&t.id).await.unwrap(), None);
    let mut settings = WechatSettings {
        tenant_id: t.id.clone(),
        app_id: "wx1".into(),
        secret_sealed: vec![1, 2, 3],
        base_url: None,
    };
    s.wechat_settings_set(settings.clone()).await.unwrap();
    assert_eq!(
        s.wechat_settings_get(&t.id).await.unwrap(),
        Some(settings.clone())
    );
    settings.app_id = "wx2".into();
    settings.base_url = Some("http://127.0.0.1:9".into());
    s.wechat_settings_set(settings.clone()).await.unwrap();
    assert_eq!(s.wechat_settings_get(&t.id).await.unwrap(), Some(settings));
}

async fn reset_deletes_users_too(b: Bundle) {
    let s = b.store.as_ref();
    let t = tenant(s, "A").await;
    let u = s.user_create(by_email(&t.id, "z@q.io")).await.unwrap();
    session(s, &t.id, &u.id, "z").await;
    s.tenant_hosts_set(&t.id, vec!["z.example".into()])
        .await
        .unwrap();
    s.reset().await.unwrap();
    assert_eq!(s.tenant_by_host("z.example").await.unwrap(), None);
    assert_eq!(s.user_get(&t.id, &u.id).await.unwrap(), None);
}

macro_rules! suite {
    ($backend:ident, $factory:path) => {
        mod $backend {
            suite!(@tests $factory;
                users_are_per_tenant_and_unique_within_one,
                admins_are_found_by_username_and_unique,
                profile_login_and_status_changes,
                sessions_end_on_revoke_password_status_and_delete,
                refresh_rotates_and_reuse_revokes_the_family,
                concurrent_refreshes_rotate_once,
                hosts_are_claimed_by_one_tenant,
                wechat_settings_round_trip,
                reset_deletes_users_too,
            );
        }
    };
    (@tests $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(bundle) = $factory().await else {
                    eprintln!("skipped: backend not configured (PostgreSQL: set EASEL_TEST_PG_URL)");
                    return;
                };
                super::$name(bundle).await;
            }
        )*
    };
}

suite!(sqlite, crate::Bundle::sqlite);
suite!(postgres, crate::Bundle::postgres);
