//! Listing queries built once for both backends: the filters of every listing and the one
//! keyset pager. A [`Query`] collects conditions and their bound values; only the few
//! operators whose SQL differs (a value in a list, JSON channel sets) ask the [`Dialect`].

use kait_core::{AppId, Endpoint};

use crate::listing::{finish_page, where_clause};
use crate::{AttemptFilter, MessageFilter, Order, Page, PageRequest};

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    Int(i64),
    Text(String),
    /// An array parameter (PostgreSQL only; SQLite gets one placeholder per element).
    TextList(Vec<String>),
}

/// The SQL flavour a query is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Conditions (joined with `AND`) and the values they bind, in placeholder order.
#[derive(Debug, Clone)]
pub struct Query {
    dialect: Dialect,
    conditions: Vec<String>,
    values: Vec<SqlValue>,
}

impl Query {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            conditions: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Binds a value and returns its placeholder (`?N` or `$N`).
    pub fn bind(&mut self, value: SqlValue) -> String {
        self.values.push(value);
        match self.dialect {
            Dialect::Sqlite => format!("?{}", self.values.len()),
            Dialect::Postgres => format!("${}", self.values.len()),
        }
    }

    /// Adds a condition written by the caller (with placeholders from [`Query::bind`]).
    pub fn condition(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// `column <op> value`.
    pub fn compare(&mut self, column: &str, op: &str, value: SqlValue) {
        let placeholder = self.bind(value);
        self.conditions.push(format!("{column} {op} {placeholder}"));
    }

    /// The column equals one of `values` (nothing when the list is empty: no filter).
    pub fn one_of(&mut self, column: &str, values: Vec<String>) {
        if values.is_empty() {
            return;
        }
        let condition = match self.dialect {
            Dialect::Sqlite => {
                let placeholders: Vec<String> = values
                    .into_iter()
                    .map(|value| self.bind(SqlValue::Text(value)))
                    .collect();
                format!("{column} IN ({})", placeholders.join(", "))
            }
            Dialect::Postgres => {
                let placeholder = self.bind(SqlValue::TextList(values));
                format!("{column} = ANY({placeholder})")
            }
        };
        self.conditions.push(condition);
    }

    /// The message's JSON channel set (`{alias}.channels`) holds `channel`.
    pub fn channels_hold(&mut self, alias: &str, channel: String) {
        let placeholder = self.bind(SqlValue::Text(channel));
        let condition = match self.dialect {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each({alias}.channels) WHERE json_each.value = {placeholder})"
            ),
            Dialect::Postgres => format!("{alias}.channels ? {placeholder}"),
        };
        self.conditions.push(condition);
    }

    /// The message's JSON channel set holds at least one of `channels`.
    pub fn channels_meet(&mut self, alias: &str, channels: Vec<String>) {
        if channels.is_empty() {
            return;
        }
        let condition = match self.dialect {
            Dialect::Sqlite => {
                let placeholders: Vec<String> = channels
                    .into_iter()
                    .map(|channel| self.bind(SqlValue::Text(channel)))
                    .collect();
                format!(
                    "EXISTS (SELECT 1 FROM json_each({alias}.channels) WHERE json_each.value IN ({}))",
                    placeholders.join(", ")
                )
            }
            Dialect::Postgres => {
                let placeholder = self.bind(SqlValue::TextList(channels));
                format!("{alias}.channels ?| {placeholder}")
            }
        };
        self.conditions.push(condition);
    }

    /// The `WHERE` clause (empty without conditions).
    pub fn where_clause(&self) -> String {
        where_clause(&self.conditions)
    }

    pub fn values(&self) -> &[SqlValue] {
        &self.values
    }

    /// One page of a keyed listing: `select` is everything before `WHERE` (columns, table,
    /// joins). Returns the SQL (values in [`Query::values`]) and how to finish the page.
    pub fn page(mut self, select: &str, keyset: &Keyset, page: &PageRequest) -> PageQuery {
        let descending = keyset.newest_first ^ (page.order == Order::Descending);
        // Reading backwards (from a prevIterator) flips both the comparison and the order.
        let scan_descending = descending ^ page.reverse;
        if let Some(iterator) = &page.iterator {
            let placeholder = self.bind(SqlValue::Text(iterator.clone()));
            let comparison = if scan_descending { "<" } else { ">" };
            self.conditions.push(format!(
                "{} {} {}",
                keyset.key_column,
                comparison,
                keyset.iterator_key.replace("{}", &placeholder)
            ));
        }
        let sql = format!(
            "{select} {} ORDER BY {} {} LIMIT {}",
            self.where_clause(),
            keyset.key_column,
            if scan_descending { "DESC" } else { "ASC" },
            page.limit + 1
        );
        PageQuery {
            sql,
            values: self.values,
            page: page.clone(),
        }
    }
}

/// How a listing is keyed: pages start after (or, for a `prevIterator`, before) the key of
/// the iterator's row, so they stay stable while rows are added and cost one index seek
/// whatever the page number.
#[derive(Debug, Clone, Copy)]
pub struct Keyset {
    /// The column rows are ordered by, e.g. `m.seq`.
    pub key_column: &'static str,
    /// SQL yielding the key of the iterator's row, with `{}` where the iterator's placeholder
    /// goes; `"{}"` when the iterator is the key itself.
    pub iterator_key: &'static str,
    /// Whether the natural order is newest first.
    pub newest_first: bool,
}

impl Keyset {
    /// Keyed by the iterator itself (an id or a name), oldest first.
    pub const fn by(key_column: &'static str) -> Self {
        Self {
            key_column,
            iterator_key: "{}",
            newest_first: false,
        }
    }
}

/// A page's SQL with its values, to run and then [`PageQuery::finish`].
#[derive(Debug, Clone)]
pub struct PageQuery {
    pub sql: String,
    pub values: Vec<SqlValue>,
    page: PageRequest,
}

impl PageQuery {
    /// Cuts the extra row fetched to detect `done`, and restores the listing order.
    pub fn finish<T>(&self, rows: Vec<T>) -> Page<T> {
        finish_page(rows, &self.page, self.page.reverse)
    }
}

/// Conditions on the message table (alias `alias`) for event types, channel and time.
pub fn message_filter(query: &mut Query, filter: &MessageFilter, alias: &str) {
    if let Some(event_types) = &filter.event_types {
        query.one_of(&format!("{alias}.event_type"), event_types.clone());
    }
    if let Some(channel) = &filter.channel {
        query.channels_hold(alias, channel.clone());
    }
    if let Some(before) = filter.before {
        query.compare(&format!("{alias}.created_at"), "<", SqlValue::Int(before));
    }
    if let Some(after) = filter.after {
        query.compare(&format!("{alias}.created_at"), ">", SqlValue::Int(after));
    }
}

/// Conditions on attempts (alias `a`) and their messages (alias `m`). Times filter the
/// attempt; event types and channel filter its message. Returns whether the message table
/// must be joined.
pub fn attempt_filter(query: &mut Query, app_id: &AppId, filter: AttemptFilter) -> bool {
    // Confined to the application through the endpoint or the message when there is one, not
    // by `a.app_id` beside it: with both, PostgreSQL without fresh statistics ANDs two bitmaps
    // of the whole log and sorts (0.4–0.6 s at a million attempts, BENCHMARKS.md) instead of
    // walking one index backwards.
    let scoped = filter.endpoint_id.is_some() || filter.msg_id.is_some();
    if !scoped {
        query.compare("a.app_id", "=", SqlValue::Text(app_id.as_str().to_owned()));
    }
    if let Some(endpoint_id) = filter.endpoint_id {
        let endpoint = query.bind(SqlValue::Text(endpoint_id.into_string()));
        let app = query.bind(SqlValue::Text(app_id.as_str().to_owned()));
        query.condition(format!(
            "a.endpoint_id = (SELECT id FROM endpoint WHERE id = {endpoint} AND app_id = {app})"
        ));
    }
    if let Some(msg_id) = filter.msg_id {
        // By the message's row number, which `attempt_msg (msg_seq, seq)` indexes: filtering
        // on the id column walked the whole attempt log (170 ms at a million attempts).
        let message = query.bind(SqlValue::Text(msg_id.into_string()));
        let app = query.bind(SqlValue::Text(app_id.as_str().to_owned()));
        query.condition(format!(
            "a.msg_seq = (SELECT seq FROM message WHERE id = {message} AND app_id = {app})"
        ));
    }
    if let Some(status) = filter.status {
        query.compare("a.status", "=", SqlValue::Int(status.code()));
    }
    if let Some(before) = filter.message.before {
        query.compare("a.created_at", "<", SqlValue::Int(before));
    }
    if let Some(after) = filter.message.after {
        query.compare("a.created_at", ">", SqlValue::Int(after));
    }
    let message = MessageFilter {
        before: None,
        after: None,
        ..filter.message
    };
    let needs_message = message.event_types.is_some() || message.channel.is_some();
    message_filter(query, &message, "m");
    needs_message
}

/// What a polling endpoint sees (alias `m`): its application's messages after `after` in
/// position column `position`, that match its own filters and the request's.
pub fn poll_filter(
    query: &mut Query,
    endpoint: &Endpoint,
    position: &str,
    after: i64,
    filter: &MessageFilter,
) {
    query.compare(
        "m.app_id",
        "=",
        SqlValue::Text(endpoint.app_id.as_str().to_owned()),
    );
    query.compare(position, ">", SqlValue::Int(after));
    if let Some(event_types) = &endpoint.event_types {
        query.one_of("m.event_type", event_types.iter().cloned().collect());
    }
    if let Some(channels) = &endpoint.channels {
        query.channels_meet("m", channels.iter().cloned().collect());
    }
    message_filter(query, filter, "m");
}

#[cfg(test)]
mod tests {
    use super::*;
    use kait_core::{DeliveryStatus, EndpointId};

    #[test]
    fn filters_bind_values_in_placeholder_order() {
        for (dialect, first, event_types) in [
            (Dialect::Sqlite, "?1", "m.event_type IN (?2, ?3)"),
            (Dialect::Postgres, "$1", "m.event_type = ANY($2)"),
        ] {
            let mut query = Query::new(dialect);
            query.compare("m.app_id", "=", SqlValue::Text("app_1".into()));
            let filter = MessageFilter {
                event_types: Some(vec!["a".into(), "b".into()]),
                channel: None,
                before: Some(10),
                after: None,
            };
            message_filter(&mut query, &filter, "m");
            let clause = query.where_clause();
            assert!(clause.starts_with(&format!("WHERE m.app_id = {first} AND ")));
            assert!(clause.contains(event_types), "{clause}");
            assert_eq!(query.values().last(), Some(&SqlValue::Int(10)));
        }
    }

    #[test]
    fn empty_lists_filter_nothing() {
        let mut query = Query::new(Dialect::Sqlite);
        query.one_of("m.event_type", Vec::new());
        query.channels_meet("m", Vec::new());
        assert_eq!(query.where_clause(), "");
        assert!(query.values().is_empty());
    }

    #[test]
    fn attempt_times_filter_the_attempt_and_types_need_the_message() {
        let mut query = Query::new(Dialect::Postgres);
        let joins = attempt_filter(
            &mut query,
            &AppId::from_trusted("app_1".into()),
            AttemptFilter {
                endpoint_id: Some(EndpointId::from_trusted("ep_1".into())),
                msg_id: None,
                status: Some(DeliveryStatus::Fail),
                message: MessageFilter {
                    channel: Some("c".into()),
                    after: Some(5),
                    ..Default::default()
                },
            },
        );
        assert!(joins);
        assert_eq!(
            query.where_clause(),
            "WHERE a.endpoint_id = (SELECT id FROM endpoint WHERE id = $1 AND app_id = $2) \
             AND a.status = $3 AND a.created_at > $4 AND m.channels ? $5"
        );
        let mut plain = Query::new(Dialect::Postgres);
        let app = AppId::from_trusted("app_1".into());
        assert!(!attempt_filter(&mut plain, &app, AttemptFilter::default()));
        assert_eq!(plain.where_clause(), "WHERE a.app_id = $1");
    }

    #[test]
    fn pages_seek_past_the_iterator_in_either_direction() {
        let keyset = Keyset {
            key_column: "m.seq",
            iterator_key: "(SELECT seq FROM message WHERE id = {})",
            newest_first: true,
        };
        let forward = PageRequest {
            limit: 2,
            iterator: Some("msg_1".into()),
            ..Default::default()
        };
        let page = Query::new(Dialect::Sqlite).page("SELECT * FROM message m", &keyset, &forward);
        assert_eq!(
            page.sql,
            "SELECT * FROM message m WHERE m.seq < (SELECT seq FROM message WHERE id = ?1) \
             ORDER BY m.seq DESC LIMIT 3"
        );
        assert_eq!(page.finish(vec![5, 4, 3]).items, vec![5, 4]);
        let backward = PageRequest {
            reverse: true,
            ..forward
        };
        let page =
            Query::new(Dialect::Postgres).page("SELECT * FROM message m", &keyset, &backward);
        assert!(
            page.sql
                .contains("m.seq > (SELECT seq FROM message WHERE id = $1)")
        );
        assert!(page.sql.ends_with("ORDER BY m.seq ASC LIMIT 3"));
        let finished = page.finish(vec![7, 8]);
        assert_eq!(finished.items, vec![8, 7]);
        assert!(finished.done);
    }
}
