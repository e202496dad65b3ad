//! HTTPS: the test node behind a TLS-terminating proxy whose certificate is signed by a CA made
//! for the test (openssl). The sink trusts that CA from `tls.ca_file` or from `tls.ca_pem`
//! (as a Connector's Secret reaches it, through an environment variable), and refuses the
//! server without it, naming the certificate problem.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::opensearch::*;
use crate::harness::*;

const N: i64 = 2_000;

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it (`server.pem`, `server.key`).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=weir test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
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
        ],
    );
}

/// Accepts TLS on a free port and pipes each connection to `upstream` (host:port) in plain TCP.
fn tls_proxy(dir: &Path, upstream: String) -> (String, tokio::runtime::Runtime) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                // A client that does not trust the certificate ends the handshake: nothing to pipe.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), rt)
}

#[test]
fn https_with_the_clusters_ca_from_a_file_or_pem_text_and_refused_without_it() {
    let base = url();
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let upstream = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (https, _rt) = tls_proxy(dir.path(), upstream);
    let ca = dir.path().join("ca.pem");
    let pem = std::fs::read_to_string(&ca).unwrap();

    for (tls, env) in [
        (format!("{{ ca_file: {} }}", ca.display()), None),
        (
            "{ ca_pem: \"${env:ES_CA}\" }".to_string(),
            Some(("ES_CA", pem.as_str())),
        ),
    ] {
        let index = unique("tls");
        create_index(&base, &index, 1, mapping());
        let job = tempfile::tempdir().unwrap();
        let spec = pipeline(
            job.path(),
            &index,
            N,
            10_000,
            &https,
            &index,
            &format!("    id_field: seq\n    tls: {tls}\n"),
        );
        let o = run(&spec, &[], env.as_slice());
        assert!(o.status.success(), "{tls}: {}", stderr(&o));
        assert_exact(&base, &index, N);
    }

    let job = tempfile::tempdir().unwrap();
    let spec = pipeline(
        job.path(),
        "tls-untrusted",
        N,
        10_000,
        &https,
        "tls-untrusted",
        "    id_field: seq\n    retry: { backoff: 10ms, max_attempts: 2 }\n",
    );
    let o = run(&spec, &[], &[]);
    let log = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot reach the cluster") && log.to_lowercase().contains("certificate"),
        "{log}"
    );
}
