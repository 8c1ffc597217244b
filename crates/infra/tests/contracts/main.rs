//! The ports' contracts (`crates/domain/src/ports.rs`), one module per port: the same test
//! bodies against a fresh SQLite file and, when `TEST_POSTGRES_URL` is set, a fresh PostgreSQL
//! database, each dropped afterwards.

mod common;

mod accounts;
mod audit;
mod change_feed;
mod keys;
mod quota;
mod schema;
mod usage;
mod webhook_schedule;

/// A run without PostgreSQL must not read as a pass: this binary, run again on one
/// PostgreSQL test with no server configured, passes it and says on stderr, by name, that it
/// was skipped.
#[test]
fn a_postgres_test_run_without_a_server_says_it_was_skipped_by_name() {
    let test = "accounts::postgres::the_plans_table_holds_the_catalogue";
    for threads in ["--test-threads=1", "--test-threads=2"] {
        let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
            .args([test, "--exact", threads])
            .env_remove("TEST_POSTGRES_URL")
            .env_remove("REQUIRE_POSTGRES")
            .output()
            .expect("the test binary runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"), "the test was run");
        assert!(stderr.contains(&format!("SKIPPED {test}")), "{threads}: {stderr}");
    }
}
