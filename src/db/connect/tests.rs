//! Parsing `DATABASE_URL`: the TLS settings with libpq's meanings, errors
//! that name the setting and never the password.

use super::*;

const BASE: &str = "postgres://app:hunter2@db.example:5432/disconnect_worker";

fn parse(query: &str) -> Result<DatabaseUrl, String> {
    DatabaseUrl::parse(&format!("{BASE}{query}"))
}

#[test]
fn every_libpq_mode_but_allow_is_understood_and_prefer_is_the_default() {
    assert_eq!(parse("").expect("valid").ssl_mode(), SslMode::Prefer);
    for mode in ["disable", "prefer", "require", "verify-ca", "verify-full"] {
        let url = parse(&format!("?sslmode={mode}")).expect(mode);
        assert_eq!(url.ssl_mode().as_str(), mode);
    }
    let error = parse("?sslmode=allow").expect_err("allow is refused");
    assert!(
        error.contains("DATABASE_URL") && error.contains("sslmode"),
        "{error}"
    );
}

#[test]
fn require_with_a_root_file_checks_the_chain_as_libpq_does() {
    let root = std::env::temp_dir().join(format!("dw-root-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(&root, SELF_SIGNED).expect("write");
    let url = parse(&format!("?sslmode=require&sslrootcert={}", root.display())).expect("valid");
    let _ = std::fs::remove_file(&root);
    assert_eq!(url.ssl_mode(), SslMode::VerifyCa);
}

#[test]
fn the_application_name_defaults_to_the_worker_and_can_be_overridden() {
    let url = parse("").expect("valid");
    assert_eq!(
        url.config.get_application_name(),
        Some(DEFAULT_APPLICATION_NAME)
    );
    let url = parse("?application_name=replica-7").expect("valid");
    assert_eq!(url.config.get_application_name(), Some("replica-7"));
}

#[test]
fn bad_tls_settings_name_the_setting_and_hide_the_password() {
    let cases = [
        "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        "?sslmode=sometimes",
        "?sslcert=/tmp/client.pem",
    ];
    for query in cases {
        let error = parse(query).expect_err(query);
        assert!(error.contains("DATABASE_URL"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
    let error =
        parse("?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").expect_err("missing file");
    assert!(
        error.contains("sslrootcert") && error.contains("/nonexistent/ca.pem"),
        "{error}"
    );
}

#[test]
fn another_database_on_the_same_server_keeps_everything_else() {
    let url = parse("?sslmode=disable&application_name=x").expect("valid");
    let admin = url.with_database("postgres");
    assert_eq!(admin.database_name(), Some("postgres"));
    assert_eq!(url.database_name(), Some("disconnect_worker"));
    assert_eq!(admin.ssl_mode(), SslMode::Disable);
    assert_eq!(admin.config.get_application_name(), Some("x"));
    assert!(admin.to_string().contains("/postgres"));
    assert!(!admin.to_string().contains("hunter2"));
    assert!(!format!("{admin:?}").contains("hunter2"));
}

/// A self-signed certificate for `localhost`, for parsing only.
const SELF_SIGNED: &str = "-----BEGIN CERTIFICATE-----
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
