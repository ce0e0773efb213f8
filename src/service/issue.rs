//! Issuing a token: what the platform's connect flow does when an employer
//! authenticates.

use diesel::result::Error as QueryError;
use diesel_async::{AsyncConnection, AsyncPgConnection};

use crate::db::tokens::{self, NewToken};
use crate::db::{connections, entities};
use crate::domain::{AccessToken, ConnectionId, IssuedToken, TokenId};

/// Who the token is for.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    pub client_id: String,
    pub company_id: String,
    pub provider_id: String,
    pub user: Option<String>,
    pub products: Vec<String>,
    /// The provider's ids of the entities this authentication covers: new
    /// ones join the connection, disconnected ones are active again.
    pub entities: Vec<String>,
}

/// Join the pair's active connection, or create one, and issue a new token on
/// it, connecting the grant's entities. The connection row is locked while
/// the token and the entities are written, so a disconnect either sees them
/// (and revokes or disconnects them) or has already finished (and this
/// token lands on a new connection; an entity disconnected alone is active
/// again, on the same connection).
pub async fn issue_token(
    conn: &mut AsyncPgConnection,
    grant: &TokenGrant,
) -> Result<IssuedToken, QueryError> {
    let token = AccessToken::generate();
    let hash = token.hash();
    let prefix = token.visible_prefix();
    let (token_id, connection_id, entity_rows) = conn
        .transaction::<_, QueryError, _>(async |conn| {
            let connection_id = lock_or_create_active(conn, grant).await?;
            let entity_rows = entities::connect(conn, connection_id, &grant.entities).await?;
            let token_id = TokenId::generate();
            tokens::insert(
                conn,
                &NewToken {
                    id: token_id,
                    connection_id,
                    token_hash: &hash,
                    token_prefix: &prefix,
                    user_label: grant.user.as_deref(),
                    products: &grant.products,
                },
            )
            .await?;
            Ok((token_id, connection_id, entity_rows))
        })
        .await?;
    Ok(IssuedToken {
        token,
        token_id,
        connection_id,
        entities: entity_rows
            .iter()
            .map(|row| (row.to_ref(), row.status))
            .collect(),
    })
}

/// The id of the pair's active connection, locked, creating it if needed.
async fn lock_or_create_active(
    conn: &mut AsyncPgConnection,
    grant: &TokenGrant,
) -> Result<ConnectionId, QueryError> {
    loop {
        if let Some(connection) = connections::lock_active_for_pair(
            conn,
            &grant.client_id,
            &grant.company_id,
            &grant.provider_id,
        )
        .await?
        {
            return Ok(connection.id);
        }
        // The insert waits for a concurrent creator of the same pair and then
        // does nothing; the next lookup finds the row it committed. Our own
        // insert holds its row lock until commit, like the lookup would.
        if let Some(id) = connections::insert_active(
            conn,
            &grant.client_id,
            &grant.company_id,
            &grant.provider_id,
        )
        .await?
        {
            return Ok(id);
        }
    }
}
