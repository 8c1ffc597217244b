//! The usage store (`KeyRepository::record_usage`, `usage_of`, `monthly_usage`,
//! `prune_usage`): last uses that never go backwards, counts from several writers that add
//! up, a batch applied once however often it is retried, and keys deleted or held by another
//! transaction that hold back no other key's usage.

use account_domain::*;
use time::Duration;

use crate::common::{audit_of, contract, insert, new_key, now, raw_session, signed_up, uses, Ctx};

contract!(
    recorded_usage_never_goes_backwards,
    usage_of_many_keys_is_written_in_one_flush,
    counts_from_two_writers_add_up_and_a_batch_written_twice_counts_once,
    usage_of_keys_deleted_with_their_organization_is_left_out_and_the_rest_written,
    a_key_deleted_while_its_usage_is_being_written_is_left_out_not_failing_the_batch,
    a_retry_racing_its_first_attempt_still_open_is_applied_once,
    a_last_use_whose_key_row_another_transaction_holds_is_left_for_later_not_waited_for,
);

fn counted(writer: &str, sequence: u64, key: &KeyId, day: time::Date, outcome: VerificationCode, n: i64) -> UsageBatch {
    let counts = vec![UsageCount { key_id: key.clone(), day, outcome: UseOutcome::Verified(outcome), count: n }];
    UsageBatch { writer: writer.into(), sequence, last_used: vec![], counts }
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

async fn recorded_usage_never_goes_backwards(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "usage@acme.test").await;
    let later = now() + Duration::minutes(1);
    ctx.keys.record_usage(&uses(1, vec![(key.id.clone(), later)])).await.expect("recorded");
    ctx.keys.record_usage(&uses(2, vec![(key.id.clone(), later - Duration::seconds(30))])).await.expect("recorded");
    let listed = ctx.keys.list_keys(&org.id).await.expect("listed");
    assert_eq!(listed[0].last_used_at, Some(later));
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
    let mut rows: Vec<(UseOutcome, i64)> = ctx
        .keys
        .usage_of(&org.id, day, day)
        .await
        .expect("read")
        .into_iter()
        .map(|r| (r.count.outcome, r.count.count))
        .collect();
    rows.sort();
    assert_eq!(rows, [(UseOutcome::Verified(valid), 11), (UseOutcome::Verified(VerificationCode::Revoked), 2)]);
    let month = ctx.keys.monthly_usage(day, day).await.expect("read");
    let ours = month.iter().find(|m| m.org_id == org.id).expect("listed");
    let counts: Vec<_> = ours.days.iter().map(|d| (d.day, d.valid, d.refused, d.valid_test)).collect();
    assert_eq!(counts, [(Some(day), 11, 2, 0)]);
    assert_eq!(ours.plan_changes.iter().map(|c| c.plan.id.as_str()).collect::<Vec<_>>(), ["free"]);
    assert_eq!(ours.closed_on, None);
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
        .map(|k| UsageCount { key_id: k.id.clone(), day, outcome: UseOutcome::VALID, count: 4 })
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
        .map(|k| UsageCount { key_id: k.id.clone(), day: now().date(), outcome: UseOutcome::VALID, count: 2 })
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
        .map(|k| UsageCount { key_id: k.id.clone(), day: used.date(), outcome: UseOutcome::VALID, count: 3 })
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
