//! The services: every business rule of signup, accounts, keys and authentication.

mod account;
mod authenticate;
mod keys;
mod principal;
mod signup;
mod usage;

#[cfg(test)]
mod test_support;

use std::sync::Arc;

pub use account::GetAccountError;
pub use authenticate::AuthenticateError;
pub use keys::{CreateKeyError, CreatedKey, ListKeysError, RevokeKeyError};
pub use principal::{InsufficientScope, Principal};
pub use signup::{Signup, SignupError, SignupRequest};
use usage::UsageTracker;

use crate::ports::{AccountRepository, Clock, Generator, KeyRepository};

/// The application's use cases over its ports. Cheap to share: hold it in an `Arc`.
pub struct AccountService {
    accounts: Arc<dyn AccountRepository>,
    keys: Arc<dyn KeyRepository>,
    clock: Arc<dyn Clock>,
    generator: Arc<dyn Generator>,
    usage: UsageTracker,
}

impl std::fmt::Debug for AccountService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountService").finish_non_exhaustive()
    }
}

impl AccountService {
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
            generator,
            usage: UsageTracker::default(),
        }
    }
}

impl AccountService {
    /// The service clock's current time, for views that depend on it (is a key active?).
    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }
}
