//! Running the backend-neutral queries of [`crate::logic::query`] on PostgreSQL.

use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::PgStore;
use crate::logic::query::{PageQuery, SqlValue};
use crate::{Page, StoreResult};

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // Each variant checks its own type, so a mismatch is an error, not a bad encoding.
        match self {
            SqlValue::Int(number) => number.to_sql_checked(ty, out),
            SqlValue::Text(text) => text.to_sql_checked(ty, out),
            SqlValue::TextList(list) => list.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The values as the driver's parameter list.
pub fn bound(values: &[SqlValue]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|value| value as &(dyn ToSql + Sync))
        .collect()
}

impl PgStore {
    /// Runs one page of a keyed listing.
    pub(super) async fn run_page<T>(
        &self,
        query: PageQuery,
        map: impl Fn(&tokio_postgres::Row) -> StoreResult<T>,
    ) -> StoreResult<Page<T>> {
        let rows = self
            .client()
            .await?
            .query(&query.sql, &bound(&query.values))
            .await?;
        let items = rows.iter().map(map).collect::<StoreResult<Vec<_>>>()?;
        Ok(query.finish(items))
    }
}
