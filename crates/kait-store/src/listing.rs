//! What every backend's listings share: joining filters into a `WHERE` clause, and cutting a
//! fetched page down to size.

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
