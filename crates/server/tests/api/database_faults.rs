//! PostgreSQL going away under a running server, for real: the test puts a TCP proxy of its
//! own between the server and PostgreSQL, cuts it, and restores it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use account_infra::testing::TestDatabase;
use account_infra::DatabaseTarget;
use account_server::{Application, Config};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::TestApp;

/// Forwards TCP to PostgreSQL until cut; while cut it drops every connection at once.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (cut.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let upstream = upstream.clone();
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                l.lock().expect("lock").push(link);
            }
        });
        Self { addr, cut, links }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("lock").drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// `postgres://user@host:port/db?q` with `host:port` replaced by `addr`.
fn through(url: &str, addr: SocketAddr) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, hostpath) = rest.rsplit_once('@').map_or(("", rest), |(u, h)| (u, h));
    let (host, path) = hostpath.split_once('/').unwrap_or((hostpath, ""));
    let at = if userinfo.is_empty() { String::new() } else { format!("{userinfo}@") };
    (format!("{scheme}://{at}{addr}/{path}"), host.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_rides_out_postgres_going_away_and_loses_no_acknowledged_write() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let DatabaseTarget::Postgres(url) = db.target().clone() else { unreachable!("a postgres database") };
    let upstream_host = through(&url, "127.0.0.1:1".parse().expect("addr")).1;
    let proxy = Proxy::start(upstream_host).await;
    let (proxied_url, _) = through(&url, proxy.addr);
    let config = Config::from_lookup(|name| match name {
        "DATABASE_URL" => Some(proxied_url.clone()),
        "BIND_ADDR" => Some("127.0.0.1:0".to_owned()),
        "DATABASE_TIMEOUT_MS" => Some("500".to_owned()),
        _ => None,
    })
    .expect("valid");
    let app = Application::build(config).await.expect("builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let app = TestApp { address, client: reqwest::Client::new(), db: Arc::new(db) };

    let org = app.signup_org("faults@acme.test").await;
    let mut acknowledged = vec![org.key.clone()];
    acknowledged.push(app.new_key(&org.key, json!({"name": "Before"})).await);

    proxy.cut();
    let started = Instant::now();
    app.list_keys(&org.key).await.assert_error(503, "service_unavailable");
    app.create_key(&org.key, Some(json!({"name": "During"}))).await.assert_error(503, "service_unavailable");
    app.signup(json!({"name": "Acme", "email": "during@acme.test"})).await.assert_error(503, "service_unavailable");
    assert!(started.elapsed() < Duration::from_secs(5), "503s took {:?}", started.elapsed());
    assert_eq!(app.request(Method::GET, "/healthz", None, None).await.status, StatusCode::OK, "alive");
    app.request(Method::GET, "/readyz", None, None).await.assert_error(503, "service_unavailable");

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app.request(Method::GET, "/readyz", None, None).await;
        if reply.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not recover by itself");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acknowledged.push(app.new_key(&org.key, json!({"name": "After"})).await);
    let names: Vec<String> =
        app.list_keys(&org.key).await.data().as_array().expect("array").iter().map(|k| k["name"].to_string()).collect();
    assert_eq!(names, [r#""After""#, r#""Before""#, r#""Default Key""#], "a write was lost or a refused one was kept");
    for key in &acknowledged {
        assert_eq!(app.get_account(key).await.status, StatusCode::OK);
    }
    // The refused signup stored nothing: its email is still free.
    app.signup_org("during@acme.test").await;
}

/// PostgreSQL closes every connection of the pool while they sit idle (a restart, a
/// failover, an idle timeout): a connection idle for a while is tested before use and
/// replaced, so no request fails for it, though no connection is tested on every request.
/// The background tasks are slowed so that they cannot find the dead connections first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_postgres_while_idle_are_replaced_without_a_failed_request() {
    let quiet = [("CACHE_SYNC_INTERVAL_MS", "500"), ("LAST_USED_FLUSH_SECS", "60")];
    let Some(app) = crate::helpers::spawn_app_with(account_infra::testing::Backend::Postgres, &quiet).await else {
        return;
    };
    let org = app.signup_org("idle@acme.test").await;
    let eight = || async {
        let replies = futures_util::future::join_all((0..8).map(|_| app.list_keys(&org.key))).await;
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    };
    // Several connections in the pool, each used.
    assert_eq!(eight().await, [StatusCode::OK; 8]);
    let DatabaseTarget::Postgres(url) = app.db.target().clone() else { unreachable!("a postgres database") };
    let name = url.rsplit('/').next().expect("a database name").split('?').next().expect("a name").to_owned();
    app.execute_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    ));
    tokio::time::sleep(Duration::from_millis(1300)).await;
    assert_eq!(eight().await, [StatusCode::OK; 8], "a closed connection served a request");
}
