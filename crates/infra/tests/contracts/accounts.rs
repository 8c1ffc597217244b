//! `AccountRepository`: organizations with their first key, unique emails, the plan
//! catalogue, deactivation and a plan's terms published to every instance.

use std::sync::Arc;

use account_domain::*;
use account_infra::SqlChangeFeed;

use crate::common::{audit_of, contract, new_key, new_org, signed_up, Ctx};

contract!(
    the_plans_table_holds_the_catalogue,
    plans_are_listed_cheapest_first,
    a_new_organization_is_stored_with_its_plan_and_first_key,
    emails_are_unique_ignoring_case,
    concurrent_signups_with_one_email_let_exactly_one_win,
    an_unknown_plan_is_refused_and_stores_nothing,
    strings_round_trip_verbatim,
    deactivating_an_organization_is_stored_and_published_once,
    a_plans_included_requests_change_is_stored_and_clears_every_cache,
);

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

async fn plans_are_listed_cheapest_first(ctx: Ctx) {
    let plans = ctx.accounts.list_plans().await.expect("listed");
    let ids: Vec<&str> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["free", "starter", "pro"]);
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
