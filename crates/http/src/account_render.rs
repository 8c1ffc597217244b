//! A memo of rendered `GET /v1/account` bodies. An organization always renders to the same
//! bytes, so each worker serializes an organization once, not once per request: the answer
//! is on the hot path of every client that checks its account.

use std::cell::RefCell;

use account_domain::Organization;
use actix_web::web::Bytes;

use crate::envelope::Envelope;
use crate::routes::account::AccountDto;

/// Slots per worker thread; a collision only costs a fresh render.
const SLOTS: usize = 256;

thread_local! {
    static MEMO: RefCell<Vec<Option<(Organization, Bytes)>>> = RefCell::new(vec![None; SLOTS]);
}

/// The enveloped JSON of `org`, as [`crate::envelope::ok`] would render it. An entry is reused only for an
/// organization equal in every field, so a renamed organization or a changed plan is never
/// answered from an old rendering.
pub(crate) fn account_body(org: &Organization) -> Bytes {
    let slot = slot_of(org);
    MEMO.with_borrow_mut(|memo| {
        if let Some((seen, body)) = &memo[slot] {
            if seen == org {
                return body.clone();
            }
        }
        let body = Bytes::from(render(org));
        memo[slot] = Some((org.clone(), body.clone()));
        body
    })
}

fn render(org: &Organization) -> Vec<u8> {
    // Serializing plain strings, numbers and booleans into memory cannot fail.
    serde_json::to_vec(&Envelope::new(AccountDto::from(org))).unwrap_or_default()
}

/// The id's last eight bytes, multiplied and folded to a slot: one multiplication, not a
/// pass over the whole id, and the ids end in random digits.
fn slot_of(org: &Organization) -> usize {
    const _: () = assert!(SLOTS == 256, "the slot is the product's top byte");
    let id = org.id.as_str().as_bytes();
    let mut tail = [0_u8; 8];
    let n = id.len().min(8);
    tail[..n].copy_from_slice(&id[id.len() - n..]);
    (u64::from_le_bytes(tail).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use account_domain::{EmailAddress, OrgId, OrgName, Plan, PlanId};
    use time::macros::datetime;

    fn org(id: &str) -> Organization {
        Organization {
            id: OrgId::new(id).expect("valid"),
            name: OrgName::new("Acme").expect("valid"),
            email: EmailAddress::new("a@acme.test").expect("valid"),
            plan: Plan {
                id: PlanId::free(),
                name: "Free".into(),
                base_price_cents: 0,
                included_requests_per_month: 10_000,
                over_limit: account_domain::OverLimit::Block,
            },
            is_active: true,
            created_at: datetime!(2024-01-01 0:00 UTC),
            closed_at: None,
        }
    }

    fn fresh(org: &Organization) -> serde_json::Value {
        serde_json::json!({"success": true, "data": serde_json::to_value(AccountDto::from(org)).expect("json")})
    }

    fn parsed(body: &Bytes) -> serde_json::Value {
        serde_json::from_slice(body).expect("json")
    }

    #[test]
    fn the_memo_renders_exactly_what_a_fresh_serialization_would() {
        let acme = org("org_0123456789abcdef0123456789abcdef");
        assert_eq!(parsed(&account_body(&acme)), fresh(&acme));
        assert_eq!(account_body(&acme), account_body(&acme));
    }

    #[test]
    fn a_changed_organization_is_never_answered_from_its_old_rendering() {
        let before = org("org_0123456789abcdef0123456789abcdee");
        let _ = account_body(&before);
        let mut after = before.clone();
        after.plan = Plan {
            id: PlanId::new("pro").expect("valid"),
            name: "Pro".into(),
            base_price_cents: 4900,
            included_requests_per_month: 1_000_000,
            over_limit: account_domain::OverLimit::Block,
        };
        after.name = OrgName::new("Acme Two").expect("valid");
        assert_eq!(parsed(&account_body(&after)), fresh(&after));
        let mut inactive = after.clone();
        inactive.is_active = false;
        assert_eq!(parsed(&account_body(&inactive)), fresh(&inactive));
    }

    #[test]
    fn organizations_that_share_a_slot_each_get_their_own_body() {
        let ids: Vec<String> = (0..SLOTS * 2).map(|i| format!("org_{i:032x}")).collect();
        let orgs: Vec<Organization> = ids.iter().map(|id| org(id)).collect();
        for org in orgs.iter().chain(orgs.iter().rev()) {
            assert_eq!(parsed(&account_body(org)), fresh(org));
        }
    }
}
