//! The repository contract: the same test bodies against a fresh SQLite file and, when
//! `TEST_POSTGRES_URL` is set, a fresh PostgreSQL database, each dropped afterwards.

use std::collections::HashSet;
use std::sync::Arc;

use account_domain::*;
use account_infra::testing::{Backend, TestDatabase};
use account_infra::{Database, OsRandomGenerator, PoolOptions, SqlAccountRepository, SqlChangeFeed, SqlKeyRepository};
use time::{Duration, OffsetDateTime};

struct Ctx {
    accounts: SqlAccountRepository,
    keys: SqlKeyRepository,
    db: Database,
    _test_db: TestDatabase,
}

fn setup(backend: Backend) -> Option<Ctx> {
    let test_db = TestDatabase::new(backend)?;
    let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
    db.migrate().expect("migrations apply");
    Some(Ctx {
        accounts: SqlAccountRepository::new(db.clone()),
        keys: SqlKeyRepository::new(db.clone()),
        db,
        _test_db: test_db,
    })
}

/// The decision a write is given in these tests, as the domain's would take it but with no
/// rules of its own about keys: an operator's write goes on; a key's write is refused when the
/// row found says its key may not act (revoked, expired, organization deactivated); a write on
/// a key not found is refused `NotFound`.
fn decision<T: Clone + Send + Sync + 'static>(actor: &Actor, target: bool, made: T) -> KeyWriteDecision<T> {
    let by_key = matches!(actor, Actor::Key(_));
    Arc::new(move |found: FoundInWrite<'_>| {
        if by_key {
            match found.actor {
                None => return Err(ActorRefused::Revoked.into()),
                Some((key, _)) if key.is_revoked() => return Err(ActorRefused::Revoked.into()),
                Some((key, _)) if key.is_expired(OffsetDateTime::now_utc()) => return Err(ActorRefused::Expired.into()),
                Some((_, false)) => return Err(ActorRefused::OrganizationInactive.into()),
                Some(_) => {}
            }
        }
        if target && found.target.is_none() {
            return Err(KeyOpError::Access(KeyAccessError::NotFound));
        }
        Ok(made.clone())
    })
}

async fn insert(
    keys: &SqlKeyRepository,
    key: &NewApiKey,
    max_active: u32,
    actor: &Actor,
    audit: &AuditRecord,
) -> Result<ApiKey, KeyOpError> {
    keys.insert_key(&key.org_id, actor, decision(actor, false, key.clone()), max_active, audit).await
}

async fn update(
    keys: &SqlKeyRepository,
    org: &OrgId,
    key: &KeyId,
    changes: &KeyChanges,
    actor: &Actor,
    audit: &[AuditRecord],
) -> Result<ApiKey, KeyOpError> {
    keys.update_key(org, key, changes, actor, decision(actor, true, ()), audit).await
}

#[allow(clippy::too_many_arguments)]
async fn roll(
    keys: &SqlKeyRepository,
    org: &OrgId,
    old: &KeyId,
    new: &NewApiKey,
    old_expires_at: OffsetDateTime,
    max_active: u32,
    actor: &Actor,
    audit: &[AuditRecord],
) -> Result<ApiKey, KeyOpError> {
    keys.roll_key(org, old, actor, decision(actor, true, new.clone()), old_expires_at, max_active, audit).await
}

async fn revoke(
    keys: &SqlKeyRepository,
    org: &OrgId,
    key: &KeyId,
    at: OffsetDateTime,
    actor: &Actor,
    audit: &AuditRecord,
) -> Result<ApiKey, KeyOpError> {
    keys.revoke_key(org, key, at, actor, decision(actor, true, ()), audit).await
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                super::$name(super::setup(account_infra::testing::Backend::Sqlite).expect("sqlite")).await
            })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                if let Some(ctx) = super::setup(account_infra::testing::Backend::Postgres) {
                    super::$name(ctx).await
                }
            })*
        }
    };
}

contract!(
    the_schema_check_passes_on_a_migrated_database,
    the_plans_table_holds_the_catalogue,
    a_new_organization_is_stored_with_its_plan_and_first_key,
    emails_are_unique_ignoring_case,
    concurrent_signups_with_one_email_let_exactly_one_win,
    an_unknown_plan_is_refused_and_stores_nothing,
    keys_are_listed_newest_first_with_every_field_intact,
    revoking_is_confined_to_the_organization_and_keeps_the_first_time,
    credentials_are_found_by_hash_with_their_organization,
    concurrent_reads_of_the_same_and_of_different_keys_each_get_their_own_answer,
    recently_used_credentials_come_most_recent_first_within_the_window_and_the_limit,
    recorded_usage_never_goes_backwards,
    strings_round_trip_verbatim,
    concurrent_key_inserts_are_all_kept,
    a_revocation_is_published_once_to_every_feed,
    usage_of_many_keys_is_written_in_one_flush,
    the_active_key_limit_counts_only_active_keys,
    concurrent_creations_cannot_exceed_the_active_key_limit,
    plans_are_listed_cheapest_first,
    deactivating_an_organization_is_stored_and_published_once,
    rolling_replaces_a_key_atomically_and_never_extends_its_expiry,
    a_roll_with_a_grace_period_counts_against_the_active_key_limit,
    renaming_is_confined_to_the_organization_and_published,
    leaked_keys_are_revoked_whatever_their_organization,
    the_audit_trail_is_read_newest_first_in_pages,
    every_key_write_rechecks_its_actor_and_writes_nothing_for_a_refused_one,
    a_revocation_committing_during_a_write_is_waited_for_and_refuses_it,
    a_change_whose_transaction_commits_late_is_still_delivered,
    a_roll_whose_key_is_revoked_meanwhile_writes_nothing,
    an_instance_of_the_previous_release_cannot_poll_the_migrated_feed_and_so_distrusts_its_cache,
    an_unreadable_feed_row_is_reported_missed_and_the_rest_of_its_batch_applied,
    a_postgres_poll_of_over_50000_rows_reports_them_missed_instead_of_holding_them,
    an_allowlist_is_stored_normalised_changed_and_published,
    counts_from_two_writers_add_up_and_a_batch_written_twice_counts_once,
    usage_of_keys_deleted_with_their_organization_is_left_out_and_the_rest_written,
    a_key_deleted_while_its_usage_is_being_written_is_left_out_not_failing_the_batch,
    a_retry_racing_its_first_attempt_still_open_is_applied_once,
    a_last_use_whose_key_row_another_transaction_holds_is_left_for_later_not_waited_for,
    changes_are_stamped_and_pruned_by_the_databases_clock_not_their_writers,
    a_plans_included_requests_change_is_stored_and_clears_every_cache,
);

fn renamed_to(name: &KeyName) -> KeyChanges {
    KeyChanges { name: Some(name.clone()), ..KeyChanges::default() }
}

/// The test's own SQL session on the database, outside the service's pool.
fn raw_session(ctx: &Ctx) -> account_infra::DbConnection {
    ctx.db.connect_once().expect("a session of our own")
}

/// Stored times have microsecond precision.
fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1000 * 1000).expect("valid")
}

fn audit_of(org: &OrgId) -> AuditRecord {
    AuditRecord {
        org_id: org.clone(),
        action: AuditAction::KeyCreated,
        target_id: None,
        actor_key_id: None,
        meta: RequestMeta::new("203.0.113.9".parse().ok(), Some("contract-test")),
        at: now(),
    }
}

fn new_org(name: &str, email: &str, plan: &str) -> NewOrganization {
    NewOrganization {
        id: OsRandomGenerator.organization_id(),
        name: OrgName::new(name).expect("valid"),
        email: EmailAddress::new(email).expect("valid"),
        plan_id: PlanId::new(plan).expect("valid"),
        created_at: now(),
    }
}

fn new_key(org: &OrgId, name: &str, created_at: OffsetDateTime) -> (NewApiKey, PlaintextKey) {
    let plaintext = PlaintextKey::assemble(Environment::Live, &OsRandomGenerator.key_secret());
    let key = NewApiKey {
        id: OsRandomGenerator.key_id(),
        org_id: org.clone(),
        name: KeyName::new(name).expect("valid"),
        hash: plaintext.hash(),
        prefix: plaintext.display_prefix(),
        environment: Environment::Live,
        scopes: Scopes::all(),
        created_at,
        expires_at: Some(created_at + Duration::days(30)),
        allowed_ips: None,
    };
    (key, plaintext)
}

async fn the_schema_check_passes_on_a_migrated_database(ctx: Ctx) {
    ctx.db.check_schema().expect("every migration is applied");
}

/// A service that only reads the database must not migrate it: the check refuses a
/// database without the schema and applies none of it.
#[tokio::test(flavor = "multi_thread")]
async fn the_schema_check_refuses_an_unmigrated_database_and_applies_nothing() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(test_db) = TestDatabase::new(backend) else { continue };
        let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
        let err = db.check_schema().expect_err("nothing is migrated");
        assert!(format!("{err:#}").contains("account-api migrate"), "{err:#}");
        assert!(db.check_schema().is_err(), "the check applied nothing");
        assert!(db.migrate().expect("migrates") > 0, "every migration was still pending");
        db.check_schema().expect("passes once migrated");
    }
}

/// A run without PostgreSQL must not read as a pass: this binary, run again on one
/// PostgreSQL test with no server configured, passes it and says on stderr, by name, that it
/// was skipped.
#[test]
fn a_postgres_test_run_without_a_server_says_it_was_skipped_by_name() {
    let test = "postgres::the_plans_table_holds_the_catalogue";
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

async fn signed_up(ctx: &Ctx, email: &str) -> (Organization, NewApiKey) {
    let org = new_org("Acme", email, "free");
    let (key, _) = new_key(&org.id, "Default Key", org.created_at);
    let stored = ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect("created");
    (stored, key)
}

async fn the_plans_table_holds_the_catalogue(ctx: Ctx) {
    for (id, name, price, included) in
        [("free", "Free", 0, 10_000), ("starter", "Starter", 4900, 1_000_000), ("pro", "Pro", 19900, 10_000_000)]
    {
        let plan = ctx.accounts.find_plan(&PlanId::new(id).expect("valid")).await.expect("read").expect("exists");
        assert_eq!(
            (plan.name.as_str(), plan.base_price_cents, plan.included_requests_per_month),
            (name, price, included)
        );
    }
    assert_eq!(ctx.accounts.find_plan(&PlanId::new("platinum").expect("valid")).await.expect("read"), None);
}

async fn a_new_organization_is_stored_with_its_plan_and_first_key(ctx: Ctx) {
    let org = new_org("Acme", "admin@acme.test", "starter");
    let (key, _) = new_key(&org.id, "Default Key", org.created_at);
    let stored = ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect("created");
    assert_eq!(stored.id, org.id);
    assert_eq!(stored.plan.name, "Starter");
    assert!(stored.is_active);
    assert_eq!(stored.created_at, org.created_at);
    assert_eq!(ctx.accounts.find_organization(&org.id).await.expect("read"), Some(stored));
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed"), vec![key.into_stored()]);
}

async fn emails_are_unique_ignoring_case(ctx: Ctx) {
    signed_up(&ctx, "Admin@Acme.test").await;
    let org = new_org("Other", "admin@ACME.test", "free");
    let (key, _) = new_key(&org.id, "Default Key", org.created_at);
    let err = ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect_err("taken");
    assert!(matches!(err, CreateOrganizationError::EmailTaken), "{err:?}");
    // Neither the organization nor its key was stored.
    assert_eq!(ctx.accounts.find_organization(&org.id).await.expect("read"), None);
    assert!(ctx.keys.list_keys(&org.id).await.expect("listed").is_empty());
}

async fn concurrent_signups_with_one_email_let_exactly_one_win(ctx: Ctx) {
    let accounts = Arc::new(ctx.accounts.clone());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let accounts = accounts.clone();
            tokio::spawn(async move {
                let org = new_org("Racer", if i % 2 == 0 { "race@acme.test" } else { "RACE@acme.test" }, "free");
                let (key, _) = new_key(&org.id, "Default Key", org.created_at);
                accounts.create_organization(&org, &key, &audit_of(&org.id)).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("joined") {
            Ok(_) => wins += 1,
            Err(CreateOrganizationError::EmailTaken) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
}

async fn an_unknown_plan_is_refused_and_stores_nothing(ctx: Ctx) {
    let org = new_org("Acme", "plan@acme.test", "platinum");
    let (key, _) = new_key(&org.id, "Default Key", org.created_at);
    let err = ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect_err("no such plan");
    assert!(matches!(err, CreateOrganizationError::UnknownPlan), "{err:?}");
    assert_eq!(ctx.accounts.find_organization(&org.id).await.expect("read"), None);
}

async fn keys_are_listed_newest_first_with_every_field_intact(ctx: Ctx) {
    let (org, first) = signed_up(&ctx, "list@acme.test").await;
    let (second, _) = new_key(&org.id, "Second", first.created_at + Duration::seconds(1));
    let (third, _) = new_key(&org.id, "Third", first.created_at + Duration::seconds(2));
    for key in [&second, &third] {
        assert_eq!(
            insert(&ctx.keys, key, 10_000, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted"),
            key.clone().into_stored()
        );
    }
    let revoked_at = now();
    revoke(&ctx.keys, &org.id, &second.id, revoked_at, &Actor::Operator, &audit_of(&org.id)).await.expect("found");
    let listed = ctx.keys.list_keys(&org.id).await.expect("listed");
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["Third", "Second", "Default Key"]);
    let mut expected = second.clone().into_stored();
    expected.revoked_at = Some(revoked_at);
    assert_eq!(listed[1], expected);
    // Another organization's list does not show them.
    let (other, _) = signed_up(&ctx, "other@acme.test").await;
    assert_eq!(ctx.keys.list_keys(&other.id).await.expect("listed").len(), 1);
}

async fn revoking_is_confined_to_the_organization_and_keeps_the_first_time(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "revoke@acme.test").await;
    let (other, _) = signed_up(&ctx, "intruder@acme.test").await;
    let foreign = revoke(&ctx.keys, &other.id, &key.id, now(), &Actor::Operator, &audit_of(&org.id)).await;
    assert!(matches!(foreign, Err(KeyOpError::Access(KeyAccessError::NotFound))), "{foreign:?}");
    let missing = KeyId::new("key_missing").expect("valid");
    let missing = revoke(&ctx.keys, &org.id, &missing, now(), &Actor::Operator, &audit_of(&org.id)).await;
    assert!(matches!(missing, Err(KeyOpError::Access(KeyAccessError::NotFound))), "{missing:?}");
    let first = now();
    let revoked =
        revoke(&ctx.keys, &org.id, &key.id, first, &Actor::Operator, &audit_of(&org.id)).await.expect("found");
    assert_eq!(revoked.revoked_at, Some(first));
    let again = revoke(&ctx.keys, &org.id, &key.id, first + Duration::minutes(5), &Actor::Operator, &audit_of(&org.id))
        .await
        .expect("found");
    assert_eq!(again.revoked_at, Some(first));
}

async fn credentials_are_found_by_hash_with_their_organization(ctx: Ctx) {
    let org = new_org("Acme", "cred@acme.test", "pro");
    let (key, plaintext) = new_key(&org.id, "Default Key", org.created_at);
    ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect("created");
    let credential = ctx.keys.find_credential(&plaintext.hash()).await.expect("read").expect("found");
    assert_eq!(credential.key, key.clone().into_stored());
    assert!(credential.organization.is_active);
    assert_eq!(credential.organization.plan.id.as_str(), "pro");
    assert_eq!(credential.organization.id, org.id);
    let stranger = PlaintextKey::assemble(Environment::Live, &OsRandomGenerator.key_secret());
    assert_eq!(ctx.keys.find_credential(&stranger.hash()).await.expect("read"), None);
}

/// Reads are answered in batches: a batch holding one key several times, other keys and
/// unknown ones must still give every read its own answer.
async fn concurrent_reads_of_the_same_and_of_different_keys_each_get_their_own_answer(ctx: Ctx) {
    let org = new_org("Acme", "batch@acme.test", "pro");
    let (first, first_plain) = new_key(&org.id, "First", org.created_at);
    ctx.accounts.create_organization(&org, &first, &audit_of(&org.id)).await.expect("created");
    let (second, second_plain) = new_key(&org.id, "Second", org.created_at);
    insert(&ctx.keys, &second, 10_000, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted");
    let unknown = PlaintextKey::assemble(Environment::Live, &OsRandomGenerator.key_secret());
    let asked: Vec<(KeyHash, Option<KeyId>)> = (0..96)
        .map(|i| match i % 4 {
            0 | 1 => (first_plain.hash(), Some(first.id.clone())),
            2 => (second_plain.hash(), Some(second.id.clone())),
            _ => (unknown.hash(), None),
        })
        .collect();
    let keys = Arc::new(ctx.keys.clone());
    let reads = asked.iter().map(|(hash, _)| {
        let (keys, hash) = (keys.clone(), *hash);
        tokio::spawn(async move { keys.find_credential(&hash).await })
    });
    let answers = futures_util::future::join_all(reads).await;
    for ((_, expected), answer) in asked.iter().zip(answers) {
        let found = answer.expect("joined").expect("read").map(|c| c.key.id);
        assert_eq!(&found, expected);
    }
}

async fn recently_used_credentials_come_most_recent_first_within_the_window_and_the_limit(ctx: Ctx) {
    let (org, first) = signed_up(&ctx, "recent@acme.test").await;
    let mut keys = vec![first];
    for name in ["B", "C", "Never used"] {
        let (key, _) = new_key(&org.id, name, now());
        insert(&ctx.keys, &key, 10_000, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted");
        keys.push(key);
    }
    let at = now();
    let used: Vec<_> =
        keys[..3].iter().zip([120, 5, 30]).map(|(k, ago)| (k.id.clone(), at - Duration::minutes(ago))).collect();
    ctx.keys.record_usage(&uses(1, used)).await.expect("recorded");

    let recent = ctx.keys.recently_used_credentials(at - Duration::hours(1), 10).await.expect("read");
    let ids: Vec<_> = recent.iter().map(|(_, c)| c.key.id.clone()).collect();
    assert_eq!(ids, [keys[1].id.clone(), keys[2].id.clone()], "within the hour, most recent first");
    for (hash, credential) in &recent {
        let key = keys.iter().find(|k| k.id == credential.key.id).expect("one of ours");
        assert_eq!(*hash, key.hash);
        assert_eq!(credential.organization.id, org.id);
    }
    assert!(
        std::sync::Arc::ptr_eq(&recent[0].1.organization, &recent[1].1.organization),
        "the keys of one organization share one copy of it"
    );
    let limited = ctx.keys.recently_used_credentials(at - Duration::hours(3), 1).await.expect("read");
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].1.key.id, keys[1].id);
}

async fn recorded_usage_never_goes_backwards(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "usage@acme.test").await;
    let later = now() + Duration::minutes(1);
    ctx.keys.record_usage(&uses(1, vec![(key.id.clone(), later)])).await.expect("recorded");
    ctx.keys.record_usage(&uses(2, vec![(key.id.clone(), later - Duration::seconds(30))])).await.expect("recorded");
    let listed = ctx.keys.list_keys(&org.id).await.expect("listed");
    assert_eq!(listed[0].last_used_at, Some(later));
}

/// A batch of last uses only, from the writer `wrt_test`.
fn uses(sequence: u64, last_used: Vec<(KeyId, OffsetDateTime)>) -> UsageBatch {
    UsageBatch { writer: "wrt_test".into(), sequence, last_used, counts: vec![] }
}

fn counted(writer: &str, sequence: u64, key: &KeyId, day: time::Date, outcome: VerificationCode, n: i64) -> UsageBatch {
    let counts = vec![UsageCount { key_id: key.clone(), day, outcome, count: n }];
    UsageBatch { writer: writer.into(), sequence, last_used: vec![], counts }
}

async fn counts_from_two_writers_add_up_and_a_batch_written_twice_counts_once(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "counts@acme.test").await;
    let day = now().date();
    let valid = VerificationCode::Valid;
    ctx.keys.record_usage(&counted("wrt_a", 1, &key.id, day, valid, 5)).await.expect("recorded");
    ctx.keys.record_usage(&counted("wrt_b", 1, &key.id, day, valid, 7)).await.expect("recorded");
    // wrt_a's first batch again, as after a commit whose outcome was unknown: applied once.
    ctx.keys.record_usage(&counted("wrt_a", 1, &key.id, day, valid, 5)).await.expect("recorded");
    ctx.keys.record_usage(&counted("wrt_a", 2, &key.id, day, VerificationCode::Revoked, 2)).await.expect("recorded");
    // A use counted valid and then refused for its scope, the -1 in a later batch.
    ctx.keys.record_usage(&counted("wrt_a", 3, &key.id, day, valid, -1)).await.expect("recorded");
    let mut rows: Vec<(VerificationCode, i64)> = ctx
        .keys
        .usage_of(&org.id, day, day)
        .await
        .expect("read")
        .into_iter()
        .map(|r| (r.count.outcome, r.count.count))
        .collect();
    rows.sort();
    assert_eq!(rows, [(valid, 11), (VerificationCode::Revoked, 2)]);
    let month = ctx.keys.monthly_usage(day, day).await.expect("read");
    let ours = month.iter().find(|m| m.org_id == org.id).expect("listed");
    assert_eq!((ours.valid, ours.refused, ours.valid_test), (11, 2, 0));
    // Another organization's range holds nothing of this one; pruning drops past days.
    assert!(ctx
        .keys
        .usage_of(&org.id, day + Duration::days(1), day + Duration::days(2))
        .await
        .expect("read")
        .is_empty());
    assert_eq!(ctx.keys.prune_usage(day + Duration::days(1)).await.expect("pruned"), 2);
    assert!(ctx.keys.usage_of(&org.id, day, day).await.expect("read").is_empty());
}

async fn a_plans_included_requests_change_is_stored_and_clears_every_cache(ctx: Ctx) {
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    assert!(feed.poll().await.expect("polled").changes.is_empty());
    let starter = PlanId::new("starter").expect("valid");
    let plan = ctx.accounts.set_plan_included(&starter, 42).await.expect("set").expect("known plan");
    assert_eq!(plan.included_requests_per_month, 42);
    assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Everything]);
    let gold = PlanId::new("gold").expect("valid");
    assert_eq!(ctx.accounts.set_plan_included(&gold, 1).await.expect("set"), None);
    assert!(feed.poll().await.expect("polled").changes.is_empty(), "an unknown plan publishes nothing");
}

async fn strings_round_trip_verbatim(ctx: Ctx) {
    let name = "Ünïcødé 🚀 <b>bold</b> '); DROP TABLE api_keys; -- \"quoted\" \\ back";
    let org = new_org(name, "o'brien+tag@sub.acme.test", "free");
    let (key, _) = new_key(&org.id, name, org.created_at);
    ctx.accounts.create_organization(&org, &key, &audit_of(&org.id)).await.expect("created");
    let stored = ctx.accounts.find_organization(&org.id).await.expect("read").expect("found");
    assert_eq!(stored.name.as_str(), name);
    assert_eq!(stored.email.as_str(), "o'brien+tag@sub.acme.test");
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed")[0].name.as_str(), name);
}

async fn concurrent_key_inserts_are_all_kept(ctx: Ctx) {
    let (org, _) = signed_up(&ctx, "burst@acme.test").await;
    let keys = Arc::new(ctx.keys.clone());
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (keys, org_id) = (keys.clone(), org.id.clone());
            tokio::spawn(async move {
                let (key, _) = new_key(&org_id, &format!("Key {i}"), now());
                insert(&keys, &key, 10_000, &Actor::Operator, &audit_of(&org_id)).await.expect("inserted").id
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for task in tasks {
        ids.insert(task.await.expect("joined"));
    }
    assert_eq!(ids.len(), 50);
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 51);
}

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

async fn usage_of_many_keys_is_written_in_one_flush(ctx: Ctx) {
    let (org, first) = signed_up(&ctx, "many@acme.test").await;
    let mut usage = vec![(first.id.clone(), now())];
    for i in 0..600 {
        let (key, _) = new_key(&org.id, &format!("K{i}"), now());
        insert(&ctx.keys, &key, 10_000, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted");
        usage.push((key.id, now() + Duration::seconds(i)));
    }
    ctx.keys.record_usage(&uses(1, usage.clone())).await.expect("recorded");
    let listed = ctx.keys.list_keys(&org.id).await.expect("listed");
    assert_eq!(listed.len(), 601);
    for key in &listed {
        let expected = usage.iter().find(|(id, _)| *id == key.id).map(|(_, at)| *at);
        assert_eq!(key.last_used_at, expected, "{}", key.name.as_str());
    }
}

async fn the_active_key_limit_counts_only_active_keys(ctx: Ctx) {
    let (org, first) = signed_up(&ctx, "limit@acme.test").await;
    let (second, _) = new_key(&org.id, "Second", now());
    insert(&ctx.keys, &second, 2, &Actor::Operator, &audit_of(&org.id)).await.expect("2 of 2");
    let (third, _) = new_key(&org.id, "Third", now());
    let err = insert(&ctx.keys, &third, 2, &Actor::Operator, &audit_of(&org.id)).await.expect_err("3 of 2");
    assert!(matches!(err, KeyOpError::LimitReached(_)), "{err:?}");
    // A revoked key and an expired key free their places.
    revoke(&ctx.keys, &org.id, &first.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    insert(&ctx.keys, &third, 2, &Actor::Operator, &audit_of(&org.id)).await.expect("a place was freed");
    let (mut expired, _) = new_key(&org.id, "Expired", now());
    expired.expires_at = Some(expired.created_at - Duration::seconds(1));
    assert!(matches!(
        insert(&ctx.keys, &expired, 2, &Actor::Operator, &audit_of(&org.id)).await,
        Err(KeyOpError::LimitReached(_))
    ));
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 3, "the refused keys were not stored");
}

async fn concurrent_creations_cannot_exceed_the_active_key_limit(ctx: Ctx) {
    let (org, _) = signed_up(&ctx, "race-limit@acme.test").await;
    let keys = Arc::new(ctx.keys.clone());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (keys, org_id) = (keys.clone(), org.id.clone());
            tokio::spawn(async move {
                let (key, _) = new_key(&org_id, &format!("Racer {i}"), now());
                insert(&keys, &key, 10, &Actor::Operator, &audit_of(&org_id)).await
            })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.expect("joined") {
            Ok(_) => created += 1,
            Err(KeyOpError::LimitReached(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(created, 9, "the signup key plus 9 make the limit of 10");
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 10);
}

async fn plans_are_listed_cheapest_first(ctx: Ctx) {
    let plans = ctx.accounts.list_plans().await.expect("listed");
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "starter", "pro"]);
}

async fn deactivating_an_organization_is_stored_and_published_once(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "deactivate@acme.test").await;
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    let changed =
        ctx.accounts.set_organization_active(&org.id, false, &audit_of(&org.id)).await.expect("ran").expect("found");
    assert!(!changed.is_active);
    assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Organization(org.id.clone())]);
    let credential = ctx.keys.find_credential(&key.hash).await.expect("read").expect("found");
    assert!(!credential.organization.is_active);
    let trail_before = ctx.accounts.list_audit_events(&org.id, None, 50).await.expect("trail").len();
    let again =
        ctx.accounts.set_organization_active(&org.id, false, &audit_of(&org.id)).await.expect("ran").expect("found");
    assert!(!again.is_active);
    assert!(feed.poll().await.expect("polled").changes.is_empty(), "no change to publish");
    let trail_after = ctx.accounts.list_audit_events(&org.id, None, 50).await.expect("trail").len();
    assert_eq!(trail_after, trail_before, "nothing happened, nothing is audited");
    let back =
        ctx.accounts.set_organization_active(&org.id, true, &audit_of(&org.id)).await.expect("ran").expect("found");
    assert!(back.is_active);
    let missing = OrgId::new("org_missing").expect("valid");
    assert_eq!(ctx.accounts.set_organization_active(&missing, false, &audit_of(&missing)).await.expect("ran"), None);
}

async fn rolling_replaces_a_key_atomically_and_never_extends_its_expiry(ctx: Ctx) {
    let (org, old) = signed_up(&ctx, "roll@acme.test").await; // expires in 30 days
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    let (new, _) = new_key(&org.id, "Default Key", now());
    let stored = roll(
        &ctx.keys,
        &org.id,
        &old.id,
        &new,
        now() + Duration::hours(1),
        10_000,
        &Actor::Operator,
        &[audit_of(&org.id)],
    )
    .await
    .expect("rolled");
    assert_eq!(stored.id, new.id);
    let old_now = ctx.keys.find_key(&org.id, &old.id).await.expect("read").expect("found");
    assert!(old_now.expires_at.expect("expires") <= now() + Duration::hours(1));
    assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Key(old.hash)]);
    // A grace period longer than the remaining life does not extend it.
    let (newer, _) = new_key(&org.id, "Default Key", now());
    roll(
        &ctx.keys,
        &org.id,
        &new.id,
        &newer,
        now() + Duration::days(400),
        10_000,
        &Actor::Operator,
        &[audit_of(&org.id)],
    )
    .await
    .expect("rolled");
    let rolled = ctx.keys.find_key(&org.id, &new.id).await.expect("read").expect("found");
    assert_eq!(rolled.expires_at, new.expires_at);
    // Revoked keys and other organizations' keys are not rolled.
    revoke(&ctx.keys, &org.id, &newer.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    let (again, _) = new_key(&org.id, "Default Key", now());
    let err = roll(&ctx.keys, &org.id, &newer.id, &again, now(), 10_000, &Actor::Operator, &[audit_of(&org.id)])
        .await
        .expect_err("revoked");
    assert!(matches!(err, KeyOpError::NotActive), "{err:?}");
    let (other, _) = signed_up(&ctx, "roll-other@acme.test").await;
    let err = roll(&ctx.keys, &other.id, &old.id, &again, now(), 10_000, &Actor::Operator, &[audit_of(&other.id)])
        .await
        .expect_err("foreign");
    assert!(matches!(err, KeyOpError::Access(KeyAccessError::NotFound)), "{err:?}");
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 3, "refused rolls stored nothing");
}

async fn a_roll_with_a_grace_period_counts_against_the_active_key_limit(ctx: Ctx) {
    let (org, first) = signed_up(&ctx, "roll-limit@acme.test").await;
    let (second, _) = new_key(&org.id, "Second", now());
    insert(&ctx.keys, &second, 2, &Actor::Operator, &audit_of(&org.id)).await.expect("2 of 2");
    // At the limit, a grace period would make three active keys: refused, nothing stored.
    let (replacement, _) = new_key(&org.id, "Default Key", now());
    let err = roll(
        &ctx.keys,
        &org.id,
        &first.id,
        &replacement,
        now() + Duration::hours(1),
        2,
        &Actor::Operator,
        &[audit_of(&org.id)],
    )
    .await
    .expect_err("over the limit");
    assert!(matches!(err, KeyOpError::LimitReached(_)), "{err:?}");
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 2, "the refused roll stored nothing");
    let untouched = ctx.keys.find_key(&org.id, &first.id).await.expect("read").expect("found");
    assert_eq!(untouched.expires_at, first.expires_at, "the refused roll moved no expiry");
    // Ending the old key at once keeps the count: allowed at the limit.
    let at_once = replacement.created_at;
    roll(&ctx.keys, &org.id, &first.id, &replacement, at_once, 2, &Actor::Operator, &[audit_of(&org.id)])
        .await
        .expect("count unchanged");
    let (another, _) = new_key(&org.id, "Third", now());
    assert!(matches!(
        insert(&ctx.keys, &another, 2, &Actor::Operator, &audit_of(&org.id)).await,
        Err(KeyOpError::LimitReached(_))
    ));
    // Below the limit, a grace period is fine.
    let (next, _) = new_key(&org.id, "Second", now());
    roll(&ctx.keys, &org.id, &second.id, &next, now() + Duration::hours(1), 3, &Actor::Operator, &[audit_of(&org.id)])
        .await
        .expect("3 of 3");
}

async fn renaming_is_confined_to_the_organization_and_published(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "rename@acme.test").await;
    let (other, _) = signed_up(&ctx, "rename-other@acme.test").await;
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    let name = KeyName::new("Renamed").expect("valid");
    let foreign =
        update(&ctx.keys, &other.id, &key.id, &renamed_to(&name), &Actor::Operator, &[audit_of(&other.id)]).await;
    assert!(matches!(foreign, Err(KeyOpError::Access(KeyAccessError::NotFound))), "{foreign:?}");
    let renamed = update(&ctx.keys, &org.id, &key.id, &renamed_to(&name), &Actor::Operator, &[audit_of(&org.id)])
        .await
        .expect("found");
    assert_eq!(renamed.name, name);
    assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Key(key.hash)]);
}

async fn leaked_keys_are_revoked_whatever_their_organization(ctx: Ctx) {
    let (a, key_a) = signed_up(&ctx, "leak-a@acme.test").await;
    let (b, key_b) = signed_up(&ctx, "leak-b@acme.test").await;
    let stranger = PlaintextKey::assemble(Environment::Live, &OsRandomGenerator.key_secret()).hash();
    let meta = RequestMeta::new("198.51.100.4".parse().ok(), Some("scanner/1.0"));
    let revoked = ctx.keys.revoke_leaked(&[key_a.hash, key_b.hash, stranger], now(), &meta).await.expect("ran");
    assert_eq!(revoked, 2);
    assert_eq!(ctx.keys.revoke_leaked(&[key_a.hash], now(), &meta).await.expect("ran"), 0, "already revoked");
    for (org, key) in [(&a, &key_a), (&b, &key_b)] {
        assert!(ctx.keys.find_key(&org.id, &key.id).await.expect("read").expect("found").is_revoked());
        let trail = ctx.accounts.list_audit_events(&org.id, None, 10).await.expect("trail");
        let event = &trail[0].record;
        assert_eq!(event.action, AuditAction::KeyLeakReported);
        assert_eq!(event.target_id.as_deref(), Some(key.id.as_str()));
        assert_eq!(event.meta, meta);
    }
}

async fn the_audit_trail_is_read_newest_first_in_pages(ctx: Ctx) {
    let (org, _) = signed_up(&ctx, "trail@acme.test").await;
    for i in 0..5 {
        let (key, _) = new_key(&org.id, &format!("K{i}"), now());
        let mut audit = audit_of(&org.id);
        audit.target_id = Some(key.id.to_string());
        insert(&ctx.keys, &key, 100, &Actor::Operator, &audit).await.expect("inserted");
    }
    let first = ctx.accounts.list_audit_events(&org.id, None, 3).await.expect("page");
    assert_eq!(first.len(), 3);
    assert!(first.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let rest = ctx.accounts.list_audit_events(&org.id, Some(first[2].id), 10).await.expect("page");
    assert_eq!(rest.len(), 3, "two more creations and the signup");
    assert!(rest[0].id < first[2].id);
    assert_eq!(rest.last().map(|e| e.record.action), Some(AuditAction::KeyCreated), "the signup's own record");
    let (other, _) = signed_up(&ctx, "trail-other@acme.test").await;
    assert_eq!(ctx.accounts.list_audit_events(&other.id, None, 10).await.expect("page").len(), 1);
}

async fn every_key_write_rechecks_its_actor_and_writes_nothing_for_a_refused_one(ctx: Ctx) {
    let (org, actor) = signed_up(&ctx, "actor@acme.test").await;
    let (target, _) = new_key(&org.id, "Target", now());
    insert(&ctx.keys, &target, 100, &Actor::Key(actor.id.clone()), &audit_of(&org.id)).await.expect("active actor");
    let trail = ctx.accounts.list_audit_events(&org.id, None, 100).await.expect("trail").len();
    let writes_by = |who: KeyId| {
        let (keys, org_id, target_id) = (ctx.keys.clone(), org.id.clone(), target.id.clone());
        async move {
            let who = Actor::Key(who);
            let (fresh, _) = new_key(&org_id, "Fresh", now());
            let name = KeyName::new("Renamed").expect("valid");
            [
                match insert(&keys, &fresh, 100, &who, &audit_of(&org_id)).await {
                    Err(KeyOpError::Actor(refused)) => Some(refused),
                    other => panic!("{other:?}"),
                },
                match update(&keys, &org_id, &target_id, &renamed_to(&name), &who, &[audit_of(&org_id)]).await {
                    Err(KeyOpError::Actor(refused)) => Some(refused),
                    other => panic!("{other:?}"),
                },
                match roll(&keys, &org_id, &target_id, &fresh, now(), 100, &who, &[audit_of(&org_id)]).await {
                    Err(KeyOpError::Actor(refused)) => Some(refused),
                    other => panic!("{other:?}"),
                },
                match revoke(&keys, &org_id, &target_id, now(), &who, &audit_of(&org_id)).await {
                    Err(KeyOpError::Actor(refused)) => Some(refused),
                    other => panic!("{other:?}"),
                },
            ]
        }
    };
    // An expired actor.
    let (mut expired, _) = new_key(&org.id, "Expired", now() - Duration::days(2));
    expired.expires_at = Some(now() - Duration::days(1));
    insert(&ctx.keys, &expired, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("stored");
    assert_eq!(writes_by(expired.id.clone()).await, [Some(ActorRefused::Expired); 4]);
    // A revoked actor (revoked after it was authenticated).
    revoke(&ctx.keys, &org.id, &actor.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");
    assert_eq!(writes_by(actor.id.clone()).await, [Some(ActorRefused::Revoked); 4]);
    // An actor of a deactivated organization.
    let (second, _) = new_key(&org.id, "Second", now());
    insert(&ctx.keys, &second, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("stored");
    ctx.accounts.set_organization_active(&org.id, false, &audit_of(&org.id)).await.expect("ran");
    assert_eq!(writes_by(second.id.clone()).await, [Some(ActorRefused::OrganizationInactive); 4]);
    // Nothing was written by the refused writes.
    let stored = ctx.keys.find_key(&org.id, &target.id).await.expect("read").expect("found");
    assert_eq!((stored.name.as_str(), stored.revoked_at, stored.expires_at), ("Target", None, target.expires_at));
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 4, "signup, target, expired, second");
    let after = ctx.accounts.list_audit_events(&org.id, None, 100).await.expect("trail").len();
    assert_eq!(after, trail + 4, "the operator's insertions, revocation and deactivation only");
}

async fn a_revocation_committing_during_a_write_is_waited_for_and_refuses_it(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    let (org, actor) = signed_up(&ctx, "lock@acme.test").await;
    let mut session = raw_session(&ctx);
    let revoke = format!("UPDATE api_keys SET revoked_at = 1 WHERE id = '{}'", actor.id);
    if matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_)) {
        // One writer at a time: a revocation either committed before the write began or
        // commits after it; the first case is refused.
        session.batch_execute(&revoke).expect("revoked");
    } else {
        session.batch_execute(&format!("BEGIN; {revoke};")).expect("revocation in flight");
    }
    let keys = ctx.keys.clone();
    let (org_id, actor_id) = (org.id.clone(), actor.id.clone());
    let write = tokio::spawn(async move {
        let (fresh, _) = new_key(&org_id, "Fresh", now());
        insert(&keys, &fresh, 100, &Actor::Key(actor_id), &audit_of(&org_id)).await
    });
    if !matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_)) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert!(!write.is_finished(), "the write waits for the revocation holding the actor's row");
        session.batch_execute("COMMIT").expect("revocation committed");
    }
    let outcome = write.await.expect("joined");
    assert!(matches!(outcome, Err(KeyOpError::Actor(ActorRefused::Revoked))), "{outcome:?}");
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 1, "nothing written");
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

async fn a_roll_whose_key_is_revoked_meanwhile_writes_nothing(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    if matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_)) {
        return; // one writer at a time: no revocation can commit inside the roll
    }
    let (org, actor) = signed_up(&ctx, "roll-race@acme.test").await;
    let (target, _) = new_key(&org.id, "Target", now());
    insert(&ctx.keys, &target, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("stored");
    // A leak report's revocation takes no organization lock: hold it on the target's row.
    let mut session = raw_session(&ctx);
    session
        .batch_execute(&format!("BEGIN; UPDATE api_keys SET revoked_at = 1 WHERE id = '{}';", target.id))
        .expect("revocation in flight");
    let keys = ctx.keys.clone();
    let (org_id, target_id, actor_id) = (org.id.clone(), target.id.clone(), actor.id.clone());
    let roll = tokio::spawn(async move {
        let (fresh, _) = new_key(&org_id, "Target", now());
        roll(&keys, &org_id, &target_id, &fresh, now(), 100, &Actor::Key(actor_id), &[audit_of(&org_id)]).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    session.batch_execute("COMMIT").expect("revoked");
    let outcome = roll.await.expect("joined");
    assert!(matches!(outcome, Err(KeyOpError::NotActive)), "{outcome:?}");
    assert_eq!(ctx.keys.list_keys(&org.id).await.expect("listed").len(), 2, "no successor to a revoked key");
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

async fn an_allowlist_is_stored_normalised_changed_and_published(ctx: Ctx) {
    let (org, _) = signed_up(&ctx, "allowlist@acme.test").await;
    let (mut key, plaintext) = new_key(&org.id, "Limited", now());
    key.allowed_ips = AllowedIps::parse(&["10.0.0.0/8", "::ffff:192.0.2.1", "2001:db8::/32"]).expect("valid");
    insert(&ctx.keys, &key, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("stored");
    let stored = ctx.keys.find_credential(&plaintext.hash()).await.expect("read").expect("found");
    assert_eq!(stored.key.allowed_ips.expect("limited").items(), ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]);
    let feed = SqlChangeFeed::start(ctx.db.clone()).await.expect("feed");
    let narrower = AllowedIps::parse(&["10.1.0.0/16"]).expect("valid");
    let changes = KeyChanges { name: None, allowed_ips: Some(narrower.clone()) };
    let changed = update(&ctx.keys, &org.id, &key.id, &changes, &Actor::Operator, &[]).await.expect("changed");
    assert_eq!((changed.allowed_ips, changed.name.as_str()), (narrower, "Limited"), "the name is kept");
    assert_eq!(feed.poll().await.expect("polled").changes, vec![Change::Key(plaintext.hash())]);
    let anywhere = KeyChanges { name: None, allowed_ips: Some(None) };
    let changed = update(&ctx.keys, &org.id, &key.id, &anywhere, &Actor::Operator, &[]).await.expect("changed");
    assert_eq!(changed.allowed_ips, None);
}

/// The uses of the organization's keys stored for today, all outcomes, read through the repository.
async fn stored_uses(ctx: &Ctx, org: &OrgId) -> i64 {
    let day = now().date();
    ctx.keys.usage_of(org, day, day).await.expect("read").iter().map(|r| r.count.count).sum()
}

/// Waits until some session of the test database waits for a lock another holds.
async fn until_a_session_waits_for_a_lock(ctx: &Ctx) {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut watcher = raw_session(ctx);
    for _ in 0..500 {
        let waiting: Waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .get_result(&mut watcher)
        .expect("pg_stat_activity");
        if waiting.n > 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no session ever waited for a lock");
}

fn is_sqlite(ctx: &Ctx) -> bool {
    matches!(ctx.db.target(), account_infra::DatabaseTarget::Sqlite(_))
}

async fn usage_of_keys_deleted_with_their_organization_is_left_out_and_the_rest_written(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    let (gone, gone_key) = signed_up(&ctx, "erased@acme.test").await;
    let (kept, kept_key) = signed_up(&ctx, "kept@acme.test").await;
    // An erasure request, carried out by hand: the keys and their counts go with it.
    raw_session(&ctx).batch_execute(&format!("DELETE FROM organizations WHERE id = '{}'", gone.id)).expect("erased");
    let day = now().date();
    let used = now();
    let counts = [&gone_key, &kept_key]
        .iter()
        .map(|k| UsageCount { key_id: k.id.clone(), day, outcome: VerificationCode::Valid, count: 4 })
        .collect();
    let last_used = vec![(gone_key.id.clone(), used), (kept_key.id.clone(), used)];
    let batch = UsageBatch { writer: "wrt_erase".into(), sequence: 1, last_used, counts };
    let missing = ctx.keys.record_usage(&batch).await.expect("written, not refused on the foreign key");
    assert_eq!(missing.missing, vec![gone_key.id]);
    assert_eq!(stored_uses(&ctx, &kept.id).await, 4);
    assert_eq!(ctx.keys.list_keys(&kept.id).await.expect("listed")[0].last_used_at, Some(used));
    // Written once: the same batch again changes nothing and reports nothing.
    assert_eq!(ctx.keys.record_usage(&batch).await.expect("applied already"), UsageRecorded::default());
    assert_eq!(stored_uses(&ctx, &kept.id).await, 4);
}

async fn a_key_deleted_while_its_usage_is_being_written_is_left_out_not_failing_the_batch(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    if is_sqlite(&ctx) {
        return; // one writer at a time: the deletion commits wholly before or after the write
    }
    let (gone, gone_key) = signed_up(&ctx, "erased-late@acme.test").await;
    let (kept, kept_key) = signed_up(&ctx, "kept-late@acme.test").await;
    let mut session = raw_session(&ctx);
    session.batch_execute(&format!("BEGIN; DELETE FROM organizations WHERE id = '{}';", gone.id)).expect("in flight");
    let keys = ctx.keys.clone();
    let counts = [&gone_key, &kept_key]
        .iter()
        .map(|k| UsageCount { key_id: k.id.clone(), day: now().date(), outcome: VerificationCode::Valid, count: 2 })
        .collect();
    let batch = UsageBatch { writer: "wrt_race".into(), sequence: 1, last_used: vec![], counts };
    let write = tokio::spawn(async move { keys.record_usage(&batch).await });
    until_a_session_waits_for_a_lock(&ctx).await;
    session.batch_execute("COMMIT").expect("erased");
    let missing = write.await.expect("joined").expect("written, not refused on the foreign key");
    assert_eq!(missing.missing, vec![gone_key.id]);
    assert_eq!(stored_uses(&ctx, &kept.id).await, 2);
}

async fn a_retry_racing_its_first_attempt_still_open_is_applied_once(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    if is_sqlite(&ctx) {
        return; // one writer at a time: the first attempt has committed or rolled back
    }
    let (org, key) = signed_up(&ctx, "retry-race@acme.test").await;
    let batch = counted("wrt_race", 1, &key.id, now().date(), VerificationCode::Valid, 5);
    // The first attempt, its transaction still open (its commit's answer lost, say).
    let mut first = raw_session(&ctx);
    first.batch_execute("BEGIN").expect("begun");
    account_infra::testing::record_usage_on(&mut first, &batch).expect("first attempt written");
    let keys = ctx.keys.clone();
    let retried = batch.clone();
    let retry = tokio::spawn(async move { keys.record_usage(&retried).await });
    until_a_session_waits_for_a_lock(&ctx).await;
    first.batch_execute("COMMIT").expect("first attempt committed");
    retry.await.expect("joined").expect("the retry ran");
    assert_eq!(stored_uses(&ctx, &org.id).await, 5, "counted once");
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

async fn a_last_use_whose_key_row_another_transaction_holds_is_left_for_later_not_waited_for(ctx: Ctx) {
    use diesel::connection::SimpleConnection as _;
    if is_sqlite(&ctx) {
        return; // one writer at a time: no row is held by another open transaction
    }
    let (held_org, held_key) = signed_up(&ctx, "held-row@acme.test").await;
    let (free_org, free_key) = signed_up(&ctx, "free-row@acme.test").await;
    // An operator's transaction, left open, holding one key's row.
    let mut session = raw_session(&ctx);
    session
        .batch_execute(&format!("BEGIN; UPDATE api_keys SET name = 'Held' WHERE id = '{}';", held_key.id))
        .expect("held");
    let used = now();
    let counts = [&held_key, &free_key]
        .iter()
        .map(|k| UsageCount { key_id: k.id.clone(), day: used.date(), outcome: VerificationCode::Valid, count: 3 })
        .collect();
    let last_used = vec![(held_key.id.clone(), used), (free_key.id.clone(), used)];
    let batch = UsageBatch { writer: "wrt_held".into(), sequence: 1, last_used, counts };
    // Not waited for: a write that waited would still be waiting when the bound runs out.
    let write = tokio::time::timeout(std::time::Duration::from_secs(10), ctx.keys.record_usage(&batch)).await;
    let recorded = write.expect("the flush does not wait for the held row").expect("written");
    assert_eq!(recorded, UsageRecorded { missing: vec![], deferred: vec![(held_key.id.clone(), used)] });
    assert_eq!(stored_uses(&ctx, &held_org.id).await, 3, "the held key's counts are written all the same");
    assert_eq!(stored_uses(&ctx, &free_org.id).await, 3);
    let free_now = ctx.keys.find_key(&free_org.id, &free_key.id).await.expect("read").expect("found");
    assert_eq!(free_now.last_used_at, Some(used));
    session.batch_execute("COMMIT").expect("released");
    let held_now = ctx.keys.find_key(&held_org.id, &held_key.id).await.expect("read").expect("found");
    assert_eq!(held_now.last_used_at, None, "left for the next batch");
}
