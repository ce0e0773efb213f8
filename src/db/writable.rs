//! Whether a session can write. A failover leaves servers that answer but
//! take no writes: a standby (listed first in a multi-host URL, or behind a
//! single address that no longer follows the primary) and a primary being
//! demoted, which its operator may fence with `default_transaction_read_only`
//! before it stops. Every session on one of those fails each transaction the
//! worker runs with SQLSTATE 25006, for as long as it is kept; so the pool
//! checks this before it hands a pooled connection out, and drops the
//! connection when it cannot write, and the health and the readiness probe
//! count such a server as not ready for work.

use diesel::result::{DatabaseErrorKind, Error as QueryError};
use diesel::sql_types::Text;
use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

diesel::define_sql_function! {
    /// Postgres's `current_setting(name)`.
    fn current_setting(setting_name: Text) -> Text;
}

/// Why a read-only session is refused, as the error says it.
pub const READ_ONLY: &str =
    "the server takes no writes (transaction_read_only is on: a standby, or a primary being demoted)";

/// `Ok` when the session can write; otherwise the error a write would have
/// given (`ReadOnlyTransaction`, SQLSTATE 25006), so every caller treats it
/// as that write's failure. One round trip, which replaces the pool's
/// `SELECT 1` check: libpq's `target_session_attrs=read-write` asks the same
/// setting.
pub async fn check_writable(conn: &mut AsyncPgConnection) -> QueryResult<()> {
    // A typed call, so diesel prepares it once per connection.
    let read_only: String = diesel::select(current_setting("transaction_read_only"))
        .get_result(conn)
        .await?;
    if is_on(&read_only) {
        Err(read_only_error())
    } else {
        Ok(())
    }
}

/// Whether an error says the session cannot write.
pub fn is_read_only(error: &QueryError) -> bool {
    matches!(
        error,
        QueryError::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, _)
    )
}

fn read_only_error() -> QueryError {
    QueryError::DatabaseError(
        DatabaseErrorKind::ReadOnlyTransaction,
        Box::new(READ_ONLY.to_string()),
    )
}

fn is_on(setting: &str) -> bool {
    setting.eq_ignore_ascii_case("on")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_read_only_transaction_error() {
        let error = read_only_error();
        assert!(is_read_only(&error));
        assert!(error.to_string().contains("transaction_read_only is on"));
        assert!(!is_read_only(&QueryError::NotFound));
    }

    #[test]
    fn only_on_is_read_only() {
        assert!(is_on("on"));
        assert!(!is_on("off"));
        assert!(!is_on(""));
    }
}
