//! Accounts against a real PostgreSQL: sealed secrets, exclusive fenced leases, states.

use std::time::Duration;

use trawl_shared::accounts::{AccountError, AccountState, Accounts, NewAccount};
use trawl_shared::crypto::SecretBox;
use trawl_shared::testing::fresh_db;

fn key() -> SecretBox {
    SecretBox::from_hex(&"5a".repeat(32)).unwrap()
}

#[tokio::test]
async fn secrets_are_sealed_at_rest_and_opened_for_the_holder() {
    let db = fresh_db().await;
    let accounts = Accounts::new(db.pool.clone(), key());
    let added = accounts
        .add(&NewAccount {
            name: "researcher1",
            password: Some("hunter2-secret"),
            session: Some("sessionid=abc-secret; ds_user_id=42"),
            egress_group: Some("ip-a"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(added.has_password && added.has_session);
    assert_eq!(added.state, AccountState::Available);

    // Nothing in the table holds a secret in clear.
    let raw: (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT password_sealed, session_sealed FROM accounts WHERE name = 'researcher1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    for sealed in [&raw.0, &raw.1] {
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
    }
    let dump: String = sqlx::query_scalar("SELECT row_to_json(a)::text FROM accounts a")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!dump.contains("hunter2") && !dump.contains("abc-secret"));

    let held = accounts
        .lease("worker-1", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.password.as_deref(), Some("hunter2-secret"));
    assert_eq!(
        held.session.as_deref(),
        Some("sessionid=abc-secret; ds_user_id=42")
    );
    assert!(
        !format!("{held:?}").contains("secret"),
        "Debug never prints secrets"
    );

    // The wrong key cannot open them.
    let other = Accounts::new(
        db.pool.clone(),
        SecretBox::from_hex(&"77".repeat(32)).unwrap(),
    );
    accounts.release(&held).await.unwrap();
    assert!(matches!(
        other.lease("worker-2", Duration::from_secs(60)).await,
        Err(AccountError::Rotate(name, _)) if name == "researcher1"
    ));
}

#[tokio::test]
async fn one_account_one_worker_and_a_lost_lease_is_fenced() {
    let db = fresh_db().await;
    let accounts = Accounts::new(db.pool.clone(), key());
    accounts
        .add(&NewAccount {
            name: "only",
            anonymous: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let first = accounts
        .lease("w1", Duration::from_millis(300))
        .await
        .unwrap()
        .unwrap();
    assert!(
        accounts
            .lease("w2", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "extra workers wait"
    );
    accounts
        .heartbeat(&first, Duration::from_millis(300))
        .await
        .unwrap();

    // w1 stops heartbeating; w2 takes the account over and w1 is fenced out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = accounts
        .lease("w2", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.name, "only");
    assert!(matches!(
        accounts.heartbeat(&first, Duration::from_secs(60)).await,
        Err(AccountError::LeaseLost(_))
    ));
    assert!(matches!(
        accounts.release(&first).await,
        Err(AccountError::LeaseLost(_))
    ));
    assert!(matches!(
        accounts.store_session(&first, "sessionid=stale").await,
        Err(AccountError::LeaseLost(_))
    ));

    accounts
        .checkpoint(&second, "checkpoint_required")
        .await
        .unwrap();
    assert!(
        accounts
            .lease("w3", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "out of rotation"
    );
    let listed = accounts.list().await.unwrap();
    assert_eq!(listed[0].state, AccountState::Checkpoint);
    assert_eq!(listed[0].last_error.as_deref(), Some("checkpoint_required"));
    accounts.set_enabled("only", true).await.unwrap();
    assert!(
        accounts
            .lease("w3", Duration::from_secs(60))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_is_written() {
    let db = fresh_db().await;
    let accounts = Accounts::new(db.pool.clone(), key());
    for (new, expected) in [
        (
            NewAccount {
                name: "",
                anonymous: true,
                ..Default::default()
            },
            "not valid",
        ),
        (
            NewAccount {
                name: "has space",
                anonymous: true,
                ..Default::default()
            },
            "not valid",
        ),
        (
            NewAccount {
                name: "nosecret",
                ..Default::default()
            },
            "needs a password",
        ),
    ] {
        let err = accounts.add(&new).await.unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
    accounts
        .add(&NewAccount {
            name: "dup",
            anonymous: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        accounts
            .add(&NewAccount {
                name: "dup",
                password: Some("x"),
                ..Default::default()
            })
            .await,
        Err(AccountError::Exists(_))
    ));
    assert_eq!(accounts.list().await.unwrap().len(), 1);
    assert!(matches!(
        accounts.remove("ghost").await,
        Err(AccountError::NotFound(_))
    ));
    assert!(matches!(
        accounts.set_enabled("ghost", false).await,
        Err(AccountError::NotFound(_))
    ));
    accounts.set_enabled("dup", false).await.unwrap();
    assert!(
        accounts
            .lease("w", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none(),
        "disabled"
    );
    accounts.remove("dup").await.unwrap();
    assert!(accounts.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_imported_session_replaces_the_old_one_sealed_for_its_account() {
    let db = fresh_db().await;
    let accounts = Accounts::new(db.pool.clone(), key());
    accounts
        .add(&NewAccount {
            name: "importer",
            password: Some("pw"),
            session: Some("sessionid=old-secret; ds_user_id=1"),
            ..Default::default()
        })
        .await
        .unwrap();
    accounts
        .add(&NewAccount {
            name: "anon",
            anonymous: true,
            ..Default::default()
        })
        .await
        .unwrap();
    sqlx::query("UPDATE accounts SET session_updated_at = now() - interval '3 days'")
        .execute(&db.pool)
        .await
        .unwrap();

    let replaced = accounts
        .replace_session("importer", "sessionid=new-secret; ds_user_id=2")
        .await
        .unwrap();
    assert!(replaced.has_password && replaced.has_session);
    let age = chrono::Utc::now() - replaced.session_updated_at.unwrap();
    assert!(
        age < chrono::Duration::minutes(1),
        "the session is new: {age}"
    );

    let dump: String = sqlx::query_scalar("SELECT row_to_json(a)::text FROM accounts a")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!dump.contains("new-secret"));
    let held = accounts
        .lease("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        held.name, "anon",
        "the anonymous one has no errors and sorts first"
    );
    accounts.release(&held).await.unwrap();
    accounts.set_enabled("anon", false).await.unwrap();
    let held = accounts
        .lease("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        held.session.as_deref(),
        Some("sessionid=new-secret; ds_user_id=2"),
        "opens with the owner it was sealed for"
    );
    assert_eq!(held.password.as_deref(), Some("pw"), "the password is kept");

    // An anonymous account given a session logs in with it from then on.
    let anon = accounts
        .replace_session("anon", "sessionid=s; ds_user_id=3")
        .await
        .unwrap();
    assert!(!anon.anonymous && anon.has_session && !anon.has_password);

    assert!(matches!(
        accounts.replace_session("ghost", "sessionid=x").await,
        Err(AccountError::NotFound(_))
    ));
    assert!(matches!(
        accounts.replace_session("bad name", "sessionid=x").await,
        Err(AccountError::BadName(_))
    ));
    assert_eq!(accounts.list().await.unwrap().len(), 2);
}

#[tokio::test]
async fn rotating_the_key_reseals_everything_or_nothing() {
    let db = fresh_db().await;
    let old = Accounts::new(
        db.pool.clone(),
        SecretBox::from_hex(&"1".repeat(64)).unwrap(),
    );
    for name in ["a1", "a2"] {
        old.add(&NewAccount {
            name,
            password: Some("pw-secret"),
            session: Some("sessionid=s1; ds_user_id=1"),
            ..NewAccount::default()
        })
        .await
        .unwrap();
    }
    let new_key = SecretBox::from_hex(&"2".repeat(64)).unwrap();
    // A wrong current key changes nothing.
    let wrong = Accounts::new(
        db.pool.clone(),
        SecretBox::from_hex(&"3".repeat(64)).unwrap(),
    );
    let before: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT password_sealed FROM accounts ORDER BY name")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(matches!(
        wrong.rotate_key(&new_key).await,
        Err(AccountError::Rotate(name, _)) if name == "a1"
    ));
    let after: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT password_sealed FROM accounts ORDER BY name")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(before, after);

    assert_eq!(old.rotate_key(&new_key).await.unwrap(), 2);
    // The old key no longer opens them; the new one does.
    let rotated = Accounts::new(
        db.pool.clone(),
        SecretBox::from_hex(&"2".repeat(64)).unwrap(),
    );
    let leased = rotated
        .lease("w", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.password.as_deref(), Some("pw-secret"));
    assert_eq!(
        leased.session.as_deref(),
        Some("sessionid=s1; ds_user_id=1")
    );
    rotated.release(&leased).await.unwrap();
    assert!(matches!(
        old.lease("w", std::time::Duration::from_secs(30)).await,
        Err(AccountError::Rotate(..))
    ));
    let leased: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts WHERE state = 'leased'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        leased, 0,
        "a lease that cannot open its secrets is given back at once"
    );
    // Skipping the unreadable ones, an account this key can open is leased.
    old.add(&NewAccount {
        name: "zz",
        password: Some("pw"),
        ..NewAccount::default()
    })
    .await
    .unwrap();
    let next = old
        .lease_excluding(
            "w",
            std::time::Duration::from_secs(30),
            &["a1".into(), "a2".into()],
        )
        .await
        .unwrap()
        .expect("the readable account");
    assert_eq!(next.name, "zz");
}

/// A rested account is out of rotation for exactly its rest, then any worker takes it again
/// without a person acting.
#[tokio::test]
async fn a_cooldown_rests_the_account_and_ends_by_itself() {
    let db = fresh_db().await;
    let accounts = Accounts::new(db.pool.clone(), key());
    accounts
        .add(&NewAccount {
            name: "rested",
            anonymous: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ttl = Duration::from_secs(60);
    let held = accounts.lease("worker-1", ttl).await.unwrap().unwrap();
    let rest = Duration::from_secs(2);
    accounts
        .cool_down(&held, rest, "feedback_required")
        .await
        .unwrap();

    let listed = accounts.list().await.unwrap();
    assert_eq!(listed[0].state, AccountState::Cooldown);
    assert_eq!(listed[0].last_error.as_deref(), Some("feedback_required"));
    assert!(listed[0].lease_owner.is_none(), "the lease is given up");
    let rest_left: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM cooldown_until - now())::float8 FROM accounts",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        rest_left > 1.0 && rest_left <= 2.0,
        "rests for the configured time: {rest_left}s left"
    );
    assert_eq!(
        trawl_shared::accounts::count_by_state(&db.pool)
            .await
            .unwrap(),
        vec![(AccountState::Cooldown, 1)]
    );
    // Resting: no worker gets it, and the old holder's token is dead.
    assert!(accounts.lease("worker-2", ttl).await.unwrap().is_none());
    assert!(matches!(
        accounts.heartbeat(&held, ttl).await,
        Err(AccountError::LeaseLost(_))
    ));

    tokio::time::sleep(rest + Duration::from_millis(200)).await;
    assert_eq!(
        trawl_shared::accounts::count_by_state(&db.pool)
            .await
            .unwrap(),
        vec![(AccountState::Available, 1)],
        "a rest that ended counts as available"
    );
    let again = accounts.lease("worker-2", ttl).await.unwrap();
    assert_eq!(again.map(|a| a.name).as_deref(), Some("rested"));
    let listed = accounts.list().await.unwrap();
    assert_eq!(listed[0].state, AccountState::Leased);
    assert!(listed[0].cooldown_until.is_none());
}

#[tokio::test]
async fn a_proxy_routes_its_accounts_and_a_down_proxy_keeps_them_out_of_rotation() {
    use trawl_shared::proxies::{self, NewProxy, ProxyError, ProxyScheme};
    let db = fresh_db().await;
    let accounts = Accounts::new(db.pool.clone(), key());
    let new = |name: &'static str, url: &'static str, user: Option<&'static str>| NewProxy {
        name,
        url,
        username: user,
        password: user.map(|_| "pw:with:colons"),
        egress_group: None,
    };
    proxies::add(
        &db.pool,
        &key(),
        &new("dc1", "http://10.0.0.5:3128", Some("crawler")),
    )
    .await
    .unwrap();
    proxies::add(
        &db.pool,
        &key(),
        &new("home", "socks5h://proxy.lan:1080", None),
    )
    .await
    .unwrap();
    // Refused with the reason, nothing written.
    for (url, says) in [
        ("http://u:p@h:1", "credentials"),
        ("http://h", "port"),
        ("ftp://h:1", "scheme"),
    ] {
        let e = proxies::add(&db.pool, &key(), &new("bad", url, None))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(says), "{url}: {e}");
    }
    assert!(matches!(
        proxies::add(&db.pool, &key(), &new("dc1", "http://h:1", None)).await,
        Err(ProxyError::Exists(_))
    ));
    assert!(matches!(
        accounts
            .add(&NewAccount {
                name: "ghost",
                anonymous: true,
                proxy: Some("nope"),
                ..NewAccount::default()
            })
            .await,
        Err(AccountError::NoSuchProxy(_))
    ));
    assert_eq!(proxies::list(&db.pool).await.unwrap().len(), 2);

    accounts
        .add(&NewAccount {
            name: "alice",
            password: Some("pw"),
            proxy: Some("dc1"),
            ..NewAccount::default()
        })
        .await
        .unwrap();
    accounts
        .add(&NewAccount {
            name: "bob",
            anonymous: true,
            egress_group: Some("own-group"),
            ..NewAccount::default()
        })
        .await
        .unwrap();
    proxies::assign(&db.pool, "bob", Some("home"))
        .await
        .unwrap();
    assert!(matches!(
        proxies::assign(&db.pool, "nobody", Some("home")).await,
        Err(ProxyError::AccountNotFound(_))
    ));
    assert!(matches!(
        proxies::remove(&db.pool, "home").await,
        Err(ProxyError::InUse { .. })
    ));

    let ttl = Duration::from_secs(30);
    let a = accounts.lease("w1", ttl).await.unwrap().expect("alice");
    assert_eq!(a.name, "alice");
    let route = a.proxy.clone().expect("alice's route");
    assert_eq!(route.url.scheme, ProxyScheme::Http);
    assert_eq!(route.username.as_deref(), Some("crawler"));
    // The password is split at the first colon only.
    assert_eq!(route.password.as_deref(), Some("pw:with:colons"));
    // The egress group follows the proxy unless the account has its own.
    assert_eq!(a.egress_group.as_deref(), Some("dc1"));
    let b = accounts.lease("w2", ttl).await.unwrap().expect("bob");
    assert_eq!(b.egress_group.as_deref(), Some("own-group"));
    assert_eq!(
        b.proxy.as_ref().map(|r| r.url.to_string()).as_deref(),
        Some("socks5h://proxy.lan:1080")
    );
    assert!(b.proxy.as_ref().unwrap().username.is_none());

    // dc1 goes down: alice, given back, is not leased until the proxy's rest ends.
    let until = proxies::mark_down(
        &db.pool,
        "dc1",
        "cannot get through the proxy",
        Duration::from_millis(400),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    accounts.release(&a).await.unwrap();
    assert!(accounts.lease("w3", ttl).await.unwrap().is_none());
    let listed = accounts.list().await.unwrap();
    let alice = listed.iter().find(|x| x.name == "alice").unwrap();
    assert_eq!(alice.state, AccountState::ProxyDown);
    assert_eq!(
        alice.proxy_down_reason.as_deref(),
        Some("cannot get through the proxy")
    );
    let counts = trawl_shared::accounts::count_by_state(&db.pool)
        .await
        .unwrap();
    assert!(counts.contains(&(AccountState::ProxyDown, 1)), "{counts:?}");
    assert!(until > chrono::Utc::now());
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The rest is over: the next worker leases it (and would check the proxy first).
    let again = accounts
        .lease("w3", ttl)
        .await
        .unwrap()
        .expect("alice after the rest");
    assert_eq!(again.name, "alice");
    assert!(proxies::mark_up(&db.pool, "dc1").await.unwrap());
    assert!(!proxies::mark_up(&db.pool, "dc1").await.unwrap());
    assert_eq!(proxies::get(&db.pool, "dc1").await.unwrap().state, "up");

    // Rotating the key reseals the proxy's credentials too.
    let new_key = SecretBox::from_hex(&"9".repeat(64)).unwrap();
    accounts.rotate_key(&new_key).await.unwrap();
    accounts.release(&again).await.unwrap();
    let rotated = Accounts::new(db.pool.clone(), new_key);
    let held = rotated
        .lease("w4", ttl)
        .await
        .unwrap()
        .expect("alice under the new key");
    assert_eq!(
        held.proxy.unwrap().password.as_deref(),
        Some("pw:with:colons")
    );
}
