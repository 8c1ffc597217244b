//! The console (`GET /console` and its assets): its headers and that it asks no other host,
//! and every flow driven in a real headless browser (chromium over WebDriver, found by label
//! and role as a person with a screen reader finds them) against a real server.
//!
//! Without `chromedriver` and `chromium` the browser tests print `SKIPPED <name>` and pass;
//! `REQUIRE_BROWSER=1` makes that a failure. `UPDATE_SCREENSHOTS=1` rewrites the
//! screenshots in `docs/screenshots/`.

use std::future::Future;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use account_infra::testing::Backend;
use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};
use crate::webhook_deliveries::{app_for_webhooks, verified, Receiver};

const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

#[tokio::test]
async fn the_console_is_served_with_its_exact_headers_and_asks_no_other_host() {
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let page = app.client.get(app.url("/console")).send().await.expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let header = |r: &reqwest::Response, name: &str| {
        r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    };
    assert_eq!(header(&page, "content-security-policy"), CSP);
    assert_eq!(header(&page, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&page, "x-content-type-options"), "nosniff");
    assert!(header(&page, "access-control-allow-origin").is_empty(), "no CORS: the page calls its own origin");
    let html = page.text().await.expect("the page");

    // Every address the page names is on its own origin: absolute paths, never `//host`.
    let mut referenced = Vec::new();
    for attribute in ["src=\"", "href=\"", "action=\""] {
        for (at, _) in html.match_indices(attribute) {
            let rest = &html[at + attribute.len()..];
            referenced.push(rest[..rest.find('"').expect("a closing quote")].to_owned());
        }
    }
    assert_eq!(referenced, ["/console/assets/console.js", "/console/assets/console.css"], "{html}");
    assert!(!html.contains("style=") && !html.contains("<style"), "no inline style");
    assert!(!html.contains("<script>"), "no inline script");
    for (at, _) in html.match_indices(" on") {
        let name: String = html[at + 3..].chars().take_while(char::is_ascii_alphabetic).collect();
        assert!(!html[at + 3 + name.len()..].starts_with('='), "an inline handler: on{name}");
    }

    for (path, content_type) in [
        ("/console/assets/console.js", "text/javascript; charset=utf-8"),
        ("/console/assets/console.css", "text/css; charset=utf-8"),
    ] {
        let asset = app.client.get(app.url(path)).send().await.expect("sent");
        assert_eq!(asset.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&asset, "content-type"), content_type, "{path}");
        assert_eq!(header(&asset, "x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header(&asset, "content-security-policy"), CSP, "{path}");
        let text = asset.text().await.expect("the asset");
        // The one absolute URL is the SVG namespace, a name that is never fetched.
        let urls = text.matches("http://").count() + text.matches("https://").count() + text.matches("//cdn").count();
        let namespaces = text.matches("'http://www.w3.org/2000/svg'").count();
        assert_eq!(urls, namespaces, "{path} names another host");
        assert!(!text.contains("innerHTML") && !text.contains("outerHTML") && !text.contains("insertAdjacentHTML"));
        assert!(!text.contains("localStorage") && !text.contains("document.cookie"), "the key stays in sessionStorage");
    }

    // `/console/` is the page at its one address; other methods and names are refused in JSON.
    let no_redirects = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
    let slash = no_redirects.get(app.url("/console/")).send().await.expect("sent");
    assert_eq!(slash.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&slash, "location"), "/console");
    let post = app.request(Method::POST, "/console", None, None).await;
    post.assert_error(405, "method_not_allowed");
    assert_eq!(post.headers["allow"], "GET");
    app.request(Method::GET, "/console/assets/other.js", None, None).await.assert_error(404, "not_found");
    app.request(Method::GET, "/consoles", None, None).await.assert_error(404, "not_found");
    let document = app.request(Method::GET, "/openapi.json", None, None).await;
    assert!(!document.body["paths"].as_object().expect("paths").keys().any(|p| p.starts_with("/console")));
}

#[tokio::test]
async fn signing_up_shows_the_first_key_once_and_signs_in_with_it_until_sign_out() {
    let Some(browser) = Browser::start("signing_up_shows_the_first_key_once_and_signs_in_with_it_until_sign_out").await
    else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    browser.open(&app, "/console").await;
    browser.screenshot("sign-in").await;
    browser.field("Name").await.send_keys("Console Company").await.expect("typed");
    browser.field("Email").await.send_keys("console@example.com").await.expect("typed");
    browser.field("Plan").await.select_by_value("starter").await.expect("chosen");
    browser.button("Sign up").await.click().await.expect("clicked");

    let shown = browser.field("New API key").await;
    let key = browser
        .eventually("the first key", || async { shown.prop("value").await.ok().flatten().filter(|v| !v.is_empty()) })
        .await;
    assert!(key.starts_with("mem_live_"), "{key}");
    browser.sees("Copy this key now: it will not be shown again.").await;
    browser.button("Copy key").await.click().await.expect("clicked");
    browser.sees("Key copied.").await;
    // Pasted (Ctrl+V) into the sign-in field, the clipboard holds the key.
    let paste = browser.field("API key").await;
    paste.send_keys("\u{E009}v\u{E009}").await.expect("pasted");
    assert_eq!(paste.prop("value").await.expect("value"), Some(key.clone()), "the copy button copies the key");
    paste.clear().await.expect("cleared");
    let account = app.get_account(&key).await;
    assert_eq!(account.data()["name"], "Console Company");
    assert_eq!(account.data()["plan"]["id"], "starter");

    browser.button("Continue to the console").await.click().await.expect("clicked");
    browser.button("Sign out").await;
    assert_eq!(shown.prop("value").await.expect("value").as_deref(), Some(""), "shown once, then gone");
    browser.sees("console@example.com").await;
    assert!(!browser.html().await.contains(&key), "once signed in, the key is no longer in the page");
    let storage = browser
        .run("return [sessionStorage.getItem('account-console-key'), localStorage.length, document.cookie]")
        .await;
    assert_eq!(storage, json!([key, 0, ""]), "the key is in sessionStorage only");
    browser.screenshot("account").await;
    // A reload keeps the session (the tab's storage); only sign out ends it.
    browser.client.refresh().await.expect("reloaded");
    browser.sees("console@example.com").await;

    browser.button("Sign out").await.click().await.expect("clicked");
    browser.button("Sign in").await;
    let storage = browser.run("return sessionStorage.length").await;
    assert_eq!(storage, json!(0), "sign out forgets the key");
    browser.close(&app).await;
}

#[tokio::test]
async fn signing_in_needs_read_and_disables_what_the_key_may_not_do() {
    let Some(browser) = Browser::start("signing_in_needs_read_and_disables_what_the_key_may_not_do").await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("rights@example.com").await;
    let write_only = app.new_key(&org.key, json!({"name": "writer", "scopes": ["write"]})).await;
    let read_only = app.new_key(&org.key, json!({"name": "reader", "scopes": ["read"]})).await;
    browser.open(&app, "/console").await;

    browser.sign_in(&write_only).await;
    let refused = app.get_account(&write_only).await;
    refused.assert_error(403, "insufficient_scope");
    browser.sees(refused.body["error"]["message"].as_str().expect("message")).await;
    assert_eq!(browser.run("return sessionStorage.length").await, json!(0));

    // By keyboard alone: Enter in the key field signs in, Enter on a focused tab opens it.
    let field = browser.field("API key").await;
    field.clear().await.expect("cleared");
    field.send_keys(&format!("{read_only}\u{E007}")).await.expect("typed");
    browser.button("Sign out").await;
    browser.button("Keys").await.send_keys("\u{E007}").await.expect("pressed");
    browser.row("Keys of this organization, newest first", "reader").await;
    browser.button("Account").await.send_keys("\u{E007}").await.expect("pressed");
    assert!(!browser.button("Save changes").await.is_enabled().await.expect("state"));
    browser.button("Keys").await.click().await.expect("clicked");
    browser.row("Keys of this organization, newest first", "reader").await;
    assert!(!browser.button("Create key").await.is_enabled().await.expect("state"));
    assert!(!browser.button("Revoke writer").await.is_enabled().await.expect("state"));
    browser.close(&app).await;
}

#[tokio::test]
async fn keys_are_created_renamed_limited_rolled_and_revoked_from_the_console() {
    let Some(browser) = Browser::start("keys_are_created_renamed_limited_rolled_and_revoked_from_the_console").await
    else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("keys@example.com").await;
    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;
    browser.button("Keys").await.click().await.expect("clicked");
    let table = "Keys of this organization, newest first";
    let mine = browser.row(table, "Default Key").await;
    assert!(mine.text().await.expect("text").contains("this session"), "the signed-in key is marked");

    // Create: the new key is shown once, and listed.
    browser.field("Key name").await.send_keys("CI key").await.expect("typed");
    browser.checkbox("write").await.click().await.expect("unticked");
    browser.button("Create key").await.click().await.expect("clicked");
    let shown = browser.field("New API key").await;
    let created = browser
        .eventually("the new key", || async { shown.prop("value").await.ok().flatten().filter(|v| !v.is_empty()) })
        .await;
    assert_eq!(app.verify(&created).await, "valid");
    let row = browser.row(table, "CI key").await.text().await.expect("text");
    assert!(row.contains("read") && !row.contains("write") && row.contains("live"), "{row}");
    browser.button("Done").await.click().await.expect("clicked");
    browser.screenshot("keys").await;

    // Rename.
    browser.button("Rename CI key").await.click().await.expect("clicked");
    let name = browser.field("New name").await;
    name.clear().await.expect("cleared");
    name.send_keys("Deploy key").await.expect("typed");
    browser.button("Save name").await.click().await.expect("clicked");
    browser.row(table, "Deploy key").await;

    // An allowlist the API refuses: its message, in the dialog; then one it takes.
    browser.button("Edit allowlist of Deploy key").await.click().await.expect("clicked");
    let list = browser.field("Allowed addresses").await;
    list.send_keys("10.1.2.3/8").await.expect("typed");
    browser.button("Save allowlist").await.click().await.expect("clicked");
    let refused = app
        .request(Method::POST, "/v1/account/api-keys", Some(&org.key), Some(json!({"allowed_ips": ["10.1.2.3/8"]})))
        .await;
    refused.assert_error(400, "validation_error");
    browser.sees(refused.body["error"]["message"].as_str().expect("message")).await;
    list.clear().await.expect("cleared");
    list.send_keys("192.0.2.1, 198.51.100.0/24").await.expect("typed");
    browser.button("Save allowlist").await.click().await.expect("clicked");
    browser.row_with(table, "Deploy key", "192.0.2.1, 198.51.100.0/24").await;

    // Roll with a grace period: a new key shown once, the old one still listed until it ends.
    browser.button("Roll Deploy key").await.click().await.expect("clicked");
    let grace = browser.field("Grace period in hours (0–168)").await;
    grace.clear().await.expect("cleared");
    grace.send_keys("1").await.expect("typed");
    browser.button("Roll key").await.click().await.expect("clicked");
    let shown = browser.field("New API key").await;
    let rolled = browser
        .eventually("the rolled key", || async {
            shown.prop("value").await.ok().flatten().filter(|v| !v.is_empty() && *v != created)
        })
        .await;
    assert!(!browser.displayed("Continue with the new key").await, "only rolling the signed-in key offers that");
    browser.button("Done").await.click().await.expect("clicked");
    browser
        .eventually("both keys listed", || async { (browser.rows(table, "Deploy key").await == 2).then_some(()) })
        .await;
    assert_eq!(app.verify(&created).await, "ip_not_allowed", "the old key keeps its allowlist during the grace period");

    // Revoke (the newest "Deploy key", the rolled one), confirmed; a request with it is refused.
    browser.button("Revoke Deploy key").await.click().await.expect("clicked");
    browser.sees("Requests with this key are refused from now on.").await;
    browser.button("Revoke key").await.click().await.expect("clicked");
    // The eighth cell is "Active".
    browser.row_with_cell(table, "Deploy key", 8, "no").await;
    app.get_account(&rolled).await.assert_error(401, "revoked_api_key");

    // At 390 px wide the page does not scroll sideways (the table does, in its own box).
    browser.client.set_window_size(390, 844).await.expect("resized");
    let width = browser.run("return document.documentElement.scrollWidth").await;
    assert!(width.as_u64().is_some_and(|w| w <= 390), "{width}");
    browser.screenshot("keys-390px").await;
    browser.close(&app).await;
}

#[tokio::test]
async fn rolling_the_signed_in_key_continues_with_the_new_one_and_revoking_it_signs_out() {
    let Some(browser) =
        Browser::start("rolling_the_signed_in_key_continues_with_the_new_one_and_revoking_it_signs_out").await
    else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("roll-self@example.com").await;
    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;
    browser.button("Keys").await.click().await.expect("clicked");
    browser.row("Keys of this organization, newest first", "Default Key").await;
    browser.button("Roll Default Key").await.click().await.expect("clicked");
    browser.sees("This is the key this page is signed in with.").await;
    browser.button("Roll key").await.click().await.expect("clicked");
    browser.button("Continue with the new key").await.click().await.expect("clicked");
    let signed_in = browser
        .eventually("signed in with the new key", || async {
            let key = browser.run("return sessionStorage.getItem('account-console-key')").await;
            key.as_str().filter(|k| *k != org.key).map(str::to_owned)
        })
        .await;
    assert_eq!(app.verify(&signed_in).await, "valid");

    browser.button("Keys").await.click().await.expect("clicked");
    let mine = browser.row("Keys of this organization, newest first", "this session").await;
    assert!(mine.text().await.expect("text").contains(&signed_in[..15]), "the new key is the one marked");
    browser.button("Revoke Default Key").await.click().await.expect("clicked");
    browser.sees("you will be signed out").await;
    browser.button("Revoke key").await.click().await.expect("clicked");
    browser.sees("Signed out: the key this page was signed in with is revoked.").await;
    browser.button("Sign in").await;
    assert_eq!(browser.run("return sessionStorage.length").await, json!(0));
    app.get_account(&signed_in).await.assert_error(401, "revoked_api_key");

    // A key revoked elsewhere signs the page out with the API's message at its next request.
    browser.sign_in(&org.key).await;
    browser.button("Sign out").await;
    app.revoke_key(&org.key, &org.key_id).await.data();
    browser.button("Keys").await.click().await.expect("clicked");
    let message = app.get_account(&org.key).await.body["error"]["message"].as_str().expect("message").to_owned();
    browser.sees(&format!("Signed out: {message}")).await;
    browser.close(&app).await;
}

#[tokio::test]
async fn a_key_that_expires_while_signed_in_signs_the_page_out_with_the_apis_message() {
    let Some(browser) =
        Browser::start("a_key_that_expires_while_signed_in_signs_the_page_out_with_the_apis_message").await
    else {
        return;
    };
    // No credential cache: the expiry written by SQL below is seen at the next request.
    let app = spawn_app_with(Backend::Sqlite, &[("CACHE_MAX_KEYS", "0")]).await.expect("sqlite");
    let org = app.signup_org("expiring@example.com").await;
    let short = app.new_key(&org.key, json!({"name": "Short", "expires_in_days": 1})).await;
    browser.open(&app, "/console").await;
    browser.sign_in(&short).await;
    browser.button("Sign out").await;
    // A day later, as far as the database is concerned.
    app.execute_sql("UPDATE api_keys SET expires_at = created_at - 1000000 WHERE name = 'Short'");
    let refused = app.get_account(&short).await;
    refused.assert_error(401, "expired_api_key");
    browser.button("Keys").await.click().await.expect("clicked");
    browser.sees(&format!("Signed out: {}", refused.body["error"]["message"].as_str().expect("message"))).await;
    browser.button("Sign in").await;
    assert_eq!(browser.run("return sessionStorage.length").await, json!(0), "the key is forgotten");
    browser.close(&app).await;
}

#[tokio::test]
async fn the_account_is_changed_and_closed_behind_a_typed_confirmation() {
    let Some(browser) = Browser::start("the_account_is_changed_and_closed_behind_a_typed_confirmation").await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("change@example.com").await;
    app.signup_org("taken@example.com").await;
    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;

    let email = browser.field("Contact email").await;
    email.clear().await.expect("cleared");
    email.send_keys("taken@example.com").await.expect("typed");
    browser.button("Save changes").await.click().await.expect("clicked");
    browser.sees("an organization with this email already exists").await;
    email.clear().await.expect("cleared");
    email.send_keys("renamed@example.com").await.expect("typed");
    browser.field("Account plan").await.select_by_value("pro").await.expect("chosen");
    browser.button("Save changes").await.click().await.expect("clicked");
    browser.sees("Account saved.").await;
    let account = app.get_account(&org.key).await;
    assert_eq!(
        (&account.data()["email"], &account.data()["plan"]["id"]),
        (&json!("renamed@example.com"), &json!("pro"))
    );

    let close = browser.button("Close account").await;
    assert!(!close.is_enabled().await.expect("state"), "closed only once the id is typed");
    browser.field("Type the organization id to confirm").await.send_keys(&org.id).await.expect("typed");
    assert!(close.is_enabled().await.expect("state"));
    close.click().await.expect("clicked");
    browser.sees("Signed out: the account is closed and every key revoked.").await;
    app.get_account(&org.key).await.assert_error(401, "revoked_api_key");
    browser.close(&app).await;
}

#[tokio::test]
async fn the_usage_page_charts_the_days_with_the_right_totals() {
    let Some(browser) = Browser::start("the_usage_page_charts_the_days_with_the_right_totals").await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("usage@example.com").await;
    let backend = app.new_key(&org.key, json!({"name": "backend"})).await;
    for _ in 0..3 {
        assert_eq!(app.verify(&backend).await, "valid");
    }
    let gone = app.create_key(&org.key, Some(json!({"name": "gone"}))).await;
    let (gone_key, gone_id) = (gone.data()["key"].as_str().expect("key"), gone.data()["id"].as_str().expect("id"));
    app.revoke_key(&org.key, gone_id).await.data();
    for _ in 0..2 {
        assert_eq!(app.verify(gone_key).await, "revoked");
    }

    let before = app.request(Method::GET, "/v1/account/usage", Some(&org.key), None).await;
    let account_api_before = before.data()["total"]["account_api"].as_u64().expect("a count");

    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;
    browser.button("Usage").await.click().await.expect("clicked");
    browser.field("Period").await.select_by_value("7").await.expect("chosen");
    let chart = browser.find(Locator::XPath("//*[local-name()='svg' and @role='img']")).await;
    let label = browser
        .eventually("the 7-day chart", || async {
            chart.attr("aria-label").await.ok().flatten().filter(|l| l.ends_with(": 5 in all"))
        })
        .await;
    assert!(label.starts_with("Daily valid and refused uses"), "{label}");
    let bars =
        browser.client.find_all(Locator::XPath("//*[local-name()='svg']/*[local-name()='g']")).await.expect("bars");
    assert_eq!(bars.len(), 7, "one bar per day");
    for (term, count) in [("Valid", "3"), ("Refused", "2")] {
        let xpath = format!("//dt[normalize-space()='{term}']/following-sibling::dd[1][normalize-space()='{count}']");
        browser.find(Locator::XPath(&xpath)).await;
    }
    browser.row_with_cell("Refused uses in the period, by reason", "revoked", 2, "2").await;
    // The plan's included requests, prorated to the period as the API says.
    let usage = app.request(Method::GET, "/v1/account/usage", Some(&org.key), None).await;
    // The page's own requests (the account, its keys, usage twice) are the account API's,
    // never billed: the billable counts are the 3 verifications still.
    let page_requests = usage.data()["total"]["account_api"].as_u64().expect("a count") - account_api_before;
    assert!(page_requests >= 4, "{}", usage.body);
    assert_eq!((&usage.data()["total"]["valid"], &usage.data()["month_to_date"]["valid"]), (&json!(3), &json!(3)));
    let month = &usage.data()["month_to_date"];
    let included = month["included"].as_u64().expect("included").to_string();
    let grouped: Vec<String> =
        included.as_bytes().rchunks(3).rev().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    let period_start = month["period_start"].as_str().expect("period_start");
    browser.sees(&format!("3 of {} included requests since {period_start}", grouped.join(","))).await;
    let meter = browser.field("Valid verifications against the plan's included requests").await;
    let value = browser.client.execute("return arguments[0].value", vec![json!(meter)]).await.expect("its value");
    assert_eq!(value, json!(3));
    browser.screenshot("usage").await;
    browser.close(&app).await;
}

#[tokio::test]
async fn the_audit_log_pages_back_to_the_signup() {
    let Some(browser) = Browser::start("the_audit_log_pages_back_to_the_signup").await else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("audit@example.com").await;
    for n in 0..22 {
        app.new_key(&org.key, json!({"name": format!("key {n}")})).await;
    }
    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;
    browser.button("Audit log").await.click().await.expect("clicked");
    let table = "Changes to this organization, newest first";
    browser.row(table, "key.created").await;
    assert_eq!(browser.rows(table, "key.created").await, 20, "a page of 20");
    assert!(!browser.button("Newest events").await.is_enabled().await.expect("state"));
    browser.screenshot("audit-log").await;
    browser.button("Older events").await.click().await.expect("clicked");
    browser.row(table, "signup").await;
    assert_eq!(browser.rows(table, "key.created").await, 2, "the rest");
    assert!(!browser.button("Older events").await.is_enabled().await.expect("state"), "no more");
    browser.button("Newest events").await.click().await.expect("clicked");
    browser
        .eventually("the first page again", || async { (browser.rows(table, "key.created").await == 20).then_some(()) })
        .await;
    browser.close(&app).await;
}

#[tokio::test]
async fn the_console_follows_the_system_preference_for_dark() {
    let Some(browser) =
        Browser::start_with("the_console_follows_the_system_preference_for_dark", &["--force-dark-mode"]).await
    else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("dark@example.com").await;
    browser.open(&app, "/console").await;
    let dark = browser.run("return matchMedia('(prefers-color-scheme: dark)').matches").await;
    assert_eq!(dark, json!(true), "the browser prefers dark");
    let background = browser.run("return getComputedStyle(document.body).backgroundColor").await;
    assert_eq!(background, json!("rgb(13, 17, 23)"), "the dark palette");
    browser.sign_in(&org.key).await;
    browser.button("Keys").await.click().await.expect("clicked");
    browser.row("Keys of this organization, newest first", "Default Key").await;
    browser.screenshot("keys-dark").await;
    browser.close(&app).await;
}

#[tokio::test]
async fn webhook_endpoints_are_added_tested_disabled_rotated_and_deleted_from_the_console() {
    let Some(browser) =
        Browser::start("webhook_endpoints_are_added_tested_disabled_rotated_and_deleted_from_the_console").await
    else {
        return;
    };
    let app = app_for_webhooks(Backend::Sqlite).await.expect("sqlite");
    let receiver = Receiver::start(0).await;
    let org = app.signup_org("hooks@example.com").await;
    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;
    browser.button("Webhooks").await.click().await.expect("clicked");
    let table = "Webhook endpoints of this organization, oldest first";
    browser.row(table, "No endpoints yet.").await;

    // Refused (no event chosen): the API's message.
    browser.field("Endpoint URL").await.send_keys(&receiver.url).await.expect("typed");
    browser.button("Add endpoint").await.click().await.expect("clicked");
    let refused = app
        .request(Method::POST, "/v1/account/webhooks", Some(&org.key), Some(json!({"url": receiver.url, "events": []})))
        .await;
    refused.assert_error(400, "validation_error");
    browser.sees(refused.body["error"]["message"].as_str().expect("message")).await;

    // Added, with events chosen by their checkboxes: the signing secret shown once.
    browser.checkbox("key.revoked").await.click().await.expect("ticked");
    browser.checkbox("key.created").await.click().await.expect("ticked");
    browser.field("Description").await.send_keys("production alerts").await.expect("typed");
    browser.button("Add endpoint").await.click().await.expect("clicked");
    let shown = browser.field("Signing secret").await;
    let secret = browser
        .eventually("the signing secret", || async {
            shown.prop("value").await.ok().flatten().filter(|v| v.starts_with("whsec_"))
        })
        .await;
    browser.sees("Copy this secret now: it will not be shown again.").await;
    browser.button("Copy secret").await.click().await.expect("clicked");
    browser.sees("Secret copied.").await;
    let listed = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    let hook = &listed.data()[0];
    assert_eq!(
        (&hook["url"], &hook["events"], &hook["description"], &hook["enabled"]),
        (&json!(receiver.url), &json!(["key.created", "key.revoked"]), &json!("production alerts"), &json!(true))
    );
    let url = receiver.url.as_str();
    let row = browser.row_with(table, url, "key.created, key.revoked").await.text().await.expect("text");
    assert!(row.contains("production alerts") && row.contains("yes"), "{row}");
    browser.button("Done").await.click().await.expect("clicked");
    assert_eq!(shown.prop("value").await.expect("value").as_deref(), Some(""), "shown once, then gone");
    assert!(!browser.html().await.contains(&secret), "the secret is no longer in the page");

    // A test event: the receiver gets it, signed with the secret shown, and it is listed.
    browser.button(&format!("Send a test event to {url}")).await.click().await.expect("clicked");
    let got = receiver.until(PATIENCE, |got| !got.is_empty()).await;
    let event = verified(&secret, &got[0]);
    assert_eq!(event["type"], "webhook.test");
    let id = event["id"].as_str().expect("id");
    let deliveries = "Delivery attempts, newest first";
    // Cells: event, type, attempt, time, status or error, duration.
    let attempt = browser.row_with_cell(deliveries, id, 5, "204").await.text().await.expect("text");
    assert!(attempt.contains("webhook.test") && attempt.contains(" ms"), "{attempt}");
    browser.sees(&format!("Deliveries to {url}")).await;
    browser.screenshot("webhooks").await;

    // Deliveries page by page, 20 at a time: 21 more tests, sent through the API.
    let path = format!("/v1/account/webhooks/{}", hook["id"].as_str().expect("id"));
    for _ in 0..21 {
        let sent = app.request(Method::POST, &format!("{path}/test"), Some(&org.key), None).await;
        assert_eq!(sent.status, StatusCode::ACCEPTED, "{}", sent.body);
    }
    browser
        .eventually("22 attempts recorded", || async {
            let page = app.request(Method::GET, &format!("{path}/deliveries?limit=100"), Some(&org.key), None).await;
            (page.data()["attempts"].as_array().map(Vec::len) == Some(22)).then_some(())
        })
        .await;
    browser.button("Refresh deliveries").await.click().await.expect("clicked");
    browser.rows_become(deliveries, "webhook.test", 20).await;
    assert!(!browser.button("Newest deliveries").await.is_enabled().await.expect("state"));
    browser.button("Older deliveries").await.click().await.expect("clicked");
    browser.rows_become(deliveries, "webhook.test", 2).await;
    assert!(!browser.button("Older deliveries").await.is_enabled().await.expect("state"), "no more");
    browser.button("Newest deliveries").await.click().await.expect("clicked");
    browser.rows_become(deliveries, "webhook.test", 20).await;

    // Disabled, then enabled again (the third cell after the URL is "Enabled").
    browser.button(&format!("Disable {url}")).await.click().await.expect("clicked");
    browser.row_with_cell(table, url, 3, "no").await;
    browser.focus_is(&format!("Enable {url}")).await;
    let read = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert_eq!(read.data()[0]["enabled"], false);
    browser.button(&format!("Enable {url}")).await.click().await.expect("clicked");
    browser.row_with_cell(table, url, 3, "yes").await;
    let read = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert_eq!(read.data()[0]["enabled"], true);

    // Rotated: a new secret, shown once; the previous one signs beside it for a day.
    browser.button(&format!("Rotate the secret of {url}")).await.click().await.expect("clicked");
    browser.sees("the previous one keeps signing beside it for 24 hours").await;
    browser.button("Rotate secret").await.click().await.expect("clicked");
    let shown = browser.field("Signing secret").await;
    let rotated = browser
        .eventually("the new secret", || async {
            shown.prop("value").await.ok().flatten().filter(|v| v.starts_with("whsec_") && *v != secret)
        })
        .await;
    browser.button("Done").await.click().await.expect("clicked");
    let read = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert!(read.data()[0]["previous_secret_expires_at"].is_string(), "{}", read.body);
    assert!(!browser.html().await.contains(&rotated));

    // At 390 px wide the section, an endpoint listed, does not scroll
    // sideways (its tables do, each in its own box); the rest runs at that width.
    browser.client.set_window_size(390, 844).await.expect("resized");
    let width = browser.run("return document.documentElement.scrollWidth").await;
    assert!(width.as_u64().is_some_and(|w| w <= 390), "{width}");

    // Deleted, once confirmed.
    browser.button(&format!("Delete {url}")).await.click().await.expect("clicked");
    browser.sees("This cannot be undone.").await;
    browser.button("Delete endpoint").await.click().await.expect("clicked");
    browser.row(table, "No endpoints yet.").await;
    browser.focus_is("Webhooks").await;
    let read = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    assert_eq!(read.data(), &json!([]));
    browser.close(&app).await;
}

#[tokio::test]
async fn a_read_only_or_test_key_sees_the_webhook_controls_disabled() {
    let Some(browser) = Browser::start("a_read_only_or_test_key_sees_the_webhook_controls_disabled").await else {
        return;
    };
    let app = app_for_webhooks(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("hook-rights@example.com").await;
    let url = "http://127.0.0.1:9/hook";
    let body = json!({"url": url, "events": ["key.revoked"]});
    let created = app.request(Method::POST, "/v1/account/webhooks", Some(&org.key), Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let reader = app.new_key(&org.key, json!({"name": "reader", "scopes": ["read"]})).await;
    let tester = app.new_key(&org.key, json!({"name": "tester", "environment": "test"})).await;
    // As the service leaves an endpoint that failed for three days.
    app.execute_sql(
        "UPDATE webhook_endpoints SET enabled = false, disabled_reason = 'every delivery failed for 3 days'",
    );
    browser.open(&app, "/console").await;

    // Read only: the endpoint and its deliveries are shown; every change is disabled.
    browser.sign_in(&reader).await;
    browser.button("Webhooks").await.click().await.expect("clicked");
    // Its third cell after the URL is "Enabled", with the reason.
    let disabled = "no: every delivery failed for 3 days";
    browser.row_with_cell("Webhook endpoints of this organization, oldest first", url, 3, disabled).await;
    for name in [
        "Add endpoint".to_owned(),
        format!("Enable {url}"),
        format!("Send a test event to {url}"),
        format!("Rotate the secret of {url}"),
        format!("Delete {url}"),
    ] {
        assert!(!browser.button(&name).await.is_enabled().await.expect("state"), "{name} is enabled");
    }
    assert!(!browser.field("Endpoint URL").await.is_enabled().await.expect("state"));
    assert!(!browser.checkbox("key.created").await.is_enabled().await.expect("state"));
    browser.button(&format!("Deliveries to {url}")).await.click().await.expect("clicked");
    browser.row("Delivery attempts, newest first", "No deliveries yet.").await;

    // A test key: the API's refusal in the section, and nothing it could try.
    browser.button("Sign out").await.click().await.expect("clicked");
    browser.sign_in(&tester).await;
    browser.button("Webhooks").await.click().await.expect("clicked");
    let refused = app.request(Method::GET, "/v1/account/webhooks", Some(&tester), None).await;
    refused.assert_error(403, "environment_escalation");
    browser.sees(refused.body["error"]["message"].as_str().expect("message")).await;
    assert!(!browser.button("Add endpoint").await.is_enabled().await.expect("state"));
    assert_eq!(browser.rows("Webhook endpoints of this organization, oldest first", url).await, 0);
    browser.close(&app).await;
}

#[tokio::test]
async fn without_webhooks_configured_the_console_shows_the_services_message() {
    let Some(browser) = Browser::start("without_webhooks_configured_the_console_shows_the_services_message").await
    else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("no-hooks@example.com").await;
    browser.open(&app, "/console").await;
    browser.sign_in(&org.key).await;
    browser.button("Webhooks").await.click().await.expect("clicked");
    let refused = app.request(Method::GET, "/v1/account/webhooks", Some(&org.key), None).await;
    refused.assert_error(503, "webhooks_not_configured");
    browser.sees(refused.body["error"]["message"].as_str().expect("message")).await;
    assert!(!browser.displayed("Add endpoint").await, "nothing to add on this deployment");
    let alerts =
        browser.run("return [...document.querySelectorAll('[role=alert]')].filter(a => !a.hidden).length").await;
    assert_eq!(alerts, json!(0), "a message, not a failure");
    // The rest of the console works on.
    browser.button("Keys").await.click().await.expect("clicked");
    browser.row("Keys of this organization, newest first", "Default Key").await;
    browser.close(&app).await;
}

#[tokio::test]
async fn keyboard_alone_drives_the_keys_and_focus_returns_to_the_opener_when_a_dialog_closes() {
    let Some(browser) =
        Browser::start("keyboard_alone_drives_the_keys_and_focus_returns_to_the_opener_when_a_dialog_closes").await
    else {
        return;
    };
    let app = spawn_app(Backend::Sqlite).await.expect("sqlite");
    let org = app.signup_org("keyboard@example.com").await;
    let ci = app.new_key(&org.key, json!({"name": "CI key"})).await;
    browser.open(&app, "/console").await;

    // Sign in: Tab to the field, type, Enter.
    browser.tab_to("API key").await;
    browser.press(&format!("{}{ENTER}", org.key)).await;
    browser.button("Sign out").await;
    browser.tab_to("Keys").await;
    browser.press(ENTER).await;
    let table = "Keys of this organization, newest first";
    browser.row(table, "CI key").await;

    // Rename: the dialog takes the focus; once saved, the (redrawn) Rename button has it.
    browser.tab_to("Rename CI key").await;
    browser.press(ENTER).await;
    browser.focus_is("New name").await;
    browser.press(&format!("Deploy key{ENTER}")).await;
    browser.row(table, "Deploy key").await;
    browser.focus_is("Rename Deploy key").await;

    // Revoke: Escape cancels, back on the button; confirmed, the button is gone (disabled)
    // and the focus goes to the row's first control.
    browser.tab_to("Revoke Deploy key").await;
    browser.press(ENTER).await;
    browser.focus_is("Revoke key").await;
    browser.press(ESCAPE).await;
    browser.focus_is("Revoke Deploy key").await;
    browser.press(ENTER).await;
    browser.focus_is("Revoke key").await;
    browser.press(ENTER).await;
    browser.row_with_cell(table, "Deploy key", 8, "no").await;
    browser.focus_is("Rename Deploy key").await;
    assert_eq!(app.verify(&ci).await, "revoked");

    // Create: the new key, shown once, takes the focus; "Done" gives it back to the form.
    browser.tab_to("Key name").await;
    browser.press(&format!("Typed key{ENTER}")).await;
    browser.focus_is("New API key").await;
    browser.tab_to("Done").await;
    browser.press(ENTER).await;
    browser.focus_is("Key name").await;
    browser.row(table, "Typed key").await;
    assert!(!browser.displayed("Done").await, "the key is no longer shown");
    browser.close(&app).await;
}

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";
const TAB: &str = "\u{E004}";

/// A headless chromium driven by its own chromedriver, on a free port.
struct Browser {
    client: Client,
    _driver: Driver,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

/// A running chromedriver, ended with the chromium it started when dropped.
struct Driver(Child);

/// Browsers running at once: each is a few processes, and the suite shares the machine.
static BROWSERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole process group, chromedriver and the chromium it started: also when a
        // test failed before closing its browser.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const PATIENCE: Duration = Duration::from_secs(10);

impl Browser {
    /// The browser, or `None` (the test skipped) when chromedriver or chromium is missing.
    async fn start(test: &str) -> Option<Self> {
        Self::start_with(test, &[]).await
    }

    /// The browser with more command-line switches for chromium.
    async fn start_with(test: &str, switches: &[&str]) -> Option<Self> {
        let driver_path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let turn = BROWSERS.acquire().await.expect("never closed");
        let has_chromium = std::path::Path::new(&chromium).exists();
        let driver = port.as_ref().ok().filter(|_| has_chromium).and_then(|port| {
            Command::new(&driver_path)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()
        });
        let (Some(driver), Ok(port)) = (driver, port) else {
            assert!(
                std::env::var("REQUIRE_BROWSER").as_deref() != Ok("1"),
                "REQUIRE_BROWSER=1 but no browser: install chromium and chromium-driver"
            );
            // Written to stderr itself (not eprintln!, which the harness captures), to be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: no chromedriver or chromium (REQUIRE_BROWSER=1 makes this a failure)"
            );
            return None;
        };
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,800", "--force-prefers-reduced-motion", "--no-first-run"],
            },
        });
        let mut capabilities = capabilities;
        if let Some(args) = capabilities["goog:chromeOptions"]["args"].as_array_mut() {
            args.extend(switches.iter().map(|s| json!(s)));
        }
        let Value::Object(capabilities) = capabilities else { unreachable!("an object") };
        let driver = Driver(driver);
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities);
        let deadline = Instant::now() + 3 * PATIENCE;
        let browser = Self {
            client: loop {
                match builder.connect(&format!("http://127.0.0.1:{port}")).await {
                    Ok(client) => break client,
                    Err(e) if Instant::now() > deadline => panic!("chromedriver did not start a browser: {e}"),
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            },
            _driver: driver,
            _turn: turn,
        };
        browser.client.set_window_size(1280, 800).await.expect("sized");
        Some(browser)
    }

    /// Checks that every request the page made went to its own origin, and closes it.
    async fn close(self, app: &TestApp) {
        self.same_origin_only(app).await;
        let client = self.client.clone();
        client.close().await.expect("the browser closes");
    }

    async fn open(&self, app: &TestApp, path: &str) {
        self.client.goto(&app.url(path)).await.expect("the page opens");
    }

    /// Polls until `check` gives a value, or fails the test after `PATIENCE`.
    async fn eventually<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                let text = self.client.find(Locator::Css("body")).await.ok();
                let text = match text {
                    Some(body) => body.text().await.unwrap_or_default(),
                    None => String::new(),
                };
                panic!("never saw {what}; the page shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The first displayed element at `xpath`, waited for.
    async fn displayed_at(&self, xpath: &str) -> Option<Element> {
        for element in self.client.find_all(Locator::XPath(xpath)).await.ok()? {
            if element.is_displayed().await.unwrap_or(false) {
                return Some(element);
            }
        }
        None
    }

    async fn find(&self, locator: Locator<'_>) -> Element {
        let Locator::XPath(xpath) = locator else { unreachable!("XPath only") };
        self.eventually(xpath, || self.displayed_at(xpath)).await
    }

    /// The control labelled `label` (a `<label for>`).
    async fn field(&self, label: &str) -> Element {
        self.find(Locator::XPath(&format!("//*[@id=//label[normalize-space()=\"{label}\"]/@for]"))).await
    }

    /// The checkbox inside the label `label`.
    async fn checkbox(&self, label: &str) -> Element {
        self.find(Locator::XPath(&format!("//label[normalize-space()=\"{label}\"]/input[@type='checkbox']"))).await
    }

    /// The button named `name`, by its text or its `aria-label`.
    async fn button(&self, name: &str) -> Element {
        self.find(Locator::XPath(&format!("//button[normalize-space()=\"{name}\" or @aria-label=\"{name}\"]"))).await
    }

    async fn displayed(&self, name: &str) -> bool {
        self.displayed_at(&format!("//button[normalize-space()=\"{name}\" or @aria-label=\"{name}\"]")).await.is_some()
    }

    fn row_xpath(caption: &str, text: &str) -> String {
        format!("//table[caption[normalize-space()=\"{caption}\"]]/tbody/tr[contains(normalize-space(), \"{text}\")]")
    }

    /// The first row of the table captioned `caption` that contains `text`.
    async fn row(&self, caption: &str, text: &str) -> Element {
        self.find(Locator::XPath(&Self::row_xpath(caption, text))).await
    }

    /// Waits for a row that contains both texts.
    async fn row_with(&self, caption: &str, text: &str, also: &str) -> Element {
        let xpath = format!("{}[contains(normalize-space(), \"{also}\")]", Self::row_xpath(caption, text));
        self.find(Locator::XPath(&xpath)).await
    }

    /// Waits for a row that contains `text` and whose cell number `cell` (from 1, after the
    /// row's header) reads `value`.
    async fn row_with_cell(&self, caption: &str, text: &str, cell: usize, value: &str) -> Element {
        let xpath = format!("{}[td[{cell}][normalize-space()=\"{value}\"]]", Self::row_xpath(caption, text));
        self.find(Locator::XPath(&xpath)).await
    }

    /// Waits until `n` rows of the table captioned `caption` contain `text`.
    async fn rows_become(&self, caption: &str, text: &str, n: usize) {
        self.eventually(&format!("{n} rows with {text:?}"), || async {
            (self.rows(caption, text).await == n).then_some(())
        })
        .await;
    }

    async fn rows(&self, caption: &str, text: &str) -> usize {
        self.client.find_all(Locator::XPath(&Self::row_xpath(caption, text))).await.map(|r| r.len()).unwrap_or(0)
    }

    /// Waits until the page shows `text` (visible text, anywhere).
    async fn sees(&self, text: &str) {
        let xpath = format!("//*[not(self::script)][contains(normalize-space(text()), \"{text}\")]");
        self.find(Locator::XPath(&xpath)).await;
    }

    async fn sign_in(&self, key: &str) {
        let field = self.field("API key").await;
        field.clear().await.expect("cleared");
        field.send_keys(key).await.expect("typed");
        self.button("Sign in").await.click().await.expect("clicked");
    }

    /// The accessible name of the focused element: its `aria-label`, its label, or its text.
    async fn focused_name(&self) -> String {
        let script = "const e = document.activeElement; if (!e || e === document.body) return ''; \
                      const name = e.getAttribute('aria-label') || (e.labels && e.labels.length ? e.labels[0].textContent : e.textContent); \
                      return name.replace(/\\s+/g, ' ').trim();";
        self.run(script).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the focused element is the one named `name`.
    async fn focus_is(&self, name: &str) {
        self.eventually(&format!("the focus on {name:?}"), || async {
            (self.focused_name().await == name).then_some(())
        })
        .await;
    }

    /// Presses `keys` one after the other on the keyboard: they go to whatever has the focus.
    async fn press(&self, keys: &str) {
        let mut typing = KeyActions::new("keyboard".to_owned());
        for key in keys.chars() {
            typing = typing.then(KeyAction::Down { value: key }).then(KeyAction::Up { value: key });
        }
        self.client.perform_actions(typing).await.expect("typed");
    }

    /// Presses Tab until the control named `name` has the focus.
    async fn tab_to(&self, name: &str) {
        for _ in 0..100 {
            if self.focused_name().await == name {
                return;
            }
            self.press(TAB).await;
        }
        panic!("Tab never reached {name:?}");
    }

    async fn run(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.expect("the script runs")
    }

    async fn html(&self) -> String {
        self.client.source().await.expect("the page source")
    }

    /// Every request the page made (its resources and its `fetch` calls) went to its own origin.
    async fn same_origin_only(&self, app: &TestApp) {
        let names = self.run("return performance.getEntriesByType('resource').map(e => e.name)").await;
        let names = names.as_array().expect("names");
        assert!(names.iter().any(|n| n.as_str().is_some_and(|n| n.contains("/v1/account"))), "{names:?}");
        for name in names {
            let name = name.as_str().expect("a name");
            assert!(name.starts_with(&format!("{}/", app.address)), "a request to another origin: {name}");
        }
    }

    /// Writes `docs/screenshots/NAME.png` when `UPDATE_SCREENSHOTS=1`.
    async fn screenshot(&self, name: &str) {
        if std::env::var("UPDATE_SCREENSHOTS").as_deref() != Ok("1") {
            return;
        }
        // Let the last answer render before the picture.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots");
        std::fs::create_dir_all(&dir).expect("the directory");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("written");
    }
}
