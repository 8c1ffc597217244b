//! `KeyRepository`, its reads and its writes: keys listed and found (by id, by hash, the
//! recently used ones), the active-key limit, allowlists, renaming, revoking, rolling and
//! leak reports, each write deciding on its rows as they are when it commits.

use std::collections::HashSet;
use std::sync::Arc;

use account_domain::*;
use account_infra::{OsRandomGenerator, SqlChangeFeed};
use time::Duration;

use crate::common::{
    audit_of, contract, insert, new_key, new_org, now, raw_session, revoke, roll, signed_up, update, uses, Ctx,
};

contract!(
    keys_are_listed_newest_first_with_every_field_intact,
    credentials_are_found_by_hash_with_their_organization,
    concurrent_reads_of_the_same_and_of_different_keys_each_get_their_own_answer,
    recently_used_credentials_come_most_recent_first_within_the_window_and_the_limit,
    concurrent_key_inserts_are_all_kept,
    the_active_key_limit_counts_only_active_keys,
    concurrent_creations_cannot_exceed_the_active_key_limit,
    an_allowlist_is_stored_normalised_changed_and_published,
    renaming_is_confined_to_the_organization_and_published,
    revoking_is_confined_to_the_organization_and_keeps_the_first_time,
    rolling_replaces_a_key_atomically_and_never_extends_its_expiry,
    a_roll_with_a_grace_period_counts_against_the_active_key_limit,
    leaked_keys_are_revoked_whatever_their_organization,
    every_key_write_rechecks_its_actor_and_writes_nothing_for_a_refused_one,
    a_revocation_committing_during_a_write_is_waited_for_and_refuses_it,
    a_roll_whose_key_is_revoked_meanwhile_writes_nothing,
);

fn renamed_to(name: &KeyName) -> KeyChanges {
    KeyChanges { name: Some(name.clone()), ..KeyChanges::default() }
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
