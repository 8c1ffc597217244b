//! `account_infra::Verifier`, the verifier another Rust service embeds, against a running
//! Account API on the same database: the same verdicts, revocations seen within 1 s, uses
//! written at shutdown, and a database it would have to migrate refused.

use std::time::{Duration, Instant};

use account_domain::{Environment, PlaintextKey, Scope, SecretBody, VerificationCode};
use account_infra::testing::{Backend, TestDatabase};
use account_infra::{Settings, Verifier, MAX_FLUSH_INTERVAL};
use diesel::prelude::*;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app, TestApp};

on_both_backends!(
    a_key_created_over_http_is_valid_through_the_verifier_with_its_scopes,
    a_key_revoked_over_http_is_refused_by_the_verifier_within_a_second,
    a_use_through_the_verifier_is_written_to_the_database_at_shutdown,
    a_verifier_started_after_a_key_was_used_answers_it_from_memory;
    database: the_verifier_refuses_an_unmigrated_database_and_leaves_it_unmigrated,
);

/// A key created through the API: its secret and its id.
async fn created_key(app: &TestApp, owner: &str, body: serde_json::Value) -> (String, String) {
    let reply = app.create_key(owner, Some(body)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let data = reply.data();
    (data["key"].as_str().expect("key").to_owned(), data["id"].as_str().expect("id").to_owned())
}

async fn a_key_created_over_http_is_valid_through_the_verifier_with_its_scopes(app: TestApp) {
    let org = app.signup_org("verifier@acme.test").await;
    let (key, key_id) = created_key(&app, &org.key, json!({"name": "Reader", "scopes": ["read"]})).await;
    let verifier = Verifier::connect(&app.db.url()).await.expect("the verifier connects");

    for required in [&[][..], &[Scope::Read], &[Scope::Read, Scope::Read]] {
        let verdict = verifier.verify(&key, required, None).await.expect("a verdict");
        assert_eq!(verdict.code, VerificationCode::Valid, "requiring {required:?}");
        let principal = verdict.principal.expect("the key's identity");
        assert_eq!(principal.org_id().as_str(), org.id);
        assert_eq!(principal.key_id().as_str(), key_id);
        assert_eq!(principal.environment(), Environment::Live);
        assert_eq!(principal.scopes().iter().collect::<Vec<_>>(), [Scope::Read]);
    }
    for required in [&[Scope::Write][..], &[Scope::Read, Scope::Write]] {
        let verdict = verifier.verify(&key, required, None).await.expect("a verdict");
        assert_eq!(verdict.code, VerificationCode::InsufficientScope, "requiring {required:?}");
        assert_eq!(verdict.principal.expect("the key's identity").key_id().as_str(), key_id);
    }

    // Well formed with a valid checksum, but issued by nobody; and not a key at all.
    let unknown = PlaintextKey::assemble(Environment::Live, &SecretBody::new("a".repeat(32)).expect("a secret"));
    for presented in [unknown.expose(), "mem_live_nope", ""] {
        let verdict = verifier.verify(presented, &[], None).await.expect("a verdict");
        assert_eq!(verdict.code, VerificationCode::NotFound, "{presented:?}");
        assert!(verdict.principal.is_none());
    }
    verifier.shutdown().await.expect("shuts down");
}

/// The warm start: the key's use, written by the server, is what the verifier loads.
async fn a_verifier_started_after_a_key_was_used_answers_it_from_memory(app: TestApp) {
    let org = app.signup_org("warm-verifier@acme.test").await;
    assert_eq!(app.get_account(&org.key).await.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::helpers::stored_last_used_at(&app.db, &org.key_id).is_none() {
        assert!(Instant::now() < deadline, "the use was never written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let verifier = Verifier::connect(&app.db.url()).await.expect("the verifier connects");
    assert_eq!(verifier.verify(&org.key, &[], None).await.expect("a verdict").code, VerificationCode::Valid);
    assert_eq!(verifier.cache_stats(), Some((1, 0)), "answered from memory, not read from the database");
    verifier.shutdown().await.expect("shuts down");
}

async fn a_key_revoked_over_http_is_refused_by_the_verifier_within_a_second(app: TestApp) {
    let org = app.signup_org("verifier-revoked@acme.test").await;
    let (key, key_id) = created_key(&app, &org.key, json!({"name": "Doomed"})).await;
    let verifier = Verifier::connect(&app.db.url()).await.expect("the verifier connects");
    // Past the 1 s its first sync is trusted for: from now on the cache is trusted only
    // because the verifier keeps reading the change feed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(verifier.verify(&key, &[], None).await.expect("a verdict").code, VerificationCode::Valid);
    let (hits, _) = verifier.cache_stats().expect("a cache");
    assert_eq!(verifier.verify(&key, &[], None).await.expect("a verdict").code, VerificationCode::Valid);
    assert_eq!(verifier.cache_stats().expect("a cache").0, hits + 1, "the key is verified from the cache");

    assert_eq!(app.revoke_key(&org.key, &key_id).await.status, StatusCode::OK);
    let revoked = Instant::now();
    loop {
        let verdict = verifier.verify(&key, &[], None).await.expect("a verdict");
        if verdict.code != VerificationCode::Valid {
            assert_eq!(verdict.code, VerificationCode::Revoked);
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(1), "the verifier accepted a revoked key for over a second");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(revoked.elapsed() < Duration::from_secs(1), "refused only after {:?}", revoked.elapsed());
    verifier.shutdown().await.expect("shuts down");
}

async fn a_use_through_the_verifier_is_written_to_the_database_at_shutdown(app: TestApp) {
    let org = app.signup_org("verifier-usage@acme.test").await;
    let (key, key_id) = created_key(&app, &org.key, json!({"name": "Used elsewhere"})).await;
    // No periodic flush can happen during the test: only the one at shutdown can write.
    let mut settings = Settings::for_url(&app.db.url()).expect("a database URL");
    settings.usage_flush_interval = MAX_FLUSH_INTERVAL;
    let verifier = Verifier::connect_with(settings).await.expect("the verifier connects");
    assert_eq!(verifier.verify(&key, &[Scope::Write], None).await.expect("a verdict").code, VerificationCode::Valid);
    assert_eq!(crate::helpers::stored_last_used_at(&app.db, &key_id), None, "not written before shutdown");
    verifier.shutdown().await.expect("shuts down");
    assert!(crate::helpers::stored_last_used_at(&app.db, &key_id).is_some(), "the use was lost at shutdown");
}

async fn the_verifier_refuses_an_unmigrated_database_and_leaves_it_unmigrated(db: TestDatabase) {
    let error = Verifier::connect(&db.url()).await.expect_err("an unmigrated database is refused");
    let message = format!("{error:#}");
    assert!(message.contains("lacks migrations"), "{message}");
    assert!(message.contains("account-api migrate"), "{message}");
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let tables = "('api_keys', 'organizations', 'plans', 'cache_events', 'audit_events', '__diesel_schema_migrations')";
    let counted: Vec<Count> = match db.target() {
        account_infra::DatabaseTarget::Sqlite(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().expect("utf-8")).expect("open");
            let sql = format!("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name IN {tables}");
            diesel::sql_query(sql).load(&mut conn).expect("read")
        }
        account_infra::DatabaseTarget::Postgres(url) => {
            let mut conn = diesel::PgConnection::establish(url).expect("connect");
            let sql = format!("SELECT count(*) AS n FROM information_schema.tables WHERE table_name IN {tables}");
            diesel::sql_query(sql).load(&mut conn).expect("read")
        }
    };
    assert_eq!(counted[0].n, 0, "the verifier wrote to the database it refused");
}

/// The privileges docs/operations.md lists for a verifier's PostgreSQL role, and no more:
/// it connects, verifies (reading the quota of the key's `block` plan), follows a revocation
/// and writes the use at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_on_postgres_needs_only_the_privileges_the_operations_guide_lists() {
    let Some(app) = spawn_app(Backend::Postgres).await else { return };
    let url = app.db.url();
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (database_path, role) = match rest.rsplit_once('@').map_or(rest, |(_, host)| host).split_once('/') {
        Some((host, database)) => {
            (format!("{host}/{database}"), format!("{}_verifier", database.split('?').next().expect("a name")))
        }
        None => panic!("no database in {url}"),
    };
    let password = format!("pw_{role}");
    app.execute_sql(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{password}'; \
         GRANT SELECT ON api_keys, organizations, plans, plan_periods, cache_events, __diesel_schema_migrations TO {role}; \
         GRANT UPDATE (last_used_at) ON api_keys TO {role}; \
         GRANT SELECT, INSERT, UPDATE ON key_usage, usage_writers TO {role};"
    ));
    let _dropped_at_the_end = DropRole { app: &app, role: role.clone() };

    let org = app.signup_org("verifier-role@acme.test").await;
    let (key, key_id) = created_key(&app, &org.key, json!({"name": "Checked elsewhere"})).await;
    let verifier = Verifier::connect(&format!("{scheme}://{role}:{password}@{database_path}"))
        .await
        .expect("the verifier connects with its privileges");
    assert_eq!(verifier.verify(&key, &[Scope::Read], None).await.expect("a verdict").code, VerificationCode::Valid);
    // Every verdict given is counted: those until the revocation is seen are valid.
    let mut valid = 1;
    assert_eq!(app.revoke_key(&org.key, &key_id).await.status, StatusCode::OK);
    let revoked = Instant::now();
    while verifier.verify(&key, &[], None).await.expect("a verdict").code != VerificationCode::Revoked {
        valid += 1;
        assert!(revoked.elapsed() < Duration::from_secs(1), "the revocation was not followed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    verifier.shutdown().await.expect("the use is written with these privileges");
    assert!(crate::helpers::stored_last_used_at(&app.db, &key_id).is_some(), "the use was written");
    // The instance never saw the key: its report reads the verifier's counts from the database.
    let usage = app.request(reqwest::Method::GET, "/v1/account/usage?days=1", Some(&org.key), None).await;
    let counted =
        usage.data()["keys"].as_array().expect("keys").iter().find(|k| k["key_id"] == key_id.as_str()).cloned();
    let counted = counted.expect("the verifier's verifications are counted");
    assert_eq!(counted["valid"], json!(valid), "{counted}");
    assert_eq!(counted["refused_by_reason"], json!({"revoked": 1}), "{counted}");
}

/// Drops the test's role once its test is over, passed or failed.
struct DropRole<'a> {
    app: &'a TestApp,
    role: String,
}

impl Drop for DropRole<'_> {
    fn drop(&mut self) {
        use diesel::connection::SimpleConnection as _;
        // Best effort, and no panic while a failed test unwinds.
        if let account_infra::DatabaseTarget::Postgres(url) = self.app.db.target() {
            if let Ok(mut conn) = diesel::PgConnection::establish(url) {
                let role = &self.role;
                let _ = conn.batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role};"));
            }
        }
    }
}
