//! `DELETE /v1/account/api-keys/{key_id}`: the answer, idempotence, 404 for a key of
//! another organization, and the key refused on the next request, by every instance within
//! a second.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{on_both_backends, spawn_app_on, TestApp};

on_both_backends!(
    revoking_answers_the_key_as_listed_and_is_idempotent,
    revoking_an_unknown_or_foreign_key_is_404,
    revoked_keys_are_rejected_on_the_next_request,
    a_key_revoked_on_one_instance_is_refused_by_another_within_a_second,
);

async fn revoking_answers_the_key_as_listed_and_is_idempotent(app: TestApp) {
    let org = app.signup_org("idempotent@acme.test").await;
    let first = app.revoke_key(&org.key, &org.key_id).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.data()["id"], json!(org.key_id));
    assert_eq!(first.data()["is_active"], false);
    assert!(first.data().get("key").is_none());
    // The key revoked itself; revoking again needs another key of the organization.
    let other = app.signup_org("idempotent2@acme.test").await;
    app.revoke_key(&other.key, &org.key_id).await.assert_error(404, "key_not_found");
    let org2_second = app.new_key(&other.key, json!({"name": "Second"})).await;
    let second_id = app.list_keys(&other.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    let once = app.revoke_key(&other.key, &second_id).await;
    let twice = app.revoke_key(&other.key, &second_id).await;
    assert_eq!(once.status, StatusCode::OK);
    assert_eq!(twice.status, StatusCode::OK);
    assert_eq!(once.data(), twice.data());
    app.get_account(&org2_second).await.assert_error(401, "revoked_api_key");
    let listed = app.list_keys(&other.key).await;
    assert_eq!(listed.data().as_array().expect("array").len(), 2, "revoked keys stay listed");
    assert_eq!(listed.data()[0]["is_active"], false);
}

async fn revoking_an_unknown_or_foreign_key_is_404(app: TestApp) {
    let ours = app.signup_org("ours404@acme.test").await;
    let theirs = app.signup_org("theirs404@acme.test").await;
    for id in ["key_doesnotexist", "nonsense", theirs.key_id.as_str(), "key_%27%20OR%201%3D1"] {
        app.revoke_key(&ours.key, id).await.assert_error(404, "key_not_found");
    }
    assert_eq!(app.get_account(&theirs.key).await.status, StatusCode::OK, "the foreign key was not touched");
}

async fn revoked_keys_are_rejected_on_the_next_request(app: TestApp) {
    let org = app.signup_org("revoked@acme.test").await;
    let second = app.new_key(&org.key, json!({"name": "Second"})).await;
    assert_eq!(app.get_account(&second).await.status, StatusCode::OK);
    let list = app.list_keys(&org.key).await;
    let second_id = list.data()[0]["id"].as_str().expect("id").to_owned();
    let revoked = app.revoke_key(&org.key, &second_id).await;
    assert_eq!(revoked.status, StatusCode::OK);
    app.get_account(&second).await.assert_error(401, "revoked_api_key");
    app.list_keys(&second).await.assert_error(401, "revoked_api_key");
    // A key may revoke itself, and is dead right after.
    assert_eq!(app.revoke_key(&org.key, &org.key_id).await.status, StatusCode::OK);
    app.get_account(&org.key).await.assert_error(401, "revoked_api_key");
}

async fn a_key_revoked_on_one_instance_is_refused_by_another_within_a_second(app: TestApp) {
    let other = spawn_app_on(app.db.clone()).await;
    let org = app.signup_org("everywhere@acme.test").await;
    let doomed = app.new_key(&org.key, json!({"name": "Doomed"})).await;
    let doomed_id = app.list_keys(&org.key).await.data()[0]["id"].as_str().expect("id").to_owned();
    // Both instances know (and cache) the key.
    for _ in 0..3 {
        assert_eq!(app.get_account(&doomed).await.status, StatusCode::OK);
        assert_eq!(other.get_account(&doomed).await.status, StatusCode::OK);
    }
    assert_eq!(app.revoke_key(&org.key, &doomed_id).await.status, StatusCode::OK);
    let revoked = std::time::Instant::now();
    app.get_account(&doomed).await.assert_error(401, "revoked_api_key");
    loop {
        let reply = other.get_account(&doomed).await;
        if reply.status == StatusCode::UNAUTHORIZED {
            reply.assert_error(401, "revoked_api_key");
            break;
        }
        assert!(
            revoked.elapsed() < std::time::Duration::from_secs(1),
            "the other instance still serves the revoked key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The other keys of the organization keep working on both.
    assert_eq!(other.get_account(&org.key).await.status, StatusCode::OK);
}
