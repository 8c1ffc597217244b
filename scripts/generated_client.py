"""Drives every operation of the API through a Python client generated from docs/openapi.json
(openapi-python-client), against a running server: each answers as the document says and
parses into the generated model. Run by scripts/generated-client.sh."""

import json
import sys
from pathlib import Path

from account_api_client import AuthenticatedClient, Client
from account_api_client.api.accounts import (
    close_account,
    get_account,
    get_usage,
    list_audit_events,
    list_plans,
    sign_up,
    update_account,
)
from account_api_client.api.api_keys import (
    create_api_key,
    get_api_key,
    list_api_keys,
    report_leaked_keys,
    revoke_api_key,
    roll_api_key,
    update_api_key,
)
from account_api_client.api.internal import verify_api_key
from account_api_client.api.webhooks import (
    create_webhook,
    delete_webhook,
    get_webhook,
    list_webhook_deliveries,
    list_webhooks,
    rotate_webhook_secret,
    test_webhook,
    update_webhook,
)
from account_api_client.api.operations import check_liveness, check_readiness, get_metrics, get_openapi_document
from account_api_client.models import (
    CloseAccountRequest,
    CreateApiKeyRequest,
    CreateWebhookRequest,
    LeakReportRequest,
    PlanId,
    RollApiKeyRequest,
    SignupRequest,
    UpdateAccountRequest,
    UpdateApiKeyRequest,
    UpdateWebhookRequest,
    VerifyKeyRequest,
    WebhookEventType,
)
from account_api_client.types import UNSET

base_url, service_token, document = sys.argv[1], sys.argv[2], sys.argv[3]
driven: set[str] = set()


def call(module, status: int, **kwargs):
    """One operation through the generated client: the status expected and a parsed body."""
    response = module.sync_detailed(**kwargs)
    name = module.__name__.rsplit(".", 1)[1]
    if response.status_code != status:
        sys.exit(f"{name}: {response.status_code}, expected {status}: {response.content[:300]!r}")
    driven.add(name)
    return response.parsed


anonymous = AuthenticatedClient(base_url=base_url, token="", prefix="", raise_on_unexpected_status=True)
call(check_liveness, 200, client=Client(base_url=base_url))
call(check_readiness, 200, client=Client(base_url=base_url))
call(get_metrics, 200, client=Client(base_url=base_url))
call(get_openapi_document, 200, client=Client(base_url=base_url))
call(list_plans, 200, client=anonymous)
signup = call(sign_up, 201, client=anonymous, body=SignupRequest(name="Generated", email="generated@client.test"))
key = signup.data.api_key.key
me = AuthenticatedClient(base_url=base_url, token=key, raise_on_unexpected_status=True)
assert call(get_account, 200, client=me).data.org_id == signup.data.account.org_id

body = CreateApiKeyRequest(name="Client", allowed_ips=["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
created = call(create_api_key, 201, client=me, body=body).data
assert created.allowed_ips == ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"], created.allowed_ips
assert any(k.id == created.id for k in call(list_api_keys, 200, client=me).data)
assert call(get_api_key, 200, client=me, key_id=created.id).data.name == "Client"
renamed = call(update_api_key, 200, client=me, key_id=created.id, body=UpdateApiKeyRequest(name="Renamed")).data
assert renamed.name == "Renamed" and renamed.allowed_ips == created.allowed_ips
anywhere = call(update_api_key, 200, client=me, key_id=created.id, body=UpdateApiKeyRequest(allowed_ips=None)).data
assert anywhere.allowed_ips is None
rolled = call(roll_api_key, 201, client=me, key_id=created.id, body=RollApiKeyRequest(expires_in_hours=0)).data
assert rolled.rolled_from == created.id
assert call(revoke_api_key, 200, client=me, key_id=rolled.id).data.is_active is False

service = AuthenticatedClient(base_url=base_url, token=service_token, raise_on_unexpected_status=True)
verdict = call(verify_api_key, 200, client=service, body=VerifyKeyRequest(key=key, client_ip="127.0.0.1")).data
assert verdict.valid and verdict.code == "valid", verdict
call(get_usage, 200, client=me, days=7)
assert call(list_audit_events, 200, client=me, limit=10).data.events
leaked = call(report_leaked_keys, 200, client=anonymous, body=LeakReportRequest(keys=[rolled.key])).data
assert leaked is not UNSET
upgraded = call(update_account, 200, client=me, body=UpdateAccountRequest(name="Generated Ltd", plan_id=PlanId.STARTER)).data
assert upgraded.name == "Generated Ltd" and upgraded.plan.id == PlanId.STARTER, upgraded
hook_body = CreateWebhookRequest(url="http://127.0.0.1:9/hook", events=[WebhookEventType.KEY_REVOKED])
hook = call(create_webhook, 201, client=me, body=hook_body).data
assert hook.secret.startswith("whsec_") and hook.events == [WebhookEventType.KEY_REVOKED], hook
assert [h.id for h in call(list_webhooks, 200, client=me).data] == [hook.id]
assert call(get_webhook, 200, client=me, webhook_id=hook.id).data.enabled
paused = call(update_webhook, 200, client=me, webhook_id=hook.id, body=UpdateWebhookRequest(enabled=False)).data
assert paused.enabled is False, paused
rotated = call(rotate_webhook_secret, 200, client=me, webhook_id=hook.id).data
assert rotated.secret != hook.secret and rotated.previous_secret_expires_at, rotated
assert call(test_webhook, 202, client=me, webhook_id=hook.id).data.event_id.startswith("msg_")
assert call(list_webhook_deliveries, 200, client=me, webhook_id=hook.id, limit=10).data.has_more is False
call(delete_webhook, 204, client=me, webhook_id=hook.id)
org_id = signup.data.account.org_id
closed = call(close_account, 200, client=me, body=CloseAccountRequest(confirm=org_id)).data
assert closed.closed_at is not None and closed.closed_at is not UNSET, closed

operations = {
    operation["operationId"]
    for path in json.loads(Path(document).read_text())["paths"].values()
    for operation in path.values()
}
if operations != driven:
    sys.exit(f"operations not driven by the generated client: {sorted(operations - driven)}")
print(f"the generated client drove all {len(driven)} operations")
