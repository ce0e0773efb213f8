//! The connections a batch works on, as one SQL array expression: those of
//! its tokens (by hash) and those it names (by id). The connection locks,
//! the active tokens and the entities of a batch are all read through it, so
//! they cover the same connections.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment};
use diesel::result::QueryResult;
use diesel::sql_types::{Array, Bytea, Uuid as SqlUuid};

use crate::domain::{ConnectionId, TokenHash};

/// `ARRAY(SELECT connection_id FROM access_tokens WHERE token_hash =
/// ANY($hashes)) || $ids`, for `… = ANY(<this>)`.
///
/// One array, the hashes' connections computed once: the plan is an index
/// scan per connection. With `IN (subquery) OR = ANY(...)` Postgres scans
/// the whole table.
pub struct BatchConnectionIds<'a> {
    pub hashes: &'a [TokenHash],
    pub ids: &'a [ConnectionId],
}

impl QueryFragment<Pg> for BatchConnectionIds<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("ARRAY(SELECT connection_id FROM access_tokens WHERE token_hash = ANY(");
        out.push_bind_param::<Array<Bytea>, _>(self.hashes)?;
        out.push_sql(")) || ");
        out.push_bind_param::<Array<SqlUuid>, _>(self.ids)?;
        Ok(())
    }
}
