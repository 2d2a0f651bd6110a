//! Listings: which page to return (Svix's `limit`, `iterator`, `prevIterator` and `order`),
//! and what every backend's listings share: joining filters into a `WHERE` clause, and cutting a
//! fetched page down to size.

/// Sort order of a listing, Svix's `order` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Ascending,
    Descending,
}

/// Which page of a listing to return. The iterator is an item's id (or name): the page
/// starts after it, or before it when `reverse` is set (Svix's `prevIterator`).
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub limit: usize,
    pub iterator: Option<String>,
    pub reverse: bool,
    pub order: Order,
}

/// A page of results and whether more exist past its end.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub done: bool,
}

/// Joins conditions with `AND`, skipping empty ones, into a `WHERE` clause.
pub fn where_clause(conditions: &[String]) -> String {
    let present: Vec<&str> = conditions
        .iter()
        .map(String::as_str)
        .filter(|condition| !condition.is_empty())
        .collect();
    if present.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", present.join(" AND "))
    }
}

/// Cuts the extra row fetched to detect `done`, and restores the listing order when the rows
/// were read backwards (from a `prevIterator`).
pub fn finish_page<T>(
    mut rows: Vec<T>,
    page: &crate::PageRequest,
    reversed: bool,
) -> crate::Page<T> {
    let done = rows.len() <= page.limit;
    rows.truncate(page.limit);
    if reversed {
        rows.reverse();
    }
    crate::Page { items: rows, done }
}
