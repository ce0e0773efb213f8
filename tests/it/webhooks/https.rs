//! HTTPS, as production sends: a receiver whose certificate a private CA
//! signed is reached when the CA is trusted (`SSL_CERT_FILE`), and refused
//! when it is not.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{disconnect_one, ready_dispatcher};
use crate::support::webhooks::{verify_with_official_library, Received};
use crate::support::{eventually, TestContext};

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, made
/// with the openssl command line in `dir`.
fn certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl");
        assert!(status.success(), "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=webhook test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// An HTTPS receiver answering 200 to every request, recording each.
async fn https_receiver(dir: &Path) -> (u16, Arc<Mutex<Vec<Received>>>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .expect("certificate")
        .collect::<Result<_, _>>()
        .expect("certificates");
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let recorded = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                if let Some(request) = read_request(&mut tls).await {
                    recorded.lock().expect("lock").push(request);
                    let _ = tls
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    (port, received)
}

/// One HTTP/1.1 request with a content-length body: enough for a test.
async fn read_request(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<Received> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..read]);
        if let Some(at) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
    let headers: std::collections::BTreeMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while bytes.len() < head_end + length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        bytes.extend_from_slice(&chunk[..read]);
    }
    Some(Received {
        headers,
        body: String::from_utf8_lossy(&bytes[head_end..head_end + length]).into_owned(),
        at: std::time::Instant::now(),
    })
}

#[tokio::test]
async fn an_https_receiver_is_reached_when_its_ca_is_trusted_and_refused_when_not() {
    let context = TestContext::new().await;
    let dir = std::env::temp_dir().join(format!("{}-https", context.database.name));
    std::fs::create_dir_all(&dir).expect("dir");
    certificates(&dir);
    let (port, received) = https_receiver(&dir).await;
    let url = format!("https://localhost:{port}/hook");
    let (endpoint, secret) = context.add_endpoint("app-a", &url, "standard");
    let ca = dir.join("ca.pem");
    let allowed = [
        ("WEBHOOK_ALLOWED_CIDRS", "127.0.0.0/8,::1/128"),
        ("WEBHOOK_ALLOW_HTTP", "false"),
    ];

    // Not trusted: the attempt fails on the certificate; nothing is read.
    let untrusted = ready_dispatcher(&context, &allowed).await;
    let (_events, _worker, channel) = context.running().await;
    disconnect_one(&context, &channel, "app-a").await;
    let failed = eventually("the refused attempt", || async {
        let attempts = context.attempts(&["--endpoint", &endpoint.to_string()]);
        attempts.into_iter().find(|a| !a["attempted_at"].is_null())
    })
    .await;
    assert!(failed["status_code"].is_null(), "{failed}");
    let error = failed["error"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(error.contains("certificate"), "{error}");
    assert!(received.lock().expect("lock").is_empty());
    drop(untrusted);

    // Trusted: the retry is delivered over TLS, signed.
    let ca_file = ca.to_string_lossy().into_owned();
    let mut trusted_settings = allowed.to_vec();
    trusted_settings.push(("SSL_CERT_FILE", &ca_file));
    let _trusted = ready_dispatcher(&context, &trusted_settings).await;
    let delivered = eventually("the delivery over HTTPS", || async {
        let received = received.lock().expect("lock").clone();
        (!received.is_empty()).then_some(received)
    })
    .await;
    verify_with_official_library("standard", &[&secret], &delivered);
    let _ = std::fs::remove_dir_all(&dir);
}
