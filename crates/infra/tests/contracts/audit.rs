//! The audit trail (`AccountRepository::list_audit_events`; the events are written by the
//! repositories' writes): newest first, in pages, each organization its own.

use account_domain::*;

use crate::common::{audit_of, contract, insert, new_key, now, signed_up, Ctx};

contract!(the_audit_trail_is_read_newest_first_in_pages,);

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
