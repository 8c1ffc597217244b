//! The use cases: every business rule of signup, accounts, keys and authentication. What
//! makes them fast (the cache, merged reads, the usage buffer) is in `crate::runtime`.

mod account;
mod account_close;
mod account_update;
mod audit;
mod authenticate;
mod keys;
mod leak;
mod operator;
mod principal;
mod quota;
mod signup;
mod usage_report;
mod verify;
mod webhook_schedule;
mod webhooks;

#[cfg(test)]
pub(crate) mod test_support;

use std::sync::Arc;

pub use account::GetAccountError;
pub use account_close::{revoked_by_closing, CloseAccountError, EraseError, REVOKED_AS_ACCOUNT_CLOSED};
pub use account_update::{EmptyAccountChange, UpdateAccountRequest};
pub use audit::{audit_event_id, AuditLogError, AuditPage};
pub use authenticate::AuthenticateError;
pub use keys::{CreatedKey, KeyAccessError, KeyUpdate, RolledKey};
pub use leak::ReportLeakError;
pub use operator::{IssueKeyError, IssuedKey, SetOrganizationActiveError};
pub use principal::{InsufficientScope, Principal};
pub use quota::SetPlanOverLimitError;
pub use signup::{Signup, SignupError, SignupRequest};
pub use usage_report::{
    month_is_final, DailyUsage, KeyUsage, MonthToDate, SetPlanIncludedError, UsageError, UsageReport, UsageRetention,
    UsageTotals,
};
pub use verify::Verification;
pub use webhook_schedule::{
    key_notice_data, key_notice_due, usage_thresholds_reached, ScheduledNotices, KEY_EXPIRED_NOTICE_LIMIT,
};
pub use webhooks::{
    webhook_attempt_id, WebhookAttemptPage, WebhookError, WebhookRequest, WebhookWithSecret, Webhooks,
    MAX_WEBHOOKS_PER_ORG, PREVIOUS_SECRET_LIFETIME,
};

use crate::ports::{AccountRepository, Clock, Generator, KeyRepository};
use crate::runtime::Runtime;

/// The application's use cases over its ports. Cheap to share: hold it in an `Arc`.
pub struct AccountService {
    accounts: Arc<dyn AccountRepository>,
    pub(crate) keys: Arc<dyn KeyRepository>,
    pub(crate) clock: Arc<dyn Clock>,
    generator: Arc<dyn Generator>,
    pub(crate) runtime: Runtime,
    max_active_keys: u32,
    webhooks: Option<webhooks::Webhooks>,
}

impl std::fmt::Debug for AccountService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountService").finish_non_exhaustive()
    }
}

impl AccountService {
    /// A service that reads every credential from the repository.
    pub fn new(
        accounts: Arc<dyn AccountRepository>,
        keys: Arc<dyn KeyRepository>,
        clock: Arc<dyn Clock>,
        generator: Arc<dyn Generator>,
    ) -> Self {
        Self {
            accounts,
            keys,
            clock,
            runtime: Runtime::new(generator.usage_writer()),
            generator,
            max_active_keys: Self::DEFAULT_MAX_ACTIVE_KEYS,
            webhooks: None,
        }
    }

    /// How many active (neither revoked nor expired) keys an organization may hold.
    pub const DEFAULT_MAX_ACTIVE_KEYS: u32 = 100;

    pub fn with_max_active_keys(mut self, max: u32) -> Self {
        self.max_active_keys = max;
        self
    }

    /// The service clock's current time, for views that depend on it (is a key active?).
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
