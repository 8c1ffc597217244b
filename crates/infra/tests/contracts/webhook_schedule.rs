//! The scheduled notices' marks (`WebhookSchedule`): of concurrent senders of one notice,
//! only the one whose insert took its mark sends it, whatever its decision says; a notice
//! no endpoint is subscribed to is neither sent nor marked.

use std::sync::Arc;

use account_domain::*;
use account_infra::SqlWebhookSchedule;
use diesel::connection::SimpleConnection as _;
use diesel::RunQueryDsl as _;

use crate::common::{contract, now, raw_session, signed_up, Ctx};

contract!(of_concurrent_senders_of_one_notice_only_the_one_that_takes_its_mark_sends_it,);

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn count(ctx: &Ctx, sql: &str) -> i64 {
    diesel::sql_query(sql).get_result::<Count>(&mut raw_session(ctx)).expect("counted").n
}

async fn of_concurrent_senders_of_one_notice_only_the_one_that_takes_its_mark_sends_it(ctx: Ctx) {
    let (org, key) = signed_up(&ctx, "notices@acme.test").await;
    let schedule = SqlWebhookSchedule::new(ctx.db.clone());
    let mark = UsageMark { period_start: now().date(), percent: 80 };
    let data = AuditDetails::none().with("percent", DetailValue::Number(80));
    // Nobody subscribed: nothing sent, no mark taken.
    assert!(!schedule.send_usage_notice(&org.id, &[mark], &data, now()).await.expect("sent"));
    assert_eq!(count(&ctx, "SELECT COUNT(*) AS n FROM usage_threshold_notices"), 0);
    raw_session(&ctx)
        .batch_execute(&format!(
            "INSERT INTO webhook_endpoints (id, org_id, url, events, enabled, secret_sealed, created_at, updated_at) \
             VALUES ('wh_notices', '{}', 'https://hooks.example.com/in', '[\"key.expiring\",\"usage.threshold\"]', \
             TRUE, 'sealed', 0, 0)",
            org.id
        ))
        .expect("endpoint");

    // Eight passes at once, each sure the notice is due: one sends.
    let mut usage = tokio::task::JoinSet::new();
    let mut keys = tokio::task::JoinSet::new();
    // The decision says the notice is due whatever was taken: only the mark stops a repeat.
    let due: KeyNoticeDecision = Arc::new(|_, _| Some((KeyNotice::Expiring7d, AuditDetails::none())));
    for _ in 0..8 {
        let (sender, org, data) = (schedule.clone(), org.id.clone(), data.clone());
        usage.spawn(async move { sender.send_usage_notice(&org, &[mark], &data, now()).await.expect("sent") });
        let (sender, key, due) = (schedule.clone(), key.id.clone(), due.clone());
        keys.spawn(async move { sender.send_key_notice(&key, now(), due).await.expect("sent") });
    }
    let usage_sent = usage.join_all().await.into_iter().filter(|sent| *sent).count();
    let keys_sent = keys.join_all().await.into_iter().filter(Option::is_some).count();
    assert_eq!((usage_sent, keys_sent), (1, 1));
    let outbox = "SELECT COUNT(*) AS n FROM webhook_deliveries WHERE endpoint_id = 'wh_notices'";
    assert_eq!(count(&ctx, outbox), 2, "one event of each");
    // A decision that finds nothing due sends nothing.
    let none: KeyNoticeDecision = Arc::new(|_, _| None);
    assert_eq!(schedule.send_key_notice(&key.id, now(), none).await.expect("asked"), None);
}
