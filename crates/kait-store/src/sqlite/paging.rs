//! Running the backend-neutral queries of [`crate::logic::query`] on SQLite.

use rusqlite::types::Value;

use crate::logic::query::{PageQuery, SqlValue};
use crate::{Page, StoreResult};

/// The values to bind, in placeholder order.
pub fn bound(values: &[SqlValue]) -> Vec<Value> {
    values
        .iter()
        .map(|value| match value {
            SqlValue::Int(number) => Value::Integer(*number),
            SqlValue::Text(text) => Value::Text(text.clone()),
            // The SQLite dialect binds lists element by element; never reached.
            SqlValue::TextList(list) => Value::Text(crate::columns::to_json(list)),
        })
        .collect()
}

/// Runs one page of a keyed listing.
pub fn run_page<T>(
    connection: &rusqlite::Connection,
    query: PageQuery,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Page<T>> {
    let mut statement = connection.prepare_cached(&query.sql)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(bound(&query.values)), map)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(query.finish(rows))
}
