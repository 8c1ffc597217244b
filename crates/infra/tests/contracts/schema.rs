//! The schema: `Database::check_schema` passes once every migration is applied, and refuses
//! (applying nothing) a database that lacks them.

use account_infra::testing::{Backend, TestDatabase};
use account_infra::{Database, PoolOptions};

use crate::common::{contract, Ctx};

contract!(the_schema_check_passes_on_a_migrated_database,);

async fn the_schema_check_passes_on_a_migrated_database(ctx: Ctx) {
    ctx.db.check_schema().expect("every migration is applied");
}

/// A service that only reads the database must not migrate it: the check refuses a
/// database without the schema and applies none of it.
#[tokio::test(flavor = "multi_thread")]
async fn the_schema_check_refuses_an_unmigrated_database_and_applies_nothing() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(test_db) = TestDatabase::new(backend) else { continue };
        let db = Database::new(test_db.target().clone(), &PoolOptions::for_machine());
        let err = db.check_schema().expect_err("nothing is migrated");
        assert!(format!("{err:#}").contains("account-api migrate"), "{err:#}");
        assert!(db.check_schema().is_err(), "the check applied nothing");
        assert!(db.migrate().expect("migrates") > 0, "every migration was still pending");
        db.check_schema().expect("passes once migrated");
    }
}
