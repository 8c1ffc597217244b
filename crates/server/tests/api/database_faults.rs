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
