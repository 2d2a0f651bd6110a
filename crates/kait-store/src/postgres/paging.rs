//! Keyset pagination for PostgreSQL listings (the same rules as the SQLite one: a page starts
//! after the iterator's key, or before it for a `prevIterator`), plus a small builder for
//! numbered parameters.

use tokio_postgres::types::ToSql;

pub use crate::listing::{finish_page as finish, where_clause};
use crate::{Order, PageRequest};

/// Parameters of a query built piece by piece; [`Params::push`] returns the placeholder.
#[derive(Default)]
pub struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    pub fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    pub fn as_refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// How one listing is keyed: its key column and how an iterator maps to a key value.
pub struct Keyset {
    /// The column rows are ordered by, e.g. `m.seq`.
    pub key_column: &'static str,
    /// SQL yielding the key of the iterator's row, with `{}` where the iterator's placeholder
    /// goes; `"{}"` when the iterator is the key itself.
    pub iterator_key: &'static str,
    pub newest_first: bool,
}

/// Builds one page's SQL: `select` is everything before `WHERE`; returns the SQL and whether
/// the rows come back reversed (and must be turned around).
pub fn keyed_sql(
    select: &str,
    mut conditions: Vec<String>,
    params: &mut Params,
    keyset: &Keyset,
    page: &PageRequest,
) -> (String, bool) {
    let descending = keyset.newest_first ^ (page.order == Order::Descending);
    let scan_descending = descending ^ page.reverse;
    if let Some(iterator) = &page.iterator {
        let placeholder = params.push(iterator.clone());
        let comparison = if scan_descending { "<" } else { ">" };
        conditions.push(format!(
            "{} {} {}",
            keyset.key_column,
            comparison,
            keyset.iterator_key.replace("{}", &placeholder)
        ));
    }
    let sql = format!(
        "{select} {} ORDER BY {} {} LIMIT {}",
        where_clause(&conditions),
        keyset.key_column,
        if scan_descending { "DESC" } else { "ASC" },
        page.limit + 1
    );
    (sql, page.reverse)
}
