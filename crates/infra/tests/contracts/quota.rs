//! The quota's counts (`KeyRepository::valid_uses_since`): the valid verifications of the
//! organizations asked for, summed by organization, environment and day from a day on, of
//! revoked keys too, and nothing else (refusals, requests to the account API, other
//! organizations, earlier days).

use account_domain::*;
use time::Duration;

use crate::common::{audit_of, contract, insert, new_key, now, revoke, signed_up, Ctx};

contract!(the_valid_uses_of_the_organizations_asked_for_are_summed_by_environment_and_day_from_a_day_on,);

fn count(key: &KeyId, day: time::Date, outcome: UseOutcome, count: i64) -> UsageCount {
    UsageCount { key_id: key.clone(), day, outcome, count }
}

/// Sorted, to compare with what a test expects.
fn sorted(mut rows: Vec<ValidUses>) -> Vec<(String, &'static str, time::Date, i64)> {
    let mut out: Vec<_> =
        rows.drain(..).map(|r| (r.org_id.to_string(), r.environment.as_str(), r.day, r.count)).collect();
    out.sort();
    out
}

async fn the_valid_uses_of_the_organizations_asked_for_are_summed_by_environment_and_day_from_a_day_on(ctx: Ctx) {
    let (org, live) = signed_up(&ctx, "quota@acme.test").await;
    let (other, others) = signed_up(&ctx, "other@acme.test").await;
    let (mut test, _) = new_key(&org.id, "sandbox", now());
    test.environment = Environment::Test;
    insert(&ctx.keys, &test, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted");
    let (gone, _) = new_key(&org.id, "gone", now());
    insert(&ctx.keys, &gone, 100, &Actor::Operator, &audit_of(&org.id)).await.expect("inserted");
    let (today, yesterday) = (now().date(), now().date() - Duration::days(1));
    let counts = vec![
        count(&live.id, today, UseOutcome::VALID, 5),
        count(&live.id, yesterday, UseOutcome::VALID, 2),
        count(&live.id, today, UseOutcome::Verified(VerificationCode::QuotaExceeded), 3),
        count(&live.id, today, UseOutcome::AccountApi, 6),
        count(&test.id, today, UseOutcome::VALID, 4),
        count(&gone.id, today, UseOutcome::VALID, 1),
        count(&others.id, today, UseOutcome::VALID, 7),
    ];
    let batch = UsageBatch { writer: "wrt_quota".into(), sequence: 1, last_used: vec![], counts };
    ctx.keys.record_usage(&batch).await.expect("recorded");
    // A key revoked after its uses: they were valid, and count.
    revoke(&ctx.keys, &org.id, &gone.id, now(), &Actor::Operator, &audit_of(&org.id)).await.expect("revoked");

    let (a, b) = (org.id.to_string(), other.id.to_string());
    let rows = ctx.keys.valid_uses_since(std::slice::from_ref(&org.id), today).await.expect("read");
    assert_eq!(sorted(rows), [(a.clone(), "live", today, 6), (a.clone(), "test", today, 4)]);
    let rows = ctx.keys.valid_uses_since(&[org.id.clone(), other.id.clone()], yesterday).await.expect("read");
    let mut expected =
        vec![(a.clone(), "live", yesterday, 2), (a.clone(), "live", today, 6), (a.clone(), "test", today, 4)];
    expected.push((b, "live", today, 7));
    expected.sort();
    assert_eq!(sorted(rows), expected);
    // Many organizations at once (more than one statement binds), unknown ones among them.
    let mut many: Vec<OrgId> = (0..700).map(|i| OrgId::new(&format!("org_unknown{i}")).expect("valid")).collect();
    many.push(org.id.clone());
    let rows = ctx.keys.valid_uses_since(&many, today).await.expect("read");
    assert_eq!(sorted(rows), [(a.clone(), "live", today, 6), (a, "test", today, 4)]);
    assert!(ctx.keys.valid_uses_since(&[], today).await.expect("read").is_empty());
    assert!(ctx
        .keys
        .valid_uses_since(std::slice::from_ref(&org.id), today + Duration::days(1))
        .await
        .expect("read")
        .is_empty());
}
