//! Keyset pagination shared by every listing.
//!
//! A page starts after the iterator's key (or before it, for a `prevIterator`), so pages stay
//! stable while rows are added and cost an index seek whatever the page number.

use rusqlite::types::Value;

use crate::listing::finish_page;
pub use crate::listing::where_clause;
use crate::{Order, PageRequest};

/// How one listing is keyed: its key column and how an iterator maps to a key value.
pub struct Keyset {
    /// The column rows are ordered by, e.g. `m.seq`.
    pub key_column: &'static str,
    /// SQL yielding the key of the iterator's row, with one `?` for the iterator text;
    /// `"?"` when the iterator is the key itself.
    pub iterator_key: &'static str,
    /// Whether the natural order is newest first.
    pub newest_first: bool,
}

/// The pieces a listing adds to its query.
pub struct PageSql {
    /// A condition to AND into the `WHERE` clause (or empty).
    pub condition: String,
    pub order_by: String,
    pub limit: i64,
    /// Whether the fetched rows must be reversed to come out in the listing's order.
    pub reverse_rows: bool,
}

impl Keyset {
    pub fn page_sql(&self, page: &PageRequest, parameters: &mut Vec<Value>) -> PageSql {
        let descending = self.newest_first ^ (page.order == Order::Descending);
        // Reading backwards (from a prevIterator) flips both the comparison and the order.
        let scan_descending = descending ^ page.reverse;
        let condition = match &page.iterator {
            Some(iterator) => {
                parameters.push(Value::Text(iterator.clone()));
                let comparison = if scan_descending { "<" } else { ">" };
                format!("{} {} {}", self.key_column, comparison, self.iterator_key)
            }
            None => String::new(),
        };
        PageSql {
            condition,
            order_by: format!(
                "{} {}",
                self.key_column,
                if scan_descending { "DESC" } else { "ASC" }
            ),
            limit: page.limit as i64 + 1,
            reverse_rows: page.reverse,
        }
    }
}

/// Cuts the extra row used to detect `done`, and restores the listing order.
pub fn finish<T>(rows: Vec<T>, page: &PageRequest, sql: &PageSql) -> crate::Page<T> {
    finish_page(rows, page, sql.reverse_rows)
}

/// Runs one page of a keyed listing: `select` is everything before `WHERE` (columns, table,
/// joins); `conditions` and `parameters` are the listing's own filters, in order.
pub fn query_keyed<T>(
    connection: &rusqlite::Connection,
    select: &str,
    mut conditions: Vec<String>,
    mut parameters: Vec<Value>,
    keyset: &Keyset,
    page: &PageRequest,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> crate::StoreResult<crate::Page<T>> {
    let page_sql = keyset.page_sql(page, &mut parameters);
    conditions.push(page_sql.condition.clone());
    let sql = format!(
        "{select} {} ORDER BY {} LIMIT {}",
        where_clause(&conditions),
        page_sql.order_by,
        page_sql.limit
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement
        .query_map(rusqlite::params_from_iter(parameters), map)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(finish(rows, page, &page_sql))
}
