//! Connections with entities, for the entity tests and the fault suite.

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use disconnect_worker::db::schema::connection_entities;
use disconnect_worker::domain::{
    AccessToken, ClientId, ConnectionId, DisconnectRequest, EntityId, EntityRef, IssuedToken,
    Target,
};
use disconnect_worker::service::TokenGrant;
use uuid::Uuid;

use super::TestContext;

/// An entity's row, as the tests read it.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
pub struct EntityState {
    pub connection_id: ConnectionId,
    pub provider_entity_id: String,
    pub status: String,
    pub disconnected_by_request: Option<Uuid>,
}

/// A request for these entities of `token`'s connection.
pub fn entities_of_token(token: &AccessToken, entity_ids: &[EntityId]) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::EntitiesOfToken {
        token: token.clone(),
        client_id: None,
        entity_ids: entity_ids.to_vec(),
    })
}

/// A request for these entities of a connection, by its id.
pub fn entities_of_connection(
    client_id: &str,
    connection_id: ConnectionId,
    entity_ids: &[EntityId],
) -> DisconnectRequest {
    DisconnectRequest::for_target(Target::EntitiesOfConnection {
        client_id: ClientId::parse(client_id.into()).expect("valid"),
        connection_id,
        entity_ids: entity_ids.to_vec(),
    })
}

/// The ids of an issue's entities, in the order of `provider_ids`.
pub fn entity_ids(issued: &IssuedToken, provider_ids: &[&str]) -> Vec<EntityId> {
    provider_ids
        .iter()
        .map(|provider_id| {
            issued
                .entities
                .iter()
                .find(|(entity, _)| entity.provider_entity_id == *provider_id)
                .map(|(entity, _)| entity.entity_id)
                .unwrap_or_else(|| panic!("no entity {provider_id}"))
        })
        .collect()
}

impl TestContext {
    /// Issue a token, for the `directory` product, whose authentication
    /// covers these provider entities (none: a connection without entities).
    pub async fn issue_with_entities(
        &self,
        client: &str,
        company: &str,
        provider: &str,
        user: &str,
        entities: &[&str],
    ) -> IssuedToken {
        self.issue_grant(&TokenGrant {
            client_id: client.into(),
            company_id: company.into(),
            provider_id: provider.into(),
            user: Some(user.into()),
            products: vec!["directory".into()],
            entities: entities.iter().map(ToString::to_string).collect(),
        })
        .await
    }

    pub async fn entity_state(&self, entity_id: EntityId) -> EntityState {
        let mut conn = self.pool.get().await.expect("db");
        connection_entities::table
            .find(entity_id)
            .select((
                connection_entities::connection_id,
                connection_entities::provider_entity_id,
                connection_entities::status,
                connection_entities::disconnected_by_request,
            ))
            .first(&mut conn)
            .await
            .expect("the entity's row")
    }

    /// Every entity row, keyed by id.
    pub async fn entity_states(&self) -> std::collections::BTreeMap<EntityId, EntityState> {
        let mut conn = self.pool.get().await.expect("db");
        connection_entities::table
            .select((
                connection_entities::id,
                (
                    connection_entities::connection_id,
                    connection_entities::provider_entity_id,
                    connection_entities::status,
                    connection_entities::disconnected_by_request,
                ),
            ))
            .load::<(EntityId, EntityState)>(&mut conn)
            .await
            .expect("entity rows")
            .into_iter()
            .collect()
    }
}

/// The entity ids an event names: `entity_id` of an entity event, the
/// `entities` of a connection's.
pub fn named_entities(event: &serde_json::Value) -> Vec<String> {
    if let Some(id) = event["entity_id"].as_str() {
        return vec![id.to_string()];
    }
    event["entities"]
        .as_array()
        .map(|entities| {
            entities
                .iter()
                .filter_map(|entity| entity["entity_id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The refs of an outcome's entities, as ids.
pub fn ids(entities: &[EntityRef]) -> Vec<EntityId> {
    entities.iter().map(|entity| entity.entity_id).collect()
}
