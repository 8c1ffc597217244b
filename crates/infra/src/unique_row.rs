//! Reading the one row a unique key selects, without diesel's `first()`: its bound `LIMIT ?`
//! is part of SQLite's query plan, so SQLite prepares the statement again on every run
//! (docs/performance.md, "The cold path"). Without it the cached statement is reused.

use diesel::query_dsl::methods::LoadQuery;
use diesel::{QueryResult, RunQueryDsl};

/// The row `query` selects by a unique key, if any.
pub(crate) fn unique_row<'q, Q, C, U>(query: Q, conn: &mut C) -> QueryResult<Option<U>>
where
    Q: RunQueryDsl<C> + LoadQuery<'q, C, U>,
{
    let mut rows = query.load::<U>(conn)?;
    debug_assert!(rows.len() <= 1, "a unique key selected {} rows", rows.len());
    Ok(rows.pop())
}
