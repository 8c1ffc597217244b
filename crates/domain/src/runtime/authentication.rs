//! Speed devices of authentication: its outcome as a future that is complete at once when
//! the cache decides (no polling, no allocation on a hit), and the client's address worked
//! out only when a rule needs it (docs/performance.md).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::service::{AuthenticateError, Principal};

/// The outcome of [`AccountService::authenticate`], as a future. When no I/O is needed
/// (a malformed key, or the cache decides) it is complete at once, and an adapter on a hot
/// path may take it with [`Self::now_or_later`] without polling or allocating anything.
#[must_use = "an authentication does nothing until it is awaited or taken"]
pub struct Authentication(Outcome);

enum Outcome {
    Decided(Option<Result<Principal, AuthenticateError>>),
    Lookup(Pin<Box<dyn Future<Output = Result<Principal, AuthenticateError>> + Send>>),
}

impl std::fmt::Debug for Authentication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Outcome::Decided(_) => "Authentication::Decided",
            Outcome::Lookup(_) => "Authentication::Lookup",
        })
    }
}

impl Authentication {
    /// An outcome known at once.
    pub(crate) fn decided(outcome: Result<Principal, AuthenticateError>) -> Self {
        Self(Outcome::Decided(Some(outcome)))
    }

    /// An outcome that needs I/O first.
    pub(crate) fn later(lookup: impl Future<Output = Result<Principal, AuthenticateError>> + Send + 'static) -> Self {
        Self(Outcome::Lookup(Box::pin(lookup)))
    }

    /// The outcome if it is already known, else the authentication to await.
    pub fn now_or_later(self) -> Result<Result<Principal, AuthenticateError>, Self> {
        match self.0 {
            Outcome::Decided(Some(outcome)) => Ok(outcome),
            other => Err(Self(other)),
        }
    }
}

impl Future for Authentication {
    type Output = Result<Principal, AuthenticateError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Outcome::Decided(outcome) => Poll::Ready(outcome.take().unwrap_or_else(|| {
                Err(AuthenticateError::Store(anyhow::anyhow!("an authentication was awaited twice").into()))
            })),
            Outcome::Lookup(lookup) => lookup.as_mut().poll(cx),
        }
    }
}

/// Where a request came from, worked out only when a rule needs it (a key with an
/// allowlist, or a read of the store): an address already known (`Option<IpAddr>`), or a
/// closure that finds it. Most keys have no allowlist, so a cache hit then never looks.
pub trait ClientAddress {
    fn resolve(self) -> Option<IpAddr>;
}

impl ClientAddress for Option<IpAddr> {
    fn resolve(self) -> Option<IpAddr> {
        self
    }
}

impl<F: FnOnce() -> Option<IpAddr>> ClientAddress for F {
    fn resolve(self) -> Option<IpAddr> {
        self()
    }
}
