//! Every listing's query, written once: the backends run the SQL these return and map the
//! rows. Only the message column list differs between backends (how JSON is read back), so
//! listings that return messages take it as `message_columns`.

use kait_core::{AppId, DeliveryStatus, Endpoint, EndpointId, SourceId};

use super::query::{self, Dialect, Keyset, PageQuery, Query, SqlValue};
use crate::columns;
use crate::{AttemptFilter, MessageFilter, PageRequest};

/// Messages (and a message's deliveries) list newest first, keyed by position.
const MESSAGES: Keyset = Keyset {
    key_column: "m.seq",
    iterator_key: "(SELECT seq FROM message WHERE id = {})",
    newest_first: true,
};

const ATTEMPTS: Keyset = Keyset {
    key_column: "a.seq",
    iterator_key: "(SELECT seq FROM attempt WHERE id = {})",
    newest_first: true,
};

const ENDPOINT_MESSAGES: Keyset = Keyset {
    key_column: "d.msg_seq",
    iterator_key: "(SELECT seq FROM message WHERE id = {})",
    newest_first: true,
};

pub fn applications(dialect: Dialect, page: &PageRequest) -> PageQuery {
    let select = format!("SELECT {} FROM application", columns::APPLICATION);
    Query::new(dialect).page(&select, &Keyset::by("id"), page)
}

pub fn event_types(dialect: Dialect, include_archived: bool, page: &PageRequest) -> PageQuery {
    let mut query = Query::new(dialect);
    if !include_archived {
        query.condition("NOT archived".to_owned());
    }
    let select = format!("SELECT {} FROM event_type", columns::EVENT_TYPE);
    query.page(&select, &Keyset::by("name"), page)
}

pub fn sources(dialect: Dialect, page: &PageRequest) -> PageQuery {
    let select = format!("SELECT {} FROM source", columns::SOURCE);
    Query::new(dialect).page(&select, &Keyset::by("id"), page)
}

pub fn pipes(dialect: Dialect, page: &PageRequest) -> PageQuery {
    let select = format!("SELECT {} FROM pipe", columns::PIPE);
    Query::new(dialect).page(&select, &Keyset::by("id"), page)
}

/// A pipe's runs, newest first by id.
pub fn pipe_runs(dialect: Dialect, pipe_id: &kait_core::PipeId, page: &PageRequest) -> PageQuery {
    const RUNS: Keyset = Keyset {
        key_column: "id",
        iterator_key: "{}",
        newest_first: true,
    };
    let mut query = Query::new(dialect);
    query.compare("pipe_id", "=", SqlValue::Text(pipe_id.as_str().to_owned()));
    let select = format!("SELECT {} FROM pipe_run", columns::PIPE_RUN);
    query.page(&select, &RUNS, page)
}

/// A source's received requests, newest first by id (KSUIDs: time-ordered to the second; within a second, in no set order).
pub fn received(dialect: Dialect, source_id: &SourceId, page: &PageRequest) -> PageQuery {
    const RECEIVED: Keyset = Keyset {
        key_column: "id",
        iterator_key: "{}",
        newest_first: true,
    };
    let mut query = Query::new(dialect);
    query.compare(
        "source_id",
        "=",
        SqlValue::Text(source_id.as_str().to_owned()),
    );
    let select = format!("SELECT {} FROM received_request", columns::RECEIVED);
    query.page(&select, &RECEIVED, page)
}

pub fn endpoints(dialect: Dialect, app_id: &AppId, page: &PageRequest) -> PageQuery {
    let mut query = Query::new(dialect);
    query.compare("app_id", "=", SqlValue::Text(app_id.as_str().to_owned()));
    // A pipe's subscription is the pipe's, not one of the application's endpoints.
    query.compare("kind", "<>", SqlValue::Text("pipe".to_owned()));
    let select = format!("SELECT {} FROM endpoint", columns::ENDPOINT);
    query.page(&select, &Keyset::by("id"), page)
}

pub fn messages(
    dialect: Dialect,
    message_columns: &str,
    app_id: &AppId,
    filter: &MessageFilter,
    page: &PageRequest,
) -> PageQuery {
    let mut query = Query::new(dialect);
    query.compare("m.app_id", "=", SqlValue::Text(app_id.as_str().to_owned()));
    query::message_filter(&mut query, filter, "m");
    let select = format!("SELECT {message_columns} FROM message m");
    query.page(&select, &MESSAGES, page)
}

pub fn attempts(
    dialect: Dialect,
    app_id: &AppId,
    filter: AttemptFilter,
    page: &PageRequest,
) -> PageQuery {
    let mut query = Query::new(dialect);
    let join = if query::attempt_filter(&mut query, app_id, filter) {
        "JOIN message m ON m.seq = a.msg_seq"
    } else {
        ""
    };
    let select = format!("SELECT {} FROM attempt a {join}", columns::ATTEMPT);
    query.page(&select, &ATTEMPTS, page)
}

/// Messages bound for one endpoint with their delivery's status and due time (the two
/// columns after the message's).
pub fn endpoint_messages(
    dialect: Dialect,
    message_columns: &str,
    app_id: &AppId,
    endpoint_id: &EndpointId,
    status: Option<DeliveryStatus>,
    page: &PageRequest,
) -> PageQuery {
    let mut query = Query::new(dialect);
    query.compare(
        "d.endpoint_id",
        "=",
        SqlValue::Text(endpoint_id.as_str().to_owned()),
    );
    query.compare("m.app_id", "=", SqlValue::Text(app_id.as_str().to_owned()));
    if let Some(status) = status {
        query.compare("d.status", "=", SqlValue::Int(status.code()));
    }
    let select = format!(
        "SELECT {message_columns}, d.status, d.due_at FROM delivery d JOIN message m ON m.seq = d.msg_seq"
    );
    query.page(&select, &ENDPOINT_MESSAGES, page)
}

/// What a polling endpoint reads next: messages after `after` in the position column
/// `position` (returned after the message's columns), in position order.
pub fn poll(
    dialect: Dialect,
    message_columns: &str,
    position: &str,
    endpoint: &Endpoint,
    after: i64,
    filter: &MessageFilter,
    limit: usize,
) -> (String, Vec<SqlValue>) {
    let mut query = Query::new(dialect);
    query::poll_filter(&mut query, endpoint, position, after, filter);
    let sql = format!(
        "SELECT {message_columns}, {position} FROM message m {} ORDER BY {position} LIMIT {limit}",
        query.where_clause()
    );
    (sql, query.values().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_share_their_sql_but_for_placeholders() {
        let app = AppId::from_trusted("app_1".into());
        let page = PageRequest {
            limit: 10,
            ..Default::default()
        };
        let sqlite = endpoints(Dialect::Sqlite, &app, &page);
        let postgres = endpoints(Dialect::Postgres, &app, &page);
        assert_eq!(
            sqlite.sql.replace("?1", "$1").replace("?2", "$2"),
            postgres.sql
        );
        assert!(
            postgres
                .sql
                .contains("WHERE app_id = $1 AND kind <> $2 ORDER BY id ASC LIMIT 11"),
            "pipe endpoints are not listed: {}",
            postgres.sql
        );
        let archived = event_types(Dialect::Sqlite, false, &page);
        assert!(
            archived.sql.contains("WHERE NOT archived"),
            "{}",
            archived.sql
        );
    }
}
