//! The operator's subcommands of `account-api`, run as processes of their own beside a
//! running server on the same database: `plans list` and `plans set-included`, `orgs
//! deactivate` and `orgs activate`, `keys issue`, `usage export`. What they change, a running
//! server applies within a second.

use std::time::{Duration, Instant};

use account_infra::testing::TestDatabase;
use serde_json::Value;

use crate::helpers::on_both_backends;
use crate::process::{account_api, send_signal, sign_up, start_server, wait_with_timeout};

on_both_backends!(
    database: a_deactivated_organization_is_refused_by_a_running_server_within_a_second,
    an_operator_gives_a_locked_out_organization_a_key_that_a_running_server_accepts_at_once,
);

#[test]
fn plans_list_prints_the_catalogue() {
    let db = TestDatabase::sqlite();
    let output = account_api().env("DATABASE_URL", db.url()).args(["plans", "list"]).output().expect("runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ["free\tFree\t0\t10000", "starter\tStarter\t4900\t1000000", "pro\tPro\t19900\t10000000"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_changes_what_a_plan_includes_and_a_running_server_shows_it_within_a_second() {
    let db = TestDatabase::sqlite();
    let (mut child, port, _logs) = start_server(&db.url(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let signup = sign_up(&client, &base, "terms@acme.test").await;
    let key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let included = || {
        let request = client.get(format!("{base}/v1/account")).bearer_auth(&key);
        async move {
            let body: Value = request.send().await.expect("sent").json().await.expect("json");
            body["data"]["plan"]["included_requests_per_month"].as_i64().expect("included")
        }
    };
    assert_eq!(included().await, 10_000, "the account is cached now");
    let run = account_api()
        .env("DATABASE_URL", db.url())
        .args(["plans", "set-included", "free", "12345"])
        .output()
        .expect("runs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let changed = Instant::now();
    while included().await != 12_345 {
        assert!(changed.elapsed() < Duration::from_secs(1), "the server still shows the old terms");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unknown = account_api()
        .env("DATABASE_URL", db.url())
        .args(["plans", "set-included", "gold", "1"])
        .output()
        .expect("runs");
    assert!(!unknown.status.success());
    send_signal(&child, "TERM");
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn orgs_deactivate_refuses_an_unknown_organization() {
    let db = TestDatabase::sqlite();
    let output =
        account_api().env("DATABASE_URL", db.url()).args(["orgs", "deactivate", "org_missing"]).output().expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("org_missing"));
}

/// The operator's command is another process writing the same database as the server.
async fn a_deactivated_organization_is_refused_by_a_running_server_within_a_second(db: TestDatabase) {
    let (mut child, port, _logs) = start_server(&db.url(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let signup = sign_up(&client, &base, "operator@acme.test").await;
    let key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let org_id = signup["data"]["account"]["org_id"].as_str().expect("org").to_owned();
    // Any route but GET /v1/account, which a deactivated organization's key still reads.
    let status = |key: String| {
        let client = client.clone();
        let url = format!("{base}/v1/account/api-keys");
        async move { client.get(url).bearer_auth(key).send().await.expect("sent").status().as_u16() }
    };
    assert_eq!(status(key.clone()).await, 200, "the key is cached now");

    let run = |args: [&str; 3]| {
        let output = account_api().env("DATABASE_URL", db.url()).args(args).output().expect("runs");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(run(["orgs", "deactivate", &org_id]).contains("inactive"));
    let changed = Instant::now();
    while status(key.clone()).await != 403 {
        assert!(changed.elapsed() < Duration::from_secs(1), "the server still serves the deactivated organization");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    run(["orgs", "activate", &org_id]);
    let changed = Instant::now();
    while status(key.clone()).await != 200 {
        assert!(changed.elapsed() < Duration::from_secs(1), "the server does not see the organization active again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(&child, "TERM");
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
}

/// An organization revokes its only key, an operator issues it one from the command line
/// (another process on the same database), then the limit and a deactivated organization.
async fn an_operator_gives_a_locked_out_organization_a_key_that_a_running_server_accepts_at_once(db: TestDatabase) {
    let (mut child, port, _logs) = start_server(&db.url(), &[]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let signup = sign_up(&client, &base, "recovery@acme.test").await;
    let key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let key_id = signup["data"]["api_key"]["id"].as_str().expect("id").to_owned();
    let org_id = signup["data"]["account"]["org_id"].as_str().expect("org").to_owned();
    let get = |path: &str, key: &str| {
        let request = client.get(format!("{base}{path}")).bearer_auth(key);
        async move {
            let response = request.send().await.expect("sent");
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let revoked =
        client.delete(format!("{base}/v1/account/api-keys/{key_id}")).bearer_auth(&key).send().await.expect("sent");
    assert_eq!(revoked.status().as_u16(), 200);
    assert_eq!(get("/v1/account", &key).await.0, 401, "locked out: its only key is revoked");

    let issue = |args: &[&str], extra: &[(&str, &str)]| {
        account_api()
            .env("DATABASE_URL", db.url())
            .envs(extra.iter().copied())
            .args(["keys", "issue", &org_id])
            .args(args)
            .output()
            .expect("runs")
    };
    let output = issue(&["--name", "Recovery", "--scopes", "read"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "the key alone on stdout: {stdout:?}");
    assert!(stdout.ends_with('\n'));
    let issued = lines[0].to_owned();
    assert!(issued.starts_with("mem_live_"), "{issued}");
    assert!(!stderr.contains(&issued[issued.len() - 32..]), "the key is printed on stdout only: {stderr}");

    let (status, account) = get("/v1/account", &issued).await;
    assert_eq!(status, 200, "the server never saw the key, and takes it at once: {account}");
    assert_eq!(account["data"]["org_id"], org_id.as_str());
    let (_, listed) = get("/v1/account/api-keys", &issued).await;
    let keys = listed["data"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{listed}");
    let recovery = keys.iter().find(|k| k["name"] == "Recovery").unwrap_or_else(|| panic!("not listed: {listed}"));
    let recovery_id = recovery["id"].as_str().expect("id").to_owned();
    assert_eq!(recovery["scopes"], serde_json::json!(["read"]));
    assert_eq!(recovery["environment"], "live");
    assert_eq!(recovery["expires_at"], serde_json::Value::Null);
    assert_eq!(recovery["is_active"], true);
    let (_, trail) = get("/v1/account/audit-log", &issued).await;
    let events = trail["data"]["events"].as_array().expect("events");
    let created: Vec<_> =
        events.iter().filter(|e| e["action"] == "key.created" && e["target_id"] == recovery_id.as_str()).collect();
    assert_eq!(created.len(), 1, "{trail}");
    assert_eq!(created[0]["actor_key_id"], serde_json::Value::Null);
    assert_eq!(created[0]["client_ip"], serde_json::Value::Null);
    assert_eq!(created[0]["user_agent"], "account-api command line");

    // At the limit: refused, naming it, and nothing stored.
    let refused = issue(&[], &[("MAX_ACTIVE_KEYS_PER_ORG", "1")]);
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty(), "no key printed: {}", String::from_utf8_lossy(&refused.stdout));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("MAX_ACTIVE_KEYS_PER_ORG") && message.contains('1'), "{message}");
    let (_, listed) = get("/v1/account/api-keys", &issued).await;
    assert_eq!(listed["data"].as_array().expect("keys").len(), 2, "a key was stored at the limit: {listed}");
    let (_, trail) = get("/v1/account/audit-log", &issued).await;
    assert_eq!(trail["data"]["events"].as_array().expect("events").len(), events.len(), "an event was recorded");

    // A deactivated organization gets its key, with a warning; it works once activated.
    let deactivated =
        account_api().env("DATABASE_URL", db.url()).args(["orgs", "deactivate", &org_id]).output().expect("runs");
    assert!(deactivated.status.success(), "{}", String::from_utf8_lossy(&deactivated.stderr));
    let output = issue(&["--environment", "test", "--expires-in-days", "7"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("inactive") && stderr.contains(&format!("account-api orgs activate {org_id}")), "{stderr}");
    let late = String::from_utf8(output.stdout).expect("utf-8").trim_end().to_owned();
    assert!(late.starts_with("mem_test_"), "{late}");
    // Any route but GET /v1/account, which a deactivated organization's key still reads.
    let refused_until = Instant::now();
    while get("/v1/account/api-keys", &late).await.0 != 403 {
        assert!(refused_until.elapsed() < Duration::from_secs(1), "the inactive organization's key is served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let activated =
        account_api().env("DATABASE_URL", db.url()).args(["orgs", "activate", &org_id]).output().expect("runs");
    assert!(activated.status.success(), "{}", String::from_utf8_lossy(&activated.stderr));
    let changed = Instant::now();
    while get("/v1/account/api-keys", &late).await.0 != 200 {
        assert!(changed.elapsed() < Duration::from_secs(1), "the key does not work once the organization is active");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    send_signal(&child, "TERM");
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
}

#[test]
fn keys_issue_refuses_an_unknown_organization() {
    let db = TestDatabase::sqlite();
    let output =
        account_api().env("DATABASE_URL", db.url()).args(["keys", "issue", "org_missing"]).output().expect("runs");
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("Error: no organization has the id org_missing"), "{stderr}");
}

#[test]
fn keys_issue_refuses_a_bad_value_naming_the_option() {
    let db = TestDatabase::sqlite();
    for (option, value) in [
        ("--name", " "),
        ("--scopes", "read,admin"),
        ("--scopes", ""),
        ("--environment", "prod"),
        ("--expires-in-days", "0"),
        ("--expires-in-days", "-3"),
        ("--expires-in-days", "soon"),
    ] {
        let output = account_api()
            .env("DATABASE_URL", db.url())
            .args(["keys", "issue", "org_any", option, value])
            .output()
            .expect("runs");
        assert!(!output.status.success(), "{option} {value:?} was accepted");
        assert!(output.stdout.is_empty());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(option), "{option} {value:?}: {stderr}");
    }
}

#[test]
fn the_export_refuses_a_malformed_month_and_lists_every_organization_with_zeros() {
    let db = TestDatabase::sqlite();
    let bad = account_api()
        .env("DATABASE_URL", db.url())
        .args(["usage", "export", "--month", "2026-13"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("YYYY-MM"), "{}", String::from_utf8_lossy(&bad.stderr));
    let empty = account_api()
        .env("DATABASE_URL", db.url())
        .args(["usage", "export", "--month", "2020-01"])
        .output()
        .expect("runs");
    assert!(empty.status.success());
    assert_eq!(
        String::from_utf8_lossy(&empty.stdout),
        "org_id,plan_id,valid,refused,valid_test,period_start,period_end,included,base_price_cents\n"
    );
    assert!(!String::from_utf8_lossy(&empty.stderr).contains("not final"), "a month long past is final");
}
