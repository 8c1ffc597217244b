//! `account-api orgs erase`: a closed organization's personal data gone from every table
//! (searched in `pg_dump` and in the SQLite file itself), while running instances go on
//! writing everyone else's usage; and the operator commands that refuse a closed organization.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::account_changes::{close_account, patch_account};
use crate::helpers::{on_both_backends, TestApp};
use crate::process::account_api;

on_both_backends!(
    erasure_leaves_the_organizations_name_email_and_addresses_in_no_table_and_others_usage_is_still_written,
    operator_commands_refuse_a_closed_organization_and_erasure_refuses_an_open_one,
);

/// What the erased organization wrote, each a string that appears nowhere else.
const NAME: &str = "Erasable Corp Ltd";
const EMAIL: &str = "erase-me-please@acme.test";
const AGENT: &str = "erasure-test-agent/1.0";
const ADDRESS: &str = "198.51.100.77";
const KEY_NAME: &str = "Forgettable Key";

fn run(app: &TestApp, args: &[&str]) -> std::process::Output {
    account_api().env("DATABASE_URL", app.db.url()).args(args).output().expect("runs")
}

/// Everything the database holds, as text: `pg_dump`'s rows, or the SQLite file's bytes
/// (with its write-ahead log), where an old version of a row could linger.
fn everything_stored(app: &TestApp) -> String {
    match app.db.target() {
        account_infra::DatabaseTarget::Postgres(url) => {
            let dump = std::process::Command::new("pg_dump").args(["--data-only", url]).output().expect("pg_dump runs");
            assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
            String::from_utf8_lossy(&dump.stdout).into_owned()
        }
        account_infra::DatabaseTarget::Sqlite(path) => {
            // Read by another process: closing a descriptor of the file in this one would
            // drop the POSIX locks of the running instance's SQLite connections.
            let files = [path.clone(), path.with_extension("db-wal")];
            let cat = std::process::Command::new("cat").args(&files).output().expect("cat runs");
            String::from_utf8_lossy(&cat.stdout).into_owned()
        }
    }
}

async fn erasure_leaves_the_organizations_name_email_and_addresses_in_no_table_and_others_usage_is_still_written(
    app: TestApp,
) {
    let erased = app.signup_org(EMAIL).await;
    let renamed = app
        .client
        .patch(app.url("/v1/account"))
        .bearer_auth(&erased.key)
        .header("user-agent", AGENT)
        .json(&json!({"name": NAME}))
        .send()
        .await
        .expect("sent");
    assert_eq!(renamed.status().as_u16(), 200);
    let key = app.create_key(&erased.key, Some(json!({"name": KEY_NAME, "allowed_ips": [ADDRESS]}))).await;
    assert_eq!(key.status.as_u16(), 201, "{}", key.body);
    let stayed = app.signup_org("stays@acme.test").await;
    let other_key_id = stayed.key_id.clone();
    assert_eq!(app.verify(&stayed.key).await, "valid");
    assert_eq!(close_account(&app, &erased.key, json!({"confirm": erased.id})).await.status.as_u16(), 200);
    for marker in [NAME, EMAIL, AGENT, ADDRESS, KEY_NAME] {
        assert!(everything_stored(&app).contains(marker), "{marker} is stored before erasure");
    }

    let output = run(&app, &["orgs", "erase", &erased.id]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("erased+{}@invalid", erased.id)));
    // The running instance goes on counting and writing the other organization's usage.
    for _ in 0..4 {
        assert_eq!(app.verify(&stayed.key).await, "valid");
    }
    let started = Instant::now();
    while crate::usage::stored_uses(&app, &other_key_id) < 5 {
        assert!(started.elapsed() < Duration::from_secs(5), "the other organization's uses were not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = everything_stored(&app);
    for marker in [NAME, EMAIL, AGENT, ADDRESS, KEY_NAME] {
        assert!(!stored.contains(marker), "{marker} is still stored after erasure");
    }
    assert!(!stored.to_lowercase().contains(EMAIL), "nor its normalised email");
    // What billing and the trail need stays: the ids, its plan period, the erasure itself.
    let actions = crate::helpers::audit_actions_by_sql(&app.db, &erased.id);
    assert_eq!(actions.last().map(|(a, _)| a.as_str()), Some("org.erased"), "{actions:?}");
    assert!(actions.iter().any(|(a, _)| a == "account.closed"));
    assert!(stored.contains(&erased.id) && stored.contains(&erased.key_id));
    // Its email is free, and a new signup with it works.
    app.signup_org(EMAIL).await;
}

async fn operator_commands_refuse_a_closed_organization_and_erasure_refuses_an_open_one(app: TestApp) {
    let open = app.signup_org("still-open@acme.test").await;
    let output = run(&app, &["orgs", "erase", &open.id]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only a closed organization"), "{output:?}");
    assert_eq!(app.get_account(&open.key).await.data()["email"], "still-open@acme.test");

    let closed = app.signup_org("closed-op@acme.test").await;
    assert_eq!(patch_account(&app, &closed.key, json!({"name": "Closing"})).await.status.as_u16(), 200);
    assert_eq!(close_account(&app, &closed.key, json!({"confirm": closed.id})).await.status.as_u16(), 200);
    for args in [
        vec!["orgs", "deactivate", &closed.id],
        vec!["orgs", "activate", &closed.id],
        vec!["keys", "issue", &closed.id],
    ] {
        let output = run(&app, &args);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(String::from_utf8_lossy(&output.stderr).contains("closed"), "{args:?}: {output:?}");
        assert!(output.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&output.stdout));
    }
    // It stays in the export of the month it closed in, its period ending that day.
    let today = time::OffsetDateTime::now_utc().date();
    let month = format!("{:04}-{:02}", today.year(), u8::from(today.month()));
    let export = run(&app, &["usage", "export", "--month", &month]);
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let csv = String::from_utf8_lossy(&export.stdout).into_owned();
    let line = csv.lines().find(|l| l.starts_with(&closed.id)).unwrap_or_else(|| panic!("not exported: {csv}"));
    assert!(line.contains(&format!(",{today},{today},")), "{line}");
    // Nothing was done to it: no status change, no key issued.
    let actions = crate::helpers::audit_actions_by_sql(&app.db, &closed.id);
    assert!(!actions.iter().any(|(a, _)| a.starts_with("organization.") || a == "key.created"), "{actions:?}");
}
