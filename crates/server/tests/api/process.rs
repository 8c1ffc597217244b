//! The `account-api` binary as a process: `--help` and `--version`, start-up failures,
//! graceful shutdown (SIGTERM, Ctrl-C) with the request in flight finished and the last uses
//! written, no key in any log line or stored byte, and no database or TLS library linked
//! dynamically. Its helpers start the binary for the other files too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use account_infra::testing::TestDatabase;

use crate::helpers::on_both_backends;

on_both_backends!(database: a_use_is_written_to_the_database_at_sigterm);

pub(crate) fn account_api() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_account-api"));
    command.env_clear().env("LOG_FORMAT", "json").env("RUST_LOG", "info");
    command
}

/// Starts the server and returns it with the port it bound (read from its log).
pub(crate) fn start_server(
    database_url: &str,
    extra: &[(&str, &str)],
) -> (Child, u16, std::sync::mpsc::Receiver<String>) {
    let mut child = account_api()
        .envs(extra.iter().copied())
        .env("DATABASE_URL", database_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["message"] == "listening" {
            let port = event["port"].as_u64().expect("port logged");
            return (child, u16::try_from(port).expect("a port"), rx);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the server did not report listening");
}

pub(crate) fn send_signal(child: &Child, signal: &str) {
    let status =
        Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]).status().expect("kill runs");
    assert!(status.success());
}

pub(crate) fn wait_with_timeout(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the process did not exit in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Signs an organization up on a running server and returns the answer.
pub(crate) async fn sign_up(client: &reqwest::Client, base: &str, email: &str) -> serde_json::Value {
    let answer = client
        .post(format!("{base}/v1/signup"))
        .json(&serde_json::json!({"name": "Acme", "email": email}))
        .send()
        .await
        .expect("sent");
    answer.json().await.expect("json")
}

#[test]
fn help_and_version_are_answered() {
    let help = account_api().arg("--help").output().expect("runs");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("serve") && text.contains("migrate"), "{text}");
    for (variable, _) in account_server::config::VARIABLES {
        assert!(text.contains(variable), "--help does not list {variable}: {text}");
    }
    let version = account_api().arg("--version").output().expect("runs");
    assert!(String::from_utf8_lossy(&version.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn an_unsupported_database_url_stops_the_start_with_a_clear_message() {
    let output = account_api().env("DATABASE_URL", "mysql://root:pw@localhost/app").output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DATABASE_URL") && stderr.contains("postgres://") && stderr.contains("sqlite://"),
        "{stderr}"
    );
    assert!(!stderr.contains("pw@"), "the password leaked: {stderr}");
}

#[test]
fn an_unreachable_database_is_retried_then_the_start_fails_with_a_message() {
    let started = Instant::now();
    let output = account_api()
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nothing")
        .env("DATABASE_CONNECT_TIMEOUT_S", "2")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(started.elapsed() >= Duration::from_millis(1500), "it gave up without retrying");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database not reachable yet"), "no retry was logged: {stderr}");
    assert!(stderr.contains("DATABASE_CONNECT_TIMEOUT_S"), "{stderr}");
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_zero() {
    request_in_flight_finishes_after("TERM");
}

#[test]
fn ctrl_c_lets_the_request_in_flight_finish_then_exits_zero() {
    request_in_flight_finishes_after("INT");
}

fn request_in_flight_finishes_after(signal: &str) {
    let db = TestDatabase::sqlite();
    let (mut child, port, _logs) = start_server(&db.url(), &[]);
    let body = br#"{"name": "Graceful", "email": "graceful@acme.test"}"#;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    write!(
        stream,
        "POST /v1/signup HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("headers sent");
    stream.write_all(&body[..10]).expect("half the body sent");
    std::thread::sleep(Duration::from_millis(300));
    send_signal(&child, signal);
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body[10..]).expect("the rest sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
}

/// Read from the database itself once the server is gone: not through an instance that
/// saw the use and would show it from memory.
async fn a_use_is_written_to_the_database_at_sigterm(db: TestDatabase) {
    // No periodic flush can happen during the test: only the final one can write the use.
    let (mut child, port, _logs) = start_server(&db.url(), &[("LAST_USED_FLUSH_SECS", "60")]);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let signup = sign_up(&client, &base, "flush@acme.test").await;
    let key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let key_id = signup["data"]["api_key"]["id"].as_str().expect("id").to_owned();
    let used = client.get(format!("{base}/v1/account")).bearer_auth(&key).send().await.expect("sent");
    assert_eq!(used.status().as_u16(), 200);
    send_signal(&child, "TERM");
    assert!(wait_with_timeout(&mut child, Duration::from_secs(15)).success());
    assert!(crate::helpers::stored_last_used_at(&db, &key_id).is_some(), "the use was lost at shutdown");
}

/// Runs the real binary at the most verbose log level through every endpoint, valid and
/// invalid, with keys in every place a client may put one, then searches the whole log and
/// the database files for any key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_log_line_and_no_stored_byte_holds_a_full_key() {
    let db = TestDatabase::sqlite();
    let service_token = "internal-token-for-the-log-test-0123456789";
    let (mut child, port, logs) = start_server(
        &db.url(),
        &[("RUST_LOG", "trace"), ("LAST_USED_FLUSH_SECS", "1"), ("INTERNAL_SERVICE_TOKEN", service_token)],
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let json = |r: reqwest::Response| async move { r.json::<serde_json::Value>().await.expect("json") };

    let signup = json(
        client
            .post(format!("{base}/v1/signup"))
            .json(&serde_json::json!({"name": "Acme", "email": "logs@acme.test"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let main_key = signup["data"]["api_key"]["key"].as_str().expect("key").to_owned();
    let mut keys = vec![main_key.clone()];
    for body in [serde_json::json!({"scopes": ["read"]}), serde_json::json!({"environment": "test", "name": "T"})] {
        let created = json(
            client
                .post(format!("{base}/v1/account/api-keys"))
                .bearer_auth(&main_key)
                .json(&body)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        keys.push(created["data"]["key"].as_str().expect("key").to_owned());
    }
    let listed =
        json(client.get(format!("{base}/v1/account/api-keys")).bearer_auth(&main_key).send().await.expect("sent"))
            .await;
    let read_key_id = listed["data"][1]["id"].as_str().expect("id").to_owned();
    for key in &keys {
        client.get(format!("{base}/v1/account")).bearer_auth(key).send().await.expect("sent");
        // Keys where they do not belong: a wrong scheme, the body, the path, the query.
        client
            .get(format!("{base}/v1/account"))
            .header("authorization", format!("Token {key}"))
            .send()
            .await
            .expect("sent");
        client
            .post(format!("{base}/v1/account/api-keys"))
            .bearer_auth(&main_key)
            .json(&serde_json::json!({"key": key}))
            .send()
            .await
            .expect("sent");
        client.delete(format!("{base}/v1/account/api-keys/{key}")).bearer_auth(&main_key).send().await.expect("sent");
        client.get(format!("{base}/v1/account?api_key={key}")).send().await.expect("sent");
        let mut typo = key.clone();
        typo.pop();
        client.get(format!("{base}/v1/account")).bearer_auth(format!("{typo}x")).send().await.expect("sent");
    }
    client
        .delete(format!("{base}/v1/account/api-keys/{read_key_id}"))
        .bearer_auth(&main_key)
        .send()
        .await
        .expect("sent");
    client.get(format!("{base}/v1/account")).bearer_auth(&keys[1]).send().await.expect("sent");
    // Keys through the other routes that carry them: verification, rolling, leak reports.
    for key in &keys {
        let verified = client
            .post(format!("{base}/v1/internal/verify-key"))
            .bearer_auth(service_token)
            .json(&serde_json::json!({"key": key, "scopes": ["write"]}))
            .send()
            .await
            .expect("sent");
        assert!(verified.status().is_success(), "{}", verified.status());
    }
    let main_key_id =
        listed["data"].as_array().expect("keys").last().expect("the signup key")["id"].as_str().expect("id").to_owned();
    let rolled = json(
        client
            .post(format!("{base}/v1/account/api-keys/{main_key_id}/roll"))
            .bearer_auth(&main_key)
            .json(&serde_json::json!({"expires_in_hours": 1}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    keys.push(rolled["data"]["key"].as_str().unwrap_or_else(|| panic!("rolled: {rolled}")).to_owned());
    let leaked = client
        .post(format!("{base}/v1/api-keys/revoke-leaked"))
        .json(&serde_json::json!({"keys": [keys[2], "mem_live_not_a_real_key"]}))
        .send()
        .await
        .expect("sent");
    assert!(leaked.status().is_success(), "{}", leaked.status());
    tokio::time::sleep(Duration::from_millis(1500)).await; // a usage flush

    send_signal(&child, "TERM");
    let status = wait_with_timeout(&mut child, Duration::from_secs(15));
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(300)); // the reader thread drains the pipe
    let lines: Vec<String> = logs.try_iter().collect();
    assert!(lines.len() > 50, "trace logging produced too little to be a fair test: {}", lines.len());
    let stored: Vec<u8> = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::read(format!("{}{suffix}", db.url().trim_start_matches("sqlite://"))).ok())
        .flatten()
        .collect();
    for key in &keys {
        // The secret after the displayed prefix (`mem_live_` and 6 characters) is never shown.
        let hidden = &key[key.len() - 32..];
        for line in &lines {
            assert!(!line.contains(hidden), "a log line holds a key: {line}");
        }
        assert!(!stored.windows(hidden.len()).any(|w| w == hidden.as_bytes()), "the database holds a key in clear");
    }
}

#[test]
fn the_binary_links_no_database_or_tls_library_dynamically() {
    let output = Command::new("ldd").arg(env!("CARGO_BIN_EXE_account-api")).output().expect("ldd runs");
    let libraries = String::from_utf8_lossy(&output.stdout);
    assert!(libraries.contains("libc"), "ldd said: {libraries}");
    for bundled in ["libpq", "libsqlite3", "libssl", "libcrypto"] {
        assert!(!libraries.contains(bundled), "{bundled} is linked dynamically: {libraries}");
    }
}
