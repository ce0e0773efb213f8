//! Postgres over TLS, against the local server (`ssl = on`, a self-signed
//! certificate for `localhost`): every connection of the worker is
//! encrypted when asked, and settings that cannot work stop start-up with a
//! message naming them.

use diesel::sql_types::{Bool, Text};
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::support::process::run_to_exit;
use crate::support::{eventually, TestContext};

const PASSWORD: &str = "tls-pa55word";

#[derive(diesel::QueryableByName)]
struct Setting {
    #[diesel(sql_type = Text)]
    value: String,
}

#[derive(diesel::QueryableByName)]
struct Encrypted {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

/// The server's certificate file, which is its own root.
async fn server_certificate(test: &TestContext) -> String {
    let mut conn = test.pool.get().await.expect("db");
    let ssl: Setting = diesel::sql_query("SELECT current_setting('ssl') AS value")
        .get_result(&mut conn)
        .await
        .expect("ssl");
    assert_eq!(ssl.value, "on", "these tests need a server with ssl = on");
    let file: Setting = diesel::sql_query("SELECT current_setting('ssl_cert_file') AS value")
        .get_result(&mut conn)
        .await
        .expect("ssl_cert_file");
    file.value
}

/// The test database's URL with this host, a password (trust
/// authentication ignores it) and these query parameters.
fn url_with(test: &TestContext, host: &str, query: &str) -> String {
    let mut url = url::Url::parse(&test.database_url).expect("url");
    url.set_host(Some(host)).expect("host");
    url.set_password(Some(PASSWORD)).expect("password");
    url.set_query(Some(query));
    url.to_string()
}

/// Whether each server connection of `application` is encrypted.
async fn encryption_of(test: &TestContext, application: &str) -> Vec<bool> {
    let mut conn = test.pool.get().await.expect("db");
    diesel::sql_query(
        "SELECT s.ssl FROM pg_stat_activity AS a JOIN pg_stat_ssl AS s USING (pid) \
         WHERE a.application_name = $1",
    )
    .bind::<Text, _>(application)
    .load::<Encrypted>(&mut conn)
    .await
    .expect("pg_stat_ssl")
    .into_iter()
    .map(|row| row.ssl)
    .collect()
}

/// Run a worker on `database_url`, make it process a request, and return
/// whether each of its connections is encrypted.
async fn worker_connections(
    test: &TestContext,
    database_url: &str,
    application: &str,
) -> Vec<bool> {
    let worker = test.spawn_worker_process(&[
        ("DATABASE_URL", database_url),
        ("RUN_MIGRATIONS", "true"),
        ("DATABASE_POOL_SIZE", "3"),
    ]);
    let token = test
        .issue("app", &format!("company-{application}"), "gusto", "user")
        .await;
    let mut events = test.event_tap().await;
    let request = test
        .request_disconnect(&test.channel().await, Uuid::new_v4(), token.token.expose())
        .await;
    events.event_for(request).await;
    let encryption = eventually("the worker's connections", || async {
        let rows = encryption_of(test, application).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    drop(worker);
    encryption
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_or_verify_full_every_connection_of_the_worker_is_encrypted() {
    let test = TestContext::new().await;
    let root = server_certificate(&test).await;
    let unique = Uuid::new_v4().simple().to_string();

    let required = format!("dw-require-{unique}");
    let url = url_with(
        &test,
        "localhost",
        &format!("sslmode=require&application_name={required}"),
    );
    let encryption = worker_connections(&test, &url, &required).await;
    assert!(encryption.iter().all(|ssl| *ssl), "{encryption:?}");

    let verified = format!("dw-verify-{unique}");
    let url = url_with(
        &test,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}&application_name={verified}"),
    );
    let encryption = worker_connections(&test, &url, &verified).await;
    assert!(encryption.iter().all(|ssl| *ssl), "{encryption:?}");

    // The check can fail: without TLS the same query sees plaintext.
    let plain = format!("dw-plain-{unique}");
    let url = url_with(
        &test,
        "localhost",
        &format!("sslmode=disable&application_name={plain}"),
    );
    let encryption = worker_connections(&test, &url, &plain).await;
    assert!(encryption.iter().all(|ssl| !*ssl), "{encryption:?}");

    // The commands connect the same way.
    let url = url_with(
        &test,
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={root}"),
    );
    let issued = run_to_exit({
        let mut command =
            test.command(&["token", "issue", "--company-id", "c", "--provider-id", "p"]);
        command.env("DATABASE_URL", &url);
        command
    })
    .await;
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_with_a_wrong_root_or_host_stops_start_up_naming_the_setting() {
    let test = TestContext::new().await;
    let root = server_certificate(&test).await;
    // A certificate the server's was not issued by.
    let stranger = std::env::temp_dir().join(format!("dw-stranger-{}.pem", Uuid::new_v4()));
    std::fs::write(&stranger, STRANGER_CERTIFICATE).expect("writing a root file");
    let cases = [
        (
            "a root that did not issue the server's certificate",
            url_with(
                &test,
                "localhost",
                &format!("sslmode=verify-full&sslrootcert={}", stranger.display()),
            ),
        ),
        (
            "a host name the certificate does not name",
            url_with(
                &test,
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={root}"),
            ),
        ),
    ];
    for (case, url) in cases {
        let output = run_to_exit({
            let mut command = test.command(&["run"]);
            command.env("DATABASE_URL", &url).env("HTTP_PORT", "0");
            command
        })
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{case}: it started\n{stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.contains("DATABASE_URL") && last.contains("sslmode=verify-full"),
            "{case}: the last line names the setting: {last}"
        );
        assert!(
            !stderr.contains(PASSWORD),
            "{case}: the password is printed: {stderr}"
        );
    }
    let _ = std::fs::remove_file(stranger);
}

/// A self-signed certificate for `localhost` that signed nothing else.
const STRANGER_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----
MIIBfTCCASOgAwIBAgIUUgmoB4HxSgqMtrbs6Kig71w9nBcwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI2MTEyNjAwMjY1N1oXDTM2MTEyMzAw
MjY1N1owFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAE4Bn4kVEjJFTOSPsBvtmHKGEScNpFloDV8duuh2WX+k91VHTiRKZHPJx9
wgnEHtg8xvvXk8v5IIKLS1ZONo+zV6NTMFEwHQYDVR0OBBYEFJIdJcqlzyBUg+zF
fzHLD+OjTWnXMB8GA1UdIwQYMBaAFJIdJcqlzyBUg+zFfzHLD+OjTWnXMA8GA1Ud
EwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgTdXvCpH/pINKxpbEuvovk1It
30EIDeXOW3jFMbIcUIgCIQD663blsEnUxtYgxrz+Rd5a93Ad0DL/fSosdxwsB5HN
eg==
-----END CERTIFICATE-----
";
