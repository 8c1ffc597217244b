//! Creating a key.

use std::sync::Arc;

use super::access::{acting_key, may_act_on, KeyFacts};
use super::{inherited, CreatedKey, KeySpec};
use crate::model::{CreateKeyRequest, NewApiKey, RequestMeta, Scope};
use crate::ports::{Actor, KeyOpError, KeyWriteDecision};
use crate::service::{AccountService, KeyAccessError, Principal};

impl AccountService {
    /// Creates a key. Needs `write`; a key grants no scope it lacks, a test key creates only
    /// test keys, a key that expires creates keys that expire no later (without
    /// `expires_in`, the new key takes the caller's expiry), and a key limited to some
    /// addresses creates keys limited within them (without an allowlist, the caller's). The
    /// caller's expiry and allowlist are those its row holds when the key is written.
    pub async fn create_key(
        &self,
        caller: &Principal,
        request: CreateKeyRequest,
        meta: &RequestMeta,
    ) -> Result<CreatedKey, KeyOpError> {
        self.authorize(caller, Scope::Write).map_err(KeyAccessError::from)?;
        let now = self.clock.now();
        let spec = KeySpec {
            name: request.name,
            environment: request.environment,
            scopes: request.scopes,
            expires_at: None,
            allowed_ips: None,
        };
        let (drawn, plaintext) = self.mint_key(caller.org_id(), spec, now);
        let audit = self.key_created_record(caller, &drawn, meta, now);
        let (expires_in, allowed_ips, client) = (request.expires_in, request.allowed_ips, meta.client_ip());
        let decide: KeyWriteDecision<NewApiKey> = Arc::new(move |found| {
            let creator = acting_key(&found, client, now)?;
            let asked = expires_in.map(|days| days.after(now));
            let (expires_at, allowed_ips) = inherited(asked, &allowed_ips, Some(creator), false);
            may_act_on(
                creator,
                &KeyFacts {
                    requested: true,
                    environment: Some(drawn.environment),
                    scopes: Some(&drawn.scopes),
                    expires_at: Some(expires_at),
                    allowed_ips: Some(allowed_ips.as_ref()),
                    widens_reach_of: None,
                },
            )?;
            Ok(NewApiKey { expires_at, allowed_ips, ..drawn.clone() })
        });
        let actor = Actor::Key(caller.key_id().clone());
        let key = self.keys.insert_key(caller.org_id(), &actor, decide, self.max_active_keys, &audit).await?;
        Ok(CreatedKey { key, plaintext })
    }
}

#[cfg(test)]
mod tests {
    use crate::service::test_support::*;
    use crate::service::{InsufficientScope, KeyAccessError};

    fn read_only() -> Scopes {
        Scopes::parse(&["read"]).expect("valid")
    }

    #[tokio::test]
    async fn a_created_key_is_stored_by_hash_and_shown_once_in_full() {
        let mut ports = Ports::new();
        let caller = principal(&["read", "write"], Environment::Live);
        ports.keys.expect_insert_key().times(1).returning(insert_as(caller.key().clone()));
        let request =
            CreateKeyRequest::new(None, None, Some(read_only()), Some(ExpiresInDays::new(90).expect("valid")));
        let created = ports.service().create_key(&caller, request, &RequestMeta::default()).await.expect("created");
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
            .withf(|_, _, _, max, _| *max == 3)
            .returning(|_, _, _, max, _| Err(KeyOpError::LimitReached(max)));
        let service = ports.service_with(|s| s.with_max_active_keys(3));
        let caller = principal(&["read", "write"], Environment::Live);
        let err = service.create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(KeyOpError::LimitReached(3))), "{err:?}");
    }

    #[tokio::test]
    async fn creating_needs_the_write_scope_and_grants_no_scope_the_caller_lacks() {
        let mut ports = Ports::new();
        let writer = principal(&["write"], Environment::Live);
        ports.keys.expect_insert_key().times(1).returning(insert_as(writer.key().clone()));
        let service = ports.service();
        let meta = RequestMeta::default();
        let err =
            service.create_key(&principal(&["read"], Environment::Live), CreateKeyRequest::default(), &meta).await;
        assert!(matches!(
            err,
            Err(KeyOpError::Access(KeyAccessError::InsufficientScope(InsufficientScope(Scope::Write))))
        ));
        let request = CreateKeyRequest::new(None, None, Some(Scopes::all()), None);
        let err = service.create_key(&writer, request, &meta).await;
        assert!(matches!(
            err,
            Err(KeyOpError::Access(KeyAccessError::ScopeEscalation { lacking: Scope::Read, requested: true }))
        ));
    }

    #[tokio::test]
    async fn a_test_key_creates_only_test_keys() {
        let mut ports = Ports::new();
        let caller = principal(&["read", "write"], Environment::Test);
        ports.keys.expect_insert_key().times(2).returning(insert_as(caller.key().clone()));
        let service = ports.service();
        let live = CreateKeyRequest::new(None, Some(Environment::Live), None, None);
        assert!(matches!(
            service.create_key(&caller, live, &RequestMeta::default()).await,
            Err(KeyOpError::Access(KeyAccessError::EnvironmentEscalation { requested: true }))
        ));
        let test = CreateKeyRequest::new(None, Some(Environment::Test), None, None);
        let created = service.create_key(&caller, test, &RequestMeta::default()).await.expect("test key");
        assert!(created.plaintext.expose().starts_with("mem_test_"));
    }

    #[tokio::test]
    async fn an_expiring_key_creates_only_keys_that_expire_no_later() {
        let limit = NOW + time::Duration::days(1);
        let mut ports = Ports::new();
        let caller = principal_of(credential().with(|c| c.key.expires_at = Some(limit)));
        ports.keys.expect_insert_key().times(3).returning(insert_as(caller.key().clone()));
        let service = ports.service();
        let meta = RequestMeta::default();
        let inherited = service.create_key(&caller, CreateKeyRequest::default(), &meta).await.expect("created");
        assert_eq!(inherited.key.expires_at, Some(limit), "omitted: the creator's expiry");
        let sooner = CreateKeyRequest::new(None, None, None, Some(ExpiresInDays::new(1).expect("valid")));
        assert!(service.create_key(&caller, sooner, &meta).await.is_ok());
        let later = CreateKeyRequest::new(None, None, None, Some(ExpiresInDays::new(2).expect("valid")));
        assert!(matches!(
            service.create_key(&caller, later, &meta).await,
            Err(KeyOpError::Access(KeyAccessError::ExpiryEscalation))
        ));
    }

    #[tokio::test]
    async fn what_a_new_key_inherits_is_its_creators_row_as_the_write_finds_it() {
        // Authenticated with no expiry and no allowlist; rolled to expire in an hour and
        // limited to one address while the request's body was held back.
        let caller = principal(&["read", "write"], Environment::Live);
        let narrowed = AllowedIps::parse(&["192.0.2.1"]).expect("valid");
        let now_stored = caller
            .key()
            .clone()
            .with(|k| (k.expires_at, k.allowed_ips) = (Some(NOW + time::Duration::hours(1)), narrowed));
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().times(3).returning(insert_as(now_stored.clone()));
        let service = ports.service();
        let from = |ip: &str| RequestMeta::new(ip.parse().ok(), None);
        let created =
            service.create_key(&caller, CreateKeyRequest::default(), &from("192.0.2.1")).await.expect("created");
        assert_eq!(created.key.expires_at, now_stored.expires_at);
        assert_eq!(created.key.allowed_ips, now_stored.allowed_ips);
        for meta in [from("198.51.100.7"), RequestMeta::default()] {
            assert!(matches!(
                service.create_key(&caller, CreateKeyRequest::default(), &meta).await,
                Err(KeyOpError::Actor(ActorRefused::IpNotAllowed))
            ));
        }
    }

    #[tokio::test]
    async fn a_creator_found_revoked_gone_or_expired_inside_the_write_is_refused() {
        let caller = principal(&["read", "write"], Environment::Live);
        let me = caller.key().clone();
        for (found_as, refused) in [
            (Some(me.clone().with(|k| k.revoked_at = Some(NOW))), ActorRefused::Revoked),
            (None, ActorRefused::Revoked),
            (Some(me.clone().with(|k| k.expires_at = Some(NOW))), ActorRefused::Expired),
        ] {
            let mut ports = Ports::new();
            ports.keys.expect_insert_key().returning(move |_, _, decide, _, _| {
                let rows = FoundInWrite {
                    actor: found_as.as_ref().map(|k| (k, true)),
                    target: None,
                    organization_closed: false,
                };
                decide(rows).map(NewApiKey::into_stored)
            });
            let err = ports.service().create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await;
            assert!(matches!(err, Err(KeyOpError::Actor(r)) if r == refused), "{err:?}");
        }
        let mut ports = Ports::new();
        ports.keys.expect_insert_key().returning(move |_, _, decide, _, _| {
            decide(FoundInWrite { actor: Some((&me, false)), target: None, organization_closed: false })
                .map(NewApiKey::into_stored)
        });
        let err = ports.service().create_key(&caller, CreateKeyRequest::default(), &RequestMeta::default()).await;
        assert!(matches!(err, Err(KeyOpError::Actor(ActorRefused::OrganizationInactive))));
    }
}
