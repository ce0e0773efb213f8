//! `DATABASE_URL` in libpq's multi-host forms, which HA setups hand out
//! (Patroni, CloudNativePG, the managed services): the servers are tried in
//! order, `target_session_attrs=read-write` keeps to one that takes writes,
//! TLS checks each host against its own name, and the URL is shown with
//! every host and without the password.

use uuid::Uuid;

use crate::support::process::{run_to_exit, until_ready};
use crate::support::TestContext;

const PASSWORD: &str = "multi-h0st-pa55word";

/// A port nothing listens on.
fn closed_port() -> u16 {
    disconnect_testkit::process::free_port().expect("a free port")
}

/// The test database's URL as libpq's multi-host form: `hosts` in the
/// authority (`authority`) or as `host=`/`port=` lists in the query.
fn multi_host_url(
    test: &TestContext,
    hosts: &[(&str, u16)],
    in_authority: bool,
    query: &str,
) -> String {
    let url = url::Url::parse(&test.database_url).expect("url");
    let user = url.username();
    let database = url.path();
    if in_authority {
        let list: Vec<String> = hosts
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect();
        format!(
            "postgres://{user}:{PASSWORD}@{}{database}?{query}",
            list.join(",")
        )
    } else {
        let names: Vec<&str> = hosts.iter().map(|(host, _)| *host).collect();
        let ports: Vec<String> = hosts.iter().map(|(_, port)| port.to_string()).collect();
        format!(
            "postgres://{user}:{PASSWORD}@{database}?host={}&port={}&{query}",
            names.join(","),
            ports.join(",")
        )
    }
}

/// The real server's host and port.
fn server(test: &TestContext) -> (String, u16) {
    let url = url::Url::parse(&test.database_url).expect("url");
    (
        url.host_str().expect("a host").to_string(),
        url.port().unwrap_or(5432),
    )
}

/// Both forms, the first host down: `migrate` and `run` use the second, and
/// the log names every host, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_migrate_take_a_multi_host_url_whose_first_host_is_down() {
    let test = TestContext::new().await;
    let (host, port) = server(&test);
    let down = closed_port();
    let hosts = [("127.0.0.1", down), (host.as_str(), port)];
    for in_authority in [true, false] {
        let url = multi_host_url(
            &test,
            &hosts,
            in_authority,
            "target_session_attrs=read-write",
        );
        let mut migrate = test.command(&["migrate"]);
        migrate.env("DATABASE_URL", &url);
        let output = run_to_exit(migrate).await;
        let logs = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{logs}");
        assert!(!logs.contains(PASSWORD), "{logs}");
        assert!(
            logs.contains(&format!("127.0.0.1:{down},{host}:{port}")),
            "every host named: {logs}"
        );
    }

    let url = multi_host_url(&test, &hosts, true, "target_session_attrs=read-write");
    let worker = test.spawn_worker_process(&[("DATABASE_URL", &url), ("RUN_MIGRATIONS", "true")]);
    until_ready(&worker).await;
    let mut events = test.event_tap().await;
    let token = test.issue("app", "C", "gusto", "user-a").await;
    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), token.token.expose())
        .await;
    assert_eq!(
        events.event_for(request).await.routing_key,
        "connection.disconnected"
    );
    assert!(!test.is_active(&token).await);
}

/// `verify-full` checks each host against its own name: with the server's
/// certificate (for `localhost`), the list that reaches it as `localhost`
/// works, and the one that reaches it as `127.0.0.1` stops start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_each_host_of_the_list_against_its_own_name() {
    let test = TestContext::new().await;
    let certificate = {
        use diesel::sql_types::Text;
        use diesel_async::RunQueryDsl;
        #[derive(diesel::QueryableByName)]
        struct Setting {
            #[diesel(sql_type = Text)]
            value: String,
        }
        let mut conn = test.pool.get().await.expect("db");
        diesel::sql_query("SELECT current_setting('ssl_cert_file') AS value")
            .get_result::<Setting>(&mut conn)
            .await
            .expect("ssl_cert_file")
            .value
    };
    let (_, port) = server(&test);
    let down = closed_port();
    let query = format!("sslmode=verify-full&sslrootcert={certificate}");
    for (hosts, works) in [
        ([("127.0.0.1", down), ("localhost", port)], true),
        ([("localhost", down), ("127.0.0.1", port)], false),
    ] {
        let mut migrate = test.command(&["migrate"]);
        migrate.env("DATABASE_URL", multi_host_url(&test, &hosts, true, &query));
        let output = run_to_exit(migrate).await;
        let logs = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.success(), works, "{hosts:?}: {logs}");
        if !works {
            assert!(logs.contains("TLS handshake"), "{logs}");
            assert!(!logs.contains(PASSWORD), "{logs}");
        }
    }
}
