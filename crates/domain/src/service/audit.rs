//! The audit trail: building records for every change, and reading an organization's trail.

use thiserror::Error;
use time::OffsetDateTime;

use super::{AccountService, InsufficientScope, Principal};
use crate::model::{AuditAction, AuditDetails, AuditEvent, AuditRecord, OrgId, RequestMeta, Scope};

/// One page of the trail, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Older events exist: ask again with `before` = the last event's id.
    pub has_more: bool,
}

#[derive(Debug, Error)]
pub enum AuditLogError {
    #[error(transparent)]
    InsufficientScope(#[from] InsufficientScope),
    #[error("`limit` must be a whole number from 1 to 100")]
    InvalidLimit,
    #[error("`before` must be an event id such as evt_42")]
    InvalidCursor,
    #[error(transparent)]
    Store(#[from] crate::ports::StoreError),
}

/// How an event id is shown: `evt_<n>`.
pub fn audit_event_id(id: i64) -> String {
    format!("evt_{id}")
}

impl AccountService {
    pub const DEFAULT_AUDIT_PAGE: u32 = 50;
    pub const MAX_AUDIT_PAGE: u32 = 100;

    pub(super) fn audit_record(
        &self,
        org_id: &OrgId,
        action: AuditAction,
        target_id: Option<&str>,
        actor: Option<&Principal>,
        meta: &RequestMeta,
        at: OffsetDateTime,
    ) -> AuditRecord {
        AuditRecord {
            org_id: org_id.clone(),
            action,
            target_id: target_id.map(str::to_owned),
            actor_key_id: actor.map(|p| p.key_id().clone()),
            meta: meta.clone(),
            at,
            details: AuditDetails::none(),
        }
    }

    /// The caller's organization's trail, newest first. Needs `read`.
    pub async fn audit_log(
        &self,
        caller: &Principal,
        before: Option<&str>,
        limit: Option<u32>,
    ) -> Result<AuditPage, AuditLogError> {
        self.authorize(caller, Scope::Read)?;
        let limit = limit.unwrap_or(Self::DEFAULT_AUDIT_PAGE);
        if !(1..=Self::MAX_AUDIT_PAGE).contains(&limit) {
            return Err(AuditLogError::InvalidLimit);
        }
        let before = before
            .map(|cursor| {
                let digits = cursor
                    .strip_prefix("evt_")
                    .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or(AuditLogError::InvalidCursor)?;
                // Beyond the largest id every event is older: the whole trail.
                Ok::<_, AuditLogError>(digits.parse::<i64>().unwrap_or(i64::MAX))
            })
            .transpose()?;
        let mut events = self.accounts.list_audit_events(caller.org_id(), before, limit + 1).await?;
        let has_more = events.len() > limit as usize;
        events.truncate(limit as usize);
        Ok(AuditPage { events, has_more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_support::*;

    fn event(id: i64) -> AuditEvent {
        AuditEvent {
            id,
            record: AuditRecord {
                org_id: OrgId::new("org_caller").expect("valid"),
                action: AuditAction::KeyCreated,
                target_id: None,
                actor_key_id: None,
                meta: RequestMeta::default(),
                details: AuditDetails::none(),
                at: NOW,
            },
        }
    }

    #[tokio::test]
    async fn pages_say_whether_older_events_exist() {
        let mut ports = Ports::new();
        ports
            .accounts
            .expect_list_audit_events()
            .withf(|_, before, limit| *before == Some(10) && *limit == 3)
            .returning(|_, _, _| Ok(vec![event(9), event(8), event(7)]));
        let page = ports
            .service()
            .audit_log(&principal(&["read"], Environment::Live), Some("evt_10"), Some(2))
            .await
            .expect("page");
        assert_eq!(page.events.iter().map(|e| e.id).collect::<Vec<_>>(), [9, 8]);
        assert!(page.has_more);
    }

    #[tokio::test]
    async fn bad_limits_and_cursors_are_refused() {
        let service = Ports::new().service();
        let caller = principal(&["read"], Environment::Live);
        assert!(matches!(service.audit_log(&caller, None, Some(0)).await, Err(AuditLogError::InvalidLimit)));
        assert!(matches!(service.audit_log(&caller, None, Some(101)).await, Err(AuditLogError::InvalidLimit)));
        for bad in ["42", "evt_", "evt_-1", "evt_+1", "evt_x", "evt_1 "] {
            assert!(
                matches!(service.audit_log(&caller, Some(bad), None).await, Err(AuditLogError::InvalidCursor)),
                "{bad}"
            );
        }
        let writer = principal(&["write"], Environment::Live);
        assert!(matches!(service.audit_log(&writer, None, None).await, Err(AuditLogError::InsufficientScope(_))));
    }

    #[tokio::test]
    async fn any_event_id_is_a_cursor_zero_and_past_the_largest_id_included() {
        let mut ports = Ports::new();
        ports
            .accounts
            .expect_list_audit_events()
            .withf(|_, before, _| *before == Some(0) || *before == Some(i64::MAX) || *before == Some(7))
            .times(3)
            .returning(|_, _, _| Ok(vec![]));
        let service = ports.service();
        let caller = principal(&["read"], Environment::Live);
        for cursor in ["evt_0", "evt_99999999999999999999999", "evt_007"] {
            assert!(service.audit_log(&caller, Some(cursor), None).await.is_ok(), "{cursor}");
        }
    }
}
