//! `spawn_app()` and the small vocabulary the tests speak in.

use account_infra::testing::{Backend, TestDatabase};
use account_server::{Application, Config};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};

/// Runs each named test body on SQLite, and on PostgreSQL when configured, as the tests
/// `sqlite::NAME` and `postgres::NAME` of the calling module (so once per module). A body is
/// - `async fn NAME(app: TestApp)`, named first: given an application on a database of its own;
/// - `async fn NAME(db: TestDatabase)`, named after `database:`: given a fresh database, not
///   migrated, for a test that starts what runs on it (the binary, a verifier);
/// - `async fn NAME(backend: Backend)`, named after `backend:`: given the backend alone, for a
///   test that needs settings or databases of its own; on PostgreSQL not configured it skips
///   itself, when `TestDatabase::new` or `spawn_app_with` gives it `None`.
///
/// `on_both_backends!(a, b; database: c; backend: d)`; each part may be left out.
macro_rules! on_both_backends {
    (database: $($rest:tt)*) => {
        $crate::helpers::on_both_backends!(; database: $($rest)*);
    };
    (backend: $($rest:tt)*) => {
        $crate::helpers::on_both_backends!(; backend: $($rest)*);
    };
    (
        $($name:ident),* $(,)?
        $(; database: $($with_database:ident),* $(,)?)?
        $(; backend: $($with_backend:ident),* $(,)?)?
    ) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let app = $crate::helpers::spawn_app(account_infra::testing::Backend::Sqlite).await.expect("sqlite");
                super::$name(app).await
            })*
            $($(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $with_database() {
                super::$with_database(account_infra::testing::TestDatabase::sqlite()).await
            })*)?
            $($(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $with_backend() {
                super::$with_backend(account_infra::testing::Backend::Sqlite).await
            })*)?
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                if let Some(app) = $crate::helpers::spawn_app(account_infra::testing::Backend::Postgres).await {
                    super::$name(app).await
                }
            })*
            $($(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $with_database() {
                if let Some(db) = account_infra::testing::TestDatabase::postgres() {
                    super::$with_database(db).await
                }
            })*)?
            $($(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $with_backend() {
                super::$with_backend(account_infra::testing::Backend::Postgres).await
            })*)?
        }
    };
}
pub(crate) use on_both_backends;

/// The `INTERNAL_SERVICE_TOKEN` every test instance has, unless a test sets it otherwise:
/// verification (`POST /v1/internal/verify-key`) is what a plan bills.
pub const SERVICE_TOKEN: &str = "internal-service-token-for-tests";

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: std::sync::Arc<TestDatabase>,
}

/// A running application on a database of its own.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, &[]).await
}

/// A running application with extra configuration (`(variable, value)` pairs).
pub async fn spawn_app_with(backend: Backend, settings: &[(&str, &str)]) -> Option<TestApp> {
    let db = std::sync::Arc::new(TestDatabase::new(backend)?);
    Some(spawn_app_on_with(db, settings).await)
}

/// Another instance on the same database (as behind a load balancer).
pub async fn spawn_app_on(db: std::sync::Arc<TestDatabase>) -> TestApp {
    spawn_app_on_with(db, &[]).await
}

pub async fn spawn_app_on_with(db: std::sync::Arc<TestDatabase>, settings: &[(&str, &str)]) -> TestApp {
    let url = db.url();
    let config = Config::from_lookup(|name| {
        if let Some((_, value)) = settings.iter().find(|(k, _)| *k == name) {
            return Some((*value).to_owned());
        }
        match name {
            "DATABASE_URL" => Some(url.clone()),
            "BIND_ADDR" => Some("127.0.0.1:0".to_owned()),
            "LAST_USED_FLUSH_SECS" => Some("1".to_owned()),
            "DATABASE_POOL_SIZE" => Some("8".to_owned()),
            // Every test comes from 127.0.0.1: the limits' own tests turn them on.
            "RATE_LIMIT_SIGNUPS_PER_HOUR" | "RATE_LIMIT_AUTH_FAILURES_PER_MINUTE" => Some("0".to_owned()),
            "INTERNAL_SERVICE_TOKEN" => Some(SERVICE_TOKEN.to_owned()),
            _ => None,
        }
    })
    .expect("test configuration is valid");
    let app = Application::build(config).await.expect("the application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let app = TestApp { address, client: reqwest::Client::new(), db };
    // As a load balancer does: no request before the instance says it is ready (warm start).
    // Asked with a client of its own, so that the test's client starts with no connection.
    let (deadline, probe) = (std::time::Instant::now() + std::time::Duration::from_secs(10), reqwest::Client::new());
    while probe.get(app.url("/readyz")).send().await.map(|r| r.status()).ok() != Some(StatusCode::OK) {
        assert!(std::time::Instant::now() < deadline, "the instance never became ready");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    app
}

/// A response read whole: status, headers and JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub async fn read(response: Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
        Self { status, headers, body }
    }

    pub fn data(&self) -> &Value {
        assert_eq!(self.body["success"], json!(true), "{}", self.body);
        &self.body["data"]
    }

    /// Asserts the error envelope with this status, whatever the code.
    pub fn assert_error_status(&self, status: u16) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["success"], json!(false), "{}", self.body);
    }

    /// Asserts the error envelope with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.body);
        assert_eq!(self.body["success"], json!(false), "{}", self.body);
        assert_eq!(self.body["error"]["code"], json!(code), "{}", self.body);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
        let content_type = self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
        assert!(content_type.starts_with("application/json"), "{content_type}");
    }
}

/// An organization signed up through the API, with its first key.
pub struct Org {
    pub id: String,
    pub key: String,
    pub key_id: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn request(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.expect("the request is sent")).await
    }

    /// Sends a raw body with the given content type.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path)).header("content-type", content_type).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        Reply::read(request.send().await.expect("the request is sent")).await
    }

    pub async fn signup(&self, body: Value) -> Reply {
        self.request(Method::POST, "/v1/signup", None, Some(body)).await
    }

    pub async fn signup_org(&self, email: &str) -> Org {
        let reply = self.signup(json!({"name": "Acme", "email": email})).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        let data = reply.data();
        Org {
            id: data["account"]["org_id"].as_str().expect("org_id").to_owned(),
            key: data["api_key"]["key"].as_str().expect("key").to_owned(),
            key_id: data["api_key"]["id"].as_str().expect("key id").to_owned(),
        }
    }

    pub async fn get_account(&self, key: &str) -> Reply {
        self.request(Method::GET, "/v1/account", Some(key), None).await
    }

    pub async fn list_keys(&self, key: &str) -> Reply {
        self.request(Method::GET, "/v1/account/api-keys", Some(key), None).await
    }

    pub async fn create_key(&self, key: &str, body: Option<Value>) -> Reply {
        self.request(Method::POST, "/v1/account/api-keys", Some(key), body).await
    }

    pub async fn revoke_key(&self, key: &str, key_id: &str) -> Reply {
        self.request(Method::DELETE, &format!("/v1/account/api-keys/{key_id}"), Some(key), None).await
    }

    /// Creates a key and returns its full secret.
    pub async fn new_key(&self, key: &str, body: Value) -> String {
        let reply = self.create_key(key, Some(body)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        reply.data()["key"].as_str().expect("key").to_owned()
    }

    /// Verifies `key` as another service does (`POST /v1/internal/verify-key`, no scope
    /// required): the verdict's `code`.
    pub async fn verify(&self, key: &str) -> String {
        let request = self.client.post(self.url("/v1/internal/verify-key")).bearer_auth(SERVICE_TOKEN);
        let reply = Reply::read(request.json(&json!({"key": key})).send().await.expect("sent")).await;
        reply.data()["code"].as_str().expect("a code").to_owned()
    }

    pub async fn key_count(&self, key: &str) -> usize {
        self.list_keys(key).await.data().as_array().expect("array").len()
    }

    /// A SQL session of the test's own on the test database, outside any instance's pool.
    pub fn db_session(&self) -> account_infra::DbConnection {
        account_infra::Database::new(self.db.target().clone(), &account_infra::PoolOptions::for_machine())
            .connect_once()
            .expect("a session of our own")
    }

    /// Runs SQL directly on the test database: for states the API cannot reach quickly
    /// (a key past its expiry, an organization deactivated by an operator).
    pub fn execute_sql(&self, sql: &str) {
        execute_sql_on(&self.db, sql);
    }
}

/// Runs SQL directly on a test database, with or without an instance on it.
pub fn execute_sql_on(db: &TestDatabase, sql: &str) {
    match db.target() {
        account_infra::DatabaseTarget::Sqlite(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().expect("utf-8")).expect("open sqlite");
            conn.batch_execute(&format!("PRAGMA busy_timeout = 5000; {sql}")).expect("sql runs");
        }
        account_infra::DatabaseTarget::Postgres(url) => {
            let mut conn = diesel::PgConnection::establish(url).expect("connect");
            conn.batch_execute(sql).expect("sql runs");
        }
    }
}

/// A well-formed key, its checksum right, that no organization holds: a guess that could
/// have succeeded (a malformed one never could, and is not counted as a guess).
pub fn unknown_key() -> String {
    let secret = account_domain::SecretBody::new("Gu3ssGu3ssGu3ssGu3ssGu3ssGu3ssGu".to_owned()).expect("valid");
    account_domain::PlaintextKey::assemble(account_domain::Environment::Live, &secret).expose().to_owned()
}

/// `2024-01-01T00:00:00Z`-shaped.
pub fn is_rfc3339_utc(value: &Value) -> bool {
    let Some(s) = value.as_str() else {
        return false;
    };
    let b = s.as_bytes();
    s.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && s.bytes().enumerate().all(|(i, c)| [4, 7, 10, 13, 16, 19].contains(&i) || c.is_ascii_digit())
}

/// The keys of a JSON object, sorted.
pub fn field_names(value: &Value) -> Vec<&str> {
    let mut fields: Vec<&str> = value.as_object().expect("an object").keys().map(String::as_str).collect();
    fields.sort_unstable();
    fields
}

/// A key's `last_used_at` read straight from the database with a connection of the test's
/// own: not through an instance, which would show a use it saw from memory.
pub fn stored_last_used_at(db: &TestDatabase, key_id: &str) -> Option<i64> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
        last_used_at: Option<i64>,
    }
    let sql = format!("SELECT last_used_at FROM api_keys WHERE id = '{key_id}'");
    let rows: Vec<Row> = match db.target() {
        account_infra::DatabaseTarget::Sqlite(path) => {
            let mut conn = <diesel::SqliteConnection as diesel::Connection>::establish(path.to_str().expect("utf-8"))
                .expect("open");
            diesel::RunQueryDsl::load(diesel::sql_query(sql), &mut conn).expect("read")
        }
        account_infra::DatabaseTarget::Postgres(url) => {
            let mut conn = <diesel::PgConnection as diesel::Connection>::establish(url).expect("connect");
            diesel::RunQueryDsl::load(diesel::sql_query(sql), &mut conn).expect("read")
        }
    };
    assert_eq!(rows.len(), 1, "the key is stored");
    rows[0].last_used_at
}

/// The audit trail of `org` read straight from the database (action, details), oldest
/// first: for an organization none of whose keys can read it any more.
pub fn audit_actions_by_sql(db: &TestDatabase, org: &str) -> Vec<(String, Option<String>)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        action: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        details: Option<String>,
    }
    let sql = format!("SELECT action, details FROM audit_events WHERE org_id = '{org}' ORDER BY id");
    let rows: Vec<Row> = match db.target() {
        account_infra::DatabaseTarget::Sqlite(path) => {
            let mut conn = diesel::SqliteConnection::establish(path.to_str().expect("utf-8")).expect("open");
            diesel::RunQueryDsl::load(diesel::sql_query(sql), &mut conn).expect("read")
        }
        account_infra::DatabaseTarget::Postgres(url) => {
            let mut conn = diesel::PgConnection::establish(url).expect("connect");
            diesel::RunQueryDsl::load(diesel::sql_query(sql), &mut conn).expect("read")
        }
    };
    rows.into_iter().map(|r| (r.action, r.details)).collect()
}
