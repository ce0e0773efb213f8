//! Tokens laid out for a population at rest (migration 13): pages filled to
//! 88 %, with room left for most of one connection's tokens to be revoked
//! in place.

use disconnect_worker::service::TokenGrant;
use uuid::Uuid;

use crate::support::TestContext;

/// Where each token row is: (token id, heap page).
#[derive(diesel::QueryableByName)]
struct Placed {
    #[diesel(sql_type = diesel::sql_types::Uuid)]
    id: Uuid,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    page: i64,
}

async fn pages_of(test: &TestContext, connection: Uuid) -> Vec<(Uuid, i64)> {
    let mut conn = test.pool.get().await.expect("db");
    let rows: Vec<Placed> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT id, (ctid::text::point)[0]::bigint AS page FROM access_tokens \
             WHERE connection_id = $1 ORDER BY id",
        )
        .bind::<diesel::sql_types::Uuid, _>(connection),
        &mut conn,
    )
    .await
    .expect("query");
    rows.into_iter().map(|row| (row.id, row.page)).collect()
}

async fn most_rows_on_one_page(test: &TestContext) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Most {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        rows: i64,
    }
    let mut conn = test.pool.get().await.expect("db");
    diesel_async::RunQueryDsl::get_result::<Most>(
        diesel::sql_query(
            "SELECT max(n) AS rows FROM (SELECT count(*) AS n FROM access_tokens \
             GROUP BY (ctid::text::point)[0]) AS pages",
        ),
        &mut conn,
    )
    .await
    .expect("query")
    .rows
}

/// Tokens shaped as `token issue` writes them for a typical grant (an email
/// address as the user label, three products) fill a page to about 35 rows,
/// where the fill of migration 9 (45 %) stopped at 17: more than half of
/// every token's bytes at rest was room kept for its one update. The room
/// left must still take most of one connection's revocations in place
/// (HOT, on the same page): with rows this long, four of its five fit
/// beside the page's other rows, and the fifth moves, with new entries in
/// the table's three indexes. At a fill of 100 none would fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_pages_are_filled_densely_and_a_connections_tokens_are_still_revoked_in_place() {
    let test = TestContext::new().await;
    let mut issued = Vec::new();
    for company in 0..12 {
        for user in 0..5 {
            issued.push(
                test.issue_grant(&TokenGrant {
                    client_id: "app".into(),
                    company_id: format!("company-{company}"),
                    provider_id: "gusto".into(),
                    user: Some(format!("user-{user}@example.com")),
                    products: vec!["company".into(), "directory".into(), "individual".into()],
                    entities: Vec::new(),
                })
                .await,
            );
        }
    }
    let most = most_rows_on_one_page(&test).await;
    assert!(
        most >= 30,
        "a full page holds {most} tokens; at 88 % it holds about 35"
    );

    // The connection of the middle tokens: on a full page.
    let token = &issued[32];
    let before = pages_of(&test, token.connection_id.as_uuid()).await;
    assert_eq!(before.len(), 5);
    let (mut events, _worker, channel) = test.running().await;
    let request = Uuid::new_v4();
    test.request_disconnect(&channel, request, token.token.expose())
        .await;
    let event = events.event_for(request).await;
    assert_eq!(event.routing_key, "connection.disconnected");

    let after = pages_of(&test, token.connection_id.as_uuid()).await;
    let in_place = before
        .iter()
        .zip(&after)
        .filter(|((id_before, page_before), (id_after, page_after))| {
            id_before == id_after && page_before == page_after
        })
        .count();
    assert!(
        in_place >= 4,
        "{in_place} of 5 tokens revoked on their own page: {before:?} -> {after:?}"
    );
    for issued in issued
        .iter()
        .filter(|t| t.connection_id == token.connection_id)
    {
        assert!(test.token_state(issued.token_id).await.revoked);
    }
}
