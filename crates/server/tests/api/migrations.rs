//! Migrations: `account-api migrate`, and the 64-bit id migration
//! (`2024-01-04-000000_feed_by_transaction`) on a database an older release wrote to: its
//! rows survive it, and afterwards the change feed and the audit log's paging work with ids
//! past 2^31.

use std::sync::Arc;
use std::time::{Duration, Instant};

use account_domain::{Environment, PlaintextKey, SecretBody};
use account_infra::testing::{Backend, TestDatabase};
use account_infra::DatabaseTarget;
use diesel::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{execute_sql_on, on_both_backends, spawn_app_on, TestApp};
use crate::process::account_api;

on_both_backends!(backend: rows_written_before_the_64_bit_migration_survive_it_and_ids_past_2_31_work);

#[test]
fn migrate_applies_the_schema_and_exits_zero() {
    let db = TestDatabase::sqlite();
    let output = account_api().env("DATABASE_URL", db.url()).arg("migrate").output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let again = account_api().env("DATABASE_URL", db.url()).arg("migrate").output().expect("runs");
    assert!(again.status.success(), "migrating twice is harmless");
}

/// The migration that widened the ids of `cache_events` and `audit_events` to 64 bits.
const WIDENING: &str = "2024-01-04-000000";

/// The ids of a page of the audit log, and whether older events exist.
async fn audit_page(app: &TestApp, key: &str, query: &str) -> (Vec<String>, bool) {
    let reply = app.request(Method::GET, &format!("/v1/account/audit-log?{query}"), Some(key), None).await;
    let data = reply.data();
    let ids = data["events"].as_array().expect("events").iter().map(|e| e["id"].as_str().expect("id").to_owned());
    (ids.collect(), data["has_more"].as_bool().expect("has_more"))
}

fn cache_events_of(db: &TestDatabase, key_hash: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sql = format!("SELECT count(*) AS n FROM cache_events WHERE key_hash = '{key_hash}'");
    let counted: Vec<Count> = match db.target() {
        DatabaseTarget::Sqlite(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().expect("utf-8")).expect("open");
            diesel::sql_query(sql).load(&mut conn).expect("read")
        }
        DatabaseTarget::Postgres(url) => {
            let mut conn = diesel::PgConnection::establish(url).expect("connect");
            diesel::sql_query(sql).load(&mut conn).expect("read")
        }
    };
    counted[0].n
}

async fn rows_written_before_the_64_bit_migration_survive_it_and_ids_past_2_31_work(backend: Backend) {
    let Some(db) = TestDatabase::new(backend) else { return };
    assert_eq!(db.migrate_before(WIDENING).expect("the older migrations apply"), 3);
    // What an older release wrote: an organization, its key, their audit events, a change.
    let old_key = PlaintextKey::assemble(Environment::Live, &SecretBody::new("c".repeat(32)).expect("a secret"));
    let old_hash = old_key.hash().to_hex();
    execute_sql_on(
        &db,
        &format!(
            "INSERT INTO organizations (id, name, email, email_normalized, plan_id, is_active, created_at) \
             VALUES ('org_before', 'Older', 'older@acme.test', 'older@acme.test', 'free', TRUE, 1700000000000000); \
             INSERT INTO api_keys (id, org_id, name, key_hash, key_prefix, environment, scopes, created_at) \
             VALUES ('key_before', 'org_before', 'Issued before', '{old_hash}', '{prefix}', 'live', 'read write', \
                     1700000000000000); \
             INSERT INTO audit_events (org_id, action, target_id, created_at) \
             VALUES ('org_before', 'signup', 'org_before', 1700000000000000); \
             INSERT INTO audit_events (org_id, action, target_id, created_at) \
             VALUES ('org_before', 'key.created', 'key_before', 1700000000000001); \
             INSERT INTO cache_events (key_hash, created_at) VALUES ('{old_hash}', 1700000000000000);",
            prefix = old_key.display_prefix().as_str(),
        ),
    );

    // The instance applies the rest at start-up; the rows are all there.
    let db = Arc::new(db);
    let app = spawn_app_on(db.clone()).await;
    let other = spawn_app_on(db.clone()).await;
    let key = old_key.expose();
    let account = app.get_account(key).await;
    assert_eq!(
        (account.data()["org_id"].as_str(), account.data()["name"].as_str()),
        (Some("org_before"), Some("Older"))
    );
    assert_eq!(audit_page(&app, key, "").await, (vec!["evt_2".to_owned(), "evt_1".to_owned()], false));
    assert_eq!(cache_events_of(&db, &old_hash), 1, "the change row survived");

    // Ids past 2^31 from here on.
    execute_sql_on(
        &db,
        match backend {
            Backend::Sqlite => {
                "UPDATE sqlite_sequence SET seq = 2999999999 WHERE name IN ('audit_events', 'cache_events');"
            }
            Backend::Postgres => {
                "ALTER SEQUENCE audit_events_id_seq RESTART WITH 3000000000; \
                 ALTER SEQUENCE cache_events_id_seq RESTART WITH 3000000000;"
            }
        },
    );
    let created = app.create_key(key, Some(json!({"name": "Doomed"}))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let (doomed, doomed_id) =
        (created.data()["key"].as_str().expect("key"), created.data()["id"].as_str().expect("id"));
    assert_eq!(other.get_account(doomed).await.status, StatusCode::OK, "cached by the other instance");
    let renamed = app
        .request(Method::PATCH, "/v1/account/api-keys/key_before", Some(key), Some(json!({"name": "Renamed"})))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(app.revoke_key(key, doomed_id).await.status, StatusCode::OK);
    // The feed's rows past 2^31 are read: the other instance refuses the key within a second.
    let revoked = Instant::now();
    while other.get_account(doomed).await.status == StatusCode::OK {
        assert!(revoked.elapsed() < Duration::from_secs(1), "the revocation was not read from the feed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    other.get_account(doomed).await.assert_error(401, "revoked_api_key");

    // The audit log pages across 2^31 with `before`.
    let pages = [
        ("limit=2", vec!["evt_3000000002", "evt_3000000001"], true),
        ("limit=2&before=evt_3000000001", vec!["evt_3000000000", "evt_2"], true),
        ("limit=2&before=evt_2", vec!["evt_1"], false),
    ];
    for (query, ids, more) in pages {
        let expected: Vec<String> = ids.into_iter().map(str::to_owned).collect();
        assert_eq!(audit_page(&app, key, query).await, (expected, more), "{query}");
    }
    let actions: Vec<Value> = {
        let reply = app.request(Method::GET, "/v1/account/audit-log", Some(key), None).await;
        reply.data()["events"].as_array().expect("events").iter().map(|e| e["action"].clone()).collect()
    };
    assert_eq!(actions, ["key.revoked", "key.renamed", "key.created", "key.created", "signup"].map(|a| json!(a)));
}
