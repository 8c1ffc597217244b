//! Creating a key.

use super::access::KeyFacts;
use super::{CreateKeyError, CreatedKey, KeySpec};
use crate::model::{AllowedIpsChange, CreateKeyRequest, RequestMeta, Scope};
use crate::ports::Actor;
use crate::service::{AccountService, KeyAccessError, Principal};

impl AccountService {
    /// Creates a key. Needs `write`; a key grants no scope it lacks, a test key creates only
    /// test keys, a key that expires creates keys that expire no later (without
    /// `expires_in`, the new key takes the caller's expiry), and a key limited to some
    /// addresses creates keys limited within them (without an allowlist, the caller's).
    pub async fn create_key(
        &self,
        caller: &Principal,
        request: CreateKeyRequest,
        meta: &RequestMeta,
    ) -> Result<CreatedKey, CreateKeyError> {
        self.authorize(caller, Scope::Write).map_err(KeyAccessError::from)?;
        let now = self.clock.now();
        let expires_at = request.expires_in.map(|days| days.after(now)).or(caller.expires_at());
        let allowed_ips = match request.allowed_ips {
            AllowedIpsChange::Keep => caller.allowed_ips().cloned(),
            AllowedIpsChange::Anywhere => None,
            AllowedIpsChange::Only(list) => Some(list),
        };
        caller.may_act_on(&KeyFacts {
            requested: true,
            environment: Some(request.environment),
            scopes: Some(&request.scopes),
            expires_at: Some(expires_at),
            allowed_ips: Some(allowed_ips.as_ref()),
        })?;
        let spec = KeySpec {
            name: request.name,
            environment: request.environment,
            scopes: request.scopes,
            expires_at,
            allowed_ips,
        };
        let (new_key, plaintext) = self.mint_key(caller.org_id(), spec, now);
        let audit = self.key_created_record(caller, &new_key, meta, now);
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.insert_key(&new_key, self.max_active_keys, &actor, &audit).await?;
        Ok(CreatedKey { key, plaintext })
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::{CreateKeyError, InsufficientScope, KeyAccessError};

    fn read_only() -> Scopes {
        Scopes::parse(&["read"]).expect("valid")
    }

    #[tokio::test]
    async fn a_created_key_is_stored_by_hash_and_shown_once_in_full() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().times(1).returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let request =
            CreateKeyRequest::new(None, None, Some(read_only()), Some(ExpiresInDays::new(90).expect("valid")));
        let created = ports
            .service()
            .create_key(&principal(&["read", "write"], Environment::Live), request, &RequestMeta::default())
            .await
            .expect("created");
        assert_eq!(created.key.scopes, read_only());
        assert_eq!(created.key.expires_at, Some(NOW + time::Duration::days(90)));
        assert_eq!(created.key.created_at, NOW);
        assert!(created.plaintext.expose().starts_with(created.key.prefix.as_str().trim_end_matches("...")));
    }

    #[tokio::test]
    async fn the_active_key_limit_is_the_services_and_its_refusal_is_passed_on() {
        let mut ports = Ports::new();
        ports
            .keys
            .expect_insert_key()
            .withf(|_, max, _, _| *max == 3)
            .returning(|_, max, _, _| Err(KeyStoreError::LimitReached(max)));
        let service = ports.service_with(|s| s.with_max_active_keys(3));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = service.create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(CreateKeyError::Store(KeyStoreError::LimitReached(3)))), "{err:?}");
    }

    #[tokio::test]
    async fn creating_needs_the_write_scope_and_grants_no_scope_the_caller_lacks() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().never();
        let service = ports.service();
        let meta = RequestMeta::default();
        let err =
            service.create_key(&principal(&["read"], Environment::Live), CreateKeyRequest::default(), &meta).await;
        assert!(matches!(
            err,
            Err(CreateKeyError::Access(KeyAccessError::InsufficientScope(InsufficientScope(Scope::Write))))
        ));
        let request = CreateKeyRequest::new(None, None, Some(Scopes::all()), None);
        let err = service.create_key(&principal(&["write"], Environment::Live), request, &meta).await;
        assert!(matches!(
            err,
            Err(CreateKeyError::Access(KeyAccessError::ScopeEscalation { lacking: Scope::Read, requested: true }))
        ));
    }

    #[tokio::test]
    async fn a_test_key_creates_only_test_keys() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().times(1).returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let service = ports.service();
        let caller = principal(&["read", "write"], Environment::Test);
        let live = CreateKeyRequest::new(None, Some(Environment::Live), None, None);
        assert!(matches!(
            service.create_key(&caller, live, &RequestMeta::default()).await,
            Err(CreateKeyError::Access(KeyAccessError::EnvironmentEscalation { requested: true }))
        ));
        let test = CreateKeyRequest::new(None, Some(Environment::Test), None, None);
        let created = service.create_key(&caller, test, &RequestMeta::default()).await.expect("test key");
        assert!(created.plaintext.expose().starts_with("mem_test_"));
    }

    #[tokio::test]
    async fn an_expiring_key_creates_only_keys_that_expire_no_later() {
        let limit = NOW + time::Duration::days(1);
        let mut ports = Ports::new();
        ports
            .keys
            .expect_insert_key()
            .times(2)
            .withf(move |k, _, actor, _| k.expires_at.is_some_and(|at| at <= limit) && matches!(actor, Actor::Key(_)))
            .returning(|k, _, _, _| Ok(k.clone().into_stored()));
        let service = ports.service();
        let caller = principal_of(credential().with(|c| c.key.expires_at = Some(limit)));
        let meta = RequestMeta::default();
        let inherited = service.create_key(&caller, CreateKeyRequest::default(), &meta).await.expect("created");
        assert_eq!(inherited.key.expires_at, Some(limit), "omitted: the creator's expiry");
        let sooner = CreateKeyRequest::new(None, None, None, Some(ExpiresInDays::new(1).expect("valid")));
        assert!(service.create_key(&caller, sooner, &meta).await.is_ok());
        let later = CreateKeyRequest::new(None, None, None, Some(ExpiresInDays::new(2).expect("valid")));
        assert!(matches!(
            service.create_key(&caller, later, &meta).await,
            Err(CreateKeyError::Access(KeyAccessError::ExpiryEscalation))
        ));
    }

    #[tokio::test]
    async fn a_write_refused_inside_its_transaction_is_the_callers_refusal() {
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().returning(|_, _, _, _| Err(ActorRefused::Revoked.into()));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = ports.service().create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(CreateKeyError::Store(KeyStoreError::Actor(ActorRefused::Revoked)))));
    }
}
