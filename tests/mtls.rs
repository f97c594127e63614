//! End-to-end tests of a target's `tls:`: a private CA and a client
//! certificate (mutual TLS), against a loopback server whose certificate
//! a fresh CA signed and which requires clients to show one it signed.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A CA, a server certificate for `localhost` and a client certificate,
/// all as PEM files in a directory.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: Vec<u8>,
    server: (Vec<u8>, Vec<u8>),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.der().to_vec(), key.serialize_der())
    };
    let server = leaf("localhost");
    let client = leaf("redproof-client");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write("ca.pem", pem("CERTIFICATE", ca_cert.der()));
    write("client.pem", pem("CERTIFICATE", &client.0));
    write("client-key.pem", pem("PRIVATE KEY", &client.1));
    Pki {
        ca_der: ca_cert.der().to_vec(),
        server,
        dir,
    }
}

/// An HTTPS server that requires a client certificate signed by the CA
/// and counts the requests it answered to clients that showed one.
struct MtlsServer {
    addr: SocketAddr,
    answered: Arc<AtomicU64>,
    _rt: tokio::runtime::Runtime,
}

/// A TLS acceptor with the server's certificate that requires a client
/// certificate signed by the CA, offering `alpn`.
fn mutual_tls(pki: &Pki, alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone().into()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server.1.clone().into());
    let mut config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server.0.clone().into()], key)
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

fn start(pki: &Pki) -> MtlsServer {
    let acceptor = mutual_tls(pki, b"http/1.1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    rt.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(sock).await else {
                    return;
                };
                let shown = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .is_some_and(|c| !c.is_empty());
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = tls.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if shown {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        if tls
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    MtlsServer {
        addr,
        answered,
        _rt: rt,
    }
}

fn scenario(server: &MtlsServer, pki: &Pki, tls: &str) -> String {
    format!(
        r#"
name: mtls
targets:
  web: {{ url: "https://localhost:{port}"{tls} }}
load: {{ users: 1, iterations: 3 }}
requests:
  - {{ name: hello, http: {{ target: web, path: /hello }} }}
"#,
        port = server.addr.port(),
        tls = tls.replace("DIR", &pki.dir.path().display().to_string()),
    )
}

#[test]
fn a_client_certificate_and_a_private_ca_open_mutual_tls() {
    let pki = pki();
    let server = start(&pki);
    let r = support::run_scenario(
        &scenario(
            &server,
            &pki,
            r#", tls: { ca: "DIR/ca.pem", cert: "DIR/client.pem", key: "DIR/client-key.pem" }"#,
        ),
        &[],
        &["--quiet"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(support::total(r.results(), "hello"), 3);
    assert_eq!(server.answered.load(Ordering::Relaxed), 3);
}

#[test]
fn without_the_certificate_or_the_ca_the_handshake_fails() {
    let pki = pki();
    let server = start(&pki);
    for tls in [
        // The server asks for a certificate the client does not have.
        r#", tls: { ca: "DIR/ca.pem" }"#,
        // The system's roots do not know the private CA.
        "",
    ] {
        let r = support::run_scenario(&scenario(&server, &pki, tls), &[], &["--quiet"]);
        // 69: the target never answered.
        assert_eq!(r.code, 69, "{tls}\n{}\n{}", r.stdout, r.stderr);
        let outcomes = support::outcomes(r.results(), "hello");
        assert!(
            outcomes
                .iter()
                .all(|o| o.0 == serde_json::json!({"transport": "tls"})),
            "{tls}: {outcomes:?}"
        );
    }
    assert_eq!(server.answered.load(Ordering::Relaxed), 0);
}

/// gRPC goes through the same TLS connector: calls from `.proto` files
/// and by reflection reach revert-name behind a front that requires the
/// client certificate, and fail on the handshake without it.
#[test]
fn grpc_calls_open_mutual_tls() {
    let pki = pki();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (grpc, metrics) = rt.block_on(async {
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        (bind().await.unwrap(), bind().await.unwrap())
    });
    let (backend, metrics_addr) = (grpc.local_addr().unwrap(), metrics.local_addr().unwrap());
    rt.spawn(redproof_services::revert::serve(
        grpc,
        metrics,
        redproof_services::revert::GrpcOptions::default(),
        shutdown.clone(),
    ));
    let front = support::tls_front_with(backend, mutual_tls(&pki, b"h2"));
    let proto = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/revert_name.proto");
    let scenario = |tls: &str| {
        format!(
            r#"
name: grpc-mtls
targets:
  protos: {{ url: "https://localhost:{port}", protos: ["{proto}"]{tls} }}
  reflected: {{ url: "https://localhost:{port}", reflection: true{tls} }}
load: {{ users: 2, iterations: 40 }}
requests:
  - name: from_protos
    grpc: {{ target: protos, method: revertname.RevertName/RevertName, message: {{ name: "abc" }} }}
    expect: {{ json: {{ "$.reverted": "cba" }} }}
  - name: by_reflection
    grpc: {{ target: reflected, method: revertname.RevertName/RevertName, message: {{ name: "xyz" }} }}
    expect: {{ json: {{ "$.reverted": "zyx" }} }}
"#,
            port = front.addr.port(),
            proto = proto.display(),
            tls = tls.replace("DIR", &pki.dir.path().display().to_string()),
        )
    };
    let r = support::run_scenario(
        &scenario(
            r#", tls: { ca: "DIR/ca.pem", cert: "DIR/client.pem", key: "DIR/client-key.pem" }"#,
        ),
        &[],
        &["--quiet"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let sent =
        support::total(r.results(), "from_protos") + support::total(r.results(), "by_reflection");
    assert_eq!(sent, 40, "{}", r.stdout);
    let served = support::scrape_sum(
        metrics_addr,
        "grpc_server_handled_total",
        &[("grpc_method", "RevertName"), ("grpc_code", "OK")],
    );
    assert_eq!(served as u64, 40);

    // Without the client certificate the front refuses the handshake:
    // reflection cannot read the descriptors, so the run stops before
    // any call (69: a target unavailable).
    let r = support::run_scenario(
        &scenario(r#", tls: { ca: "DIR/ca.pem" }"#),
        &[],
        &["--quiet"],
    );
    assert_eq!(r.code, 69, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("reflected"), "{}", r.stderr);
    let served_after = support::scrape_sum(
        metrics_addr,
        "grpc_server_handled_total",
        &[("grpc_method", "RevertName")],
    );
    assert_eq!(
        served_after as u64, 40,
        "a call got through without the certificate"
    );
    shutdown.cancel();
}

#[test]
fn tls_files_are_checked_at_validation() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("not-a-cert.pem"), "hello\n").unwrap();
    let file = support::write_scenario(
        dir.path(),
        &format!(
            r#"
name: tls-problems
targets:
  a: {{ url: "http://127.0.0.1:1", tls: {{ ca: x.pem }} }}
  b: {{ url: "https://localhost:1", tls: {{ ca: not-a-cert.pem }} }}
  c: {{ url: "https://localhost:1", tls: {{ cert: "{d}/client.pem" }} }}
  d: {{ url: "https://localhost:1", tls: {{ ca: missing.pem }} }}
load: {{ users: 1, duration: 1s }}
requests:
  - {{ name: ok, http: {{ target: b, path: / }} }}
"#,
            d = pki.dir.path().display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"))
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    for (at, msg) in [
        ("4:40", "`tls` goes with `https://` targets"),
        (
            "5:47",
            "`tls.ca`: `not-a-cert.pem` holds no PEM certificate",
        ),
        (
            "6:41",
            "`tls`: a client certificate needs both `cert:` and `key:`",
        ),
        (
            "7:47",
            "`tls.ca`: cannot read certificates from `missing.pem`",
        ),
    ] {
        assert!(err.contains(&format!(":{at}: {msg}")), "{at} {msg}\n{err}");
    }
}
