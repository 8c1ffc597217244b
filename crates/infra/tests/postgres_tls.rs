//! The bundled libpq speaks TLS: `sslmode=require` connects encrypted, and the
//! application's own connection path (migrations) works over it.

use account_infra::testing::TestDatabase;
use account_infra::{Database, DatabaseTarget, PoolOptions};
use diesel::dsl::sql;
use diesel::sql_types::Bool;
use diesel::{Connection, PgConnection, RunQueryDsl};

#[test]
fn sslmode_require_connects_over_tls() {
    let Some(db) = TestDatabase::postgres() else {
        return;
    };
    let DatabaseTarget::Postgres(url) = db.target().clone() else { unreachable!("postgres") };
    let tls_url = format!("{url}{}sslmode=require", if url.contains('?') { '&' } else { '?' });

    let mut conn = PgConnection::establish(&tls_url).expect("a TLS connection");
    let encrypted: bool = diesel::select(sql::<Bool>("(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"))
        .get_result(&mut conn)
        .expect("query");
    assert!(encrypted, "the connection is not encrypted");

    let database = Database::new(DatabaseTarget::parse(&tls_url).expect("valid"), &PoolOptions::for_machine());
    assert!(database.migrate().expect("migrates over TLS") > 0);
}
