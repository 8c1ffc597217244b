//! `ChangeFeed` (`SqlChangeFeed`, the `cache_events` table): every change delivered once to
//! every instance, a late commit still delivered, stamped and pruned by the database's clock;
//! what it cannot deliver reported missed, so that the cache is cleared.

use account_domain::*;
use account_infra::{Database, PoolOptions, SqlChangeFeed};
use time::Duration;

use crate::common::{audit_of, contract, insert, new_key, new_org, now, raw_session, revoke, signed_up, Ctx};

contract!(
    a_revocation_is_published_once_to_every_feed,
    a_change_whose_transaction_commits_late_is_still_delivered,
    changes_are_stamped_and_pruned_by_the_databases_clock_not_their_writers,
    an_unreadable_feed_row_is_reported_missed_and_the_rest_of_its_batch_applied,
    a_postgres_poll_of_over_50000_rows_reports_them_missed_instead_of_holding_them,
    an_instance_of_the_previous_release_cannot_poll_the_migrated_feed_and_so_distrusts_its_cache,
);

async fn a_revocation_is_published_once_to_every_feed(ctx: Ctx) {
    let org = new_org("Acme", "feed@acme.test", "free");
    let (key, plaintext) = new_key(&org.id, "Default Key", org.created_at);
    ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect("created");
    // Two instances' feeds, started before the change.
    let here = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    let there =
        SqlChangeFeed::start(Database::new(ctx.db.target().clone(), &PoolOptions::for_machine())).await.expect("feed");
    assert!(here.poll().await.expect("polled").changes.is_empty());
    revoke(&ctx.keys, &org.id, &key.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    revoke(&ctx.keys, &org.id, &key.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked again");
    for feed in [&here, &there] {
        assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Key(plaintext.hash())]);
        assert!(feed.poll().await.expect("polled").changes.is_empty(), "a change is delivered once");
    }
    // A feed started later does not replay old changes; pruning drops them.
    let late = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    assert!(late.poll().await.expect("polled").changes.is_empty());
    let pruner = SqlChangeFeed::start_with_retention(ctx.db.clone(), std::time::Duration::ZERO).await.expect("feed");
    assert_eq!(pruner.prune().await.expect("pruned"), 1);
}

async fn a_change_whose_transaction_commits_late_is_still_delivered(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    let (_, key) = signed_up(&ctx, "late@acme.test").await;
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    let mut session = raw_session(&ctx);
    let publish = format!("INSERT INTO cache_events (key_hash, created_at) VALUES ('{}', 1)", key.hash.to_hex());
    let postgres = !matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_));
    if postgres {
        // Its id is taken now; it becomes visible only at commit, after later ones.
        session.batch_execute(&format!("BEGIN; {publish};")).expect("in flight");
    }
    let (org, other) = signed_up(&ctx, "late-other@acme.test").await;
    revoke(&ctx.keys, &org.id, &other.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    let first = feed.poll().await.expect("polled");
    assert_eq!(first.changes, vec![Change::Key(other.hash)]);
    assert!(first.caught_up);
    for _ in 0..3 {
        assert!(feed.poll().await.expect("polled").changes.is_empty());
    }
    if postgres {
        session.batch_execute("COMMIT").expect("committed late");
    } else {
        session.batch_execute(&publish).expect("committed");
    }
    assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Key(key.hash)], "the late commit is read");
    assert!(feed.poll().await.expect("polled").changes.is_empty(), "and once");
}

async fn changes_are_stamped_and_pruned_by_the_databases_clock_not_their_writers(ctx: Ctx) {
    let (org, behind) = signed_up(&ctx, "clocks@acme.test").await;
    let (ahead, _) = new_key(&org.id, "Ahead", now());
    insert(&ctx.keys, &ahead, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted");
    // An instance that has not polled for a while: it must still read both changes.
    let lagging = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    // Revoked by writers whose clocks are two hours behind and two hours ahead, beyond the
    // hour the feed keeps changes.
    let skew = Duration::hours(2);
    revoke(&ctx.keys, &org.id, &behind.id, now() - skew, &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    revoke(&ctx.keys, &org.id, &ahead.id, now() + skew, &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    // Stamped in Unix microseconds, as every time in the schema (this host is the database's).
    #[derive(diesel::QueryableByName)]
    struct Stamp {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        at: i64,
    }
    let stamp: Stamp = diesel::RunQueryDsl::get_result(
        diesel::sql_query("SELECT MIN(created_at) AS at FROM cache_events"),
        &mut raw_session(&ctx),
    )
    .expect("read");
    let here = now().unix_timestamp_nanos() as i64 / 1000;
    assert!((stamp.at - here).abs() < 60_000_000, "{} vs {here}", stamp.at);
    let pruner = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    assert_eq!(pruner.prune().await.expect("pruned"), 0, "nothing is an hour old by the database's clock");
    let mut read: Vec<Change> = lagging.poll().await.expect("polled").changes;
    read.sort_by_key(|c| format!("{c:?}"));
    let mut expected = vec![Change::Key(behind.hash), Change::Key(ahead.hash)];
    expected.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(read, expected);
}

async fn an_unreadable_feed_row_is_reported_missed_and_the_rest_of_its_batch_applied(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    let (_, key) = signed_up(&ctx, "malformed@acme.test").await;
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    assert!(feed.poll().await.expect("polled").missed, "a first poll cannot vouch for what came before");
    raw_session(&ctx)
        .batch_execute(&format!(
            "INSERT INTO cache_events (key_hash, created_at) VALUES ('not a hash', 1); \
             INSERT INTO cache_events (key_hash, created_at) VALUES ('{}', 1);",
            key.hash.to_hex()
        ))
        .expect("written by hand");
    let poll = feed.poll().await.expect("polled");
    assert_eq!(poll.changes, vec![Change::Key(key.hash)], "the good row is applied");
    assert!(poll.missed, "the bad row makes the cache be cleared");
    assert!(!feed.poll().await.expect("polled").missed, "and only once");
}

/// On PostgreSQL one poll reads every row its previous snapshot could not see, up to
/// 50,000: beyond, it holds none of them and reports them missed (the cache is cleared, which
/// is always safe), once.
async fn a_postgres_poll_of_over_50000_rows_reports_them_missed_instead_of_holding_them(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    if matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_)) {
        return; // a SQLite poll reads a page of 1,000 rows and says it has not caught up
    }
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    assert!(feed.poll().await.expect("polled").missed, "a first poll cannot vouch for what came before");
    // One statement each: distinct 64-digit hex hashes (two md5s side by side).
    let rows = |from: u32, to: u32| {
        format!(
            "INSERT INTO cache_events (key_hash, created_at) \
             SELECT md5(i::text) || md5(i::text), 1 FROM generate_series({from}, {to}) AS i;"
        )
    };
    raw_session(&ctx).batch_execute(&rows(1, 50_000)).expect("written by hand");
    let poll = feed.poll().await.expect("polled");
    assert_eq!((poll.changes.len(), poll.missed, poll.caught_up), (50_000, false, true), "50,000 rows are read");
    raw_session(&ctx).batch_execute(&rows(50_001, 100_001)).expect("written by hand");
    let poll = feed.poll().await.expect("polled");
    assert!(poll.missed, "over 50,000 rows: reported missed");
    assert!(poll.changes.is_empty(), "and none held");
    assert!(poll.caught_up);
    let next = feed.poll().await.expect("polled");
    assert_eq!((next.changes.len(), next.missed), (0, false), "the next poll starts past them");
}

/// During a rolling upgrade across the 64-bit id migration, an instance of the previous
/// release still runs its own poll (ids read as 32-bit integers): on PostgreSQL that poll now
/// fails, so that instance stops trusting its cache within a second and reads every key from
/// the store (the domain's `a_failed_sync_leaves_the_cache_untrusted`): it fails closed.
async fn an_instance_of_the_previous_release_cannot_poll_the_migrated_feed_and_so_distrusts_its_cache(ctx: Ctx) {
    use diesel::prelude::*;
    if matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_)) {
        return; // SQLite's ids were 64-bit all along: nothing changed for an older reader
    }
    let (org, key) = signed_up(&ctx, "upgrade@acme.test").await;
    revoke(&ctx.keys, &org.id, &key.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    #[derive(Debug, QueryableByName)]
    #[allow(dead_code)]
    struct PreviousReleaseRow {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        id: i32,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        key_hash: Option<String>,
    }
    let account_infra::DbConnection::Postgres(mut conn) = raw_session(&ctx) else { unreachable!() };
    // The previous release's poll, as it was written.
    let polled = diesel::sql_query("SELECT id, key_hash FROM cache_events WHERE id > $1 ORDER BY id LIMIT 1000")
        .bind::<diesel::sql_types::Integer, _>(0)
        .load::<PreviousReleaseRow>(&mut conn);
    let error = polled.expect_err("the previous release would go on trusting its cache").to_string();
    assert!(error.contains("more than 4 bytes"), "{error}");
}
