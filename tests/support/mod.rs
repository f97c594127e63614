//! A small HTTP/1.1 server for end-to-end tests, bound to an ephemeral
//! loopback port. It counts what it answers, so tests can compare the
//! server's count with the client's.
//!
//! Routes: `/status/{code}` answers that status; `/slow/{ms}` answers 200
//! after a delay; `/reset` resets the connection; `/chunked` answers
//! `chunk-one chunk-two` in two chunks and a trailer; `/close-after` answers
//! and then closes the connection without saying so; anything else is 200
//! with `ok`.
//!
//! Also what the test crates share: running `redproof`, reading its
//! results file, reading a metrics page, and addresses that refuse
//! connections.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Requests answered per path, and when the first and last of each path
/// were; waiters are woken on every answer.
#[derive(Clone, Default)]
pub struct Counts(
    Arc<(Mutex<HashMap<String, u64>>, Condvar)>,
    Arc<Mutex<HashMap<String, (Instant, Instant)>>>,
);

impl Counts {
    /// When the first and the last request to exactly `path` arrived.
    pub fn span(&self, path: &str) -> Option<(Instant, Instant)> {
        self.1.lock().unwrap().get(path).copied()
    }

    /// Requests answered whose path starts with `prefix`.
    pub fn get(&self, prefix: &str) -> u64 {
        sum_prefix(&self.0.0.lock().unwrap(), prefix)
    }

    /// Blocks until at least `n` requests whose path starts with `prefix`
    /// were answered. The timeout only keeps a broken run from hanging the
    /// test: reaching it fails the test.
    pub fn wait_for(&self, prefix: &str, n: u64, timeout: Duration) {
        let (lock, answered) = &*self.0;
        let guard = lock.lock().unwrap();
        let (_guard, waited) = answered
            .wait_timeout_while(guard, timeout, |c| sum_prefix(c, prefix) < n)
            .unwrap();
        assert!(
            !waited.timed_out(),
            "the server answered fewer than {n} requests to `{prefix}` in {timeout:?}"
        );
    }

    /// Every path answered that starts with `prefix`, with its count.
    pub fn paths(&self, prefix: &str) -> HashMap<String, u64> {
        let counts = self.0.0.lock().unwrap();
        counts
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    fn add(&self, path: String) {
        let now = Instant::now();
        self.1
            .lock()
            .unwrap()
            .entry(path.clone())
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
        let (lock, answered) = &*self.0;
        *lock.lock().unwrap().entry(path).or_default() += 1;
        answered.notify_all();
    }
}

fn sum_prefix(counts: &HashMap<String, u64>, prefix: &str) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub counts: Counts,
    _rt: tokio::runtime::Runtime,
}

impl TestServer {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub fn start() -> TestServer {
    let (rt, listener) = server_runtime();
    let addr = listener.local_addr().unwrap();
    let counts = Counts::default();
    let c = counts.clone();
    rt.spawn(async move {
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let (r, mut w) = sock.into_split();
                let mut r = BufReader::new(r);
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let mut content_length = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; content_length];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let route = path.split('?').next().unwrap_or("/").to_owned();
                    if route == "/reset" {
                        let sock = r.into_inner().reunite(w).unwrap();
                        let _ = sock.set_zero_linger();
                        drop(sock);
                        return;
                    }
                    let status: u16 = if let Some(code) = route.strip_prefix("/status/") {
                        code.parse().unwrap_or(400)
                    } else if let Some(ms) = route.strip_prefix("/slow/") {
                        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
                        200
                    } else {
                        200
                    };
                    c.add(route.clone());
                    if route == "/chunked" {
                        let parts: [&[u8]; 3] = [
                            b"HTTP/1.1 200 X\r\ntransfer-encoding: chunked\r\n\r\n9\r\nchunk-one",
                            b"\r\na;ext=1\r\n chunk-two\r\n",
                            b"0\r\nx-trailer: yes\r\n\r\n",
                        ];
                        for p in parts {
                            if w.write_all(p).await.is_err() {
                                return;
                            }
                            tokio::task::yield_now().await;
                        }
                        continue;
                    }
                    let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 3\r\n\r\nok\n");
                    if w.write_all(resp.as_bytes()).await.is_err() || route == "/close-after" {
                        return;
                    }
                }
            });
        }
    });
    TestServer {
        addr,
        counts,
        _rt: rt,
    }
}

/// The HTTP versions a [`HyperServer`] saw, with their counts.
#[derive(Clone, Default)]
pub struct Versions(Arc<Mutex<HashMap<String, u64>>>);

impl Versions {
    pub fn get(&self, version: &str) -> u64 {
        self.0.lock().unwrap().get(version).copied().unwrap_or(0)
    }
}

async fn answer(
    versions: Versions,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<String>, std::convert::Infallible> {
    *versions
        .0
        .lock()
        .unwrap()
        .entry(format!("{:?}", req.version()))
        .or_default() += 1;
    // `x-answer-status: 502` asks for that status with an HTML page, as a
    // proxy in front of a gRPC server answers when it cannot reach it.
    let status = req
        .headers()
        .get("x-answer-status")
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
    // A session: `/session/login` sets a cookie and redirects to
    // `/session/me`, which answers 200 only when the cookie comes back.
    match req.uri().path() {
        "/session/login" => {
            return Ok(hyper::Response::builder()
                .status(302)
                .header("set-cookie", "sid=h2; Path=/session")
                .header("location", "/session/me")
                .body(String::new())
                .unwrap());
        }
        "/session/me" => {
            let cookie = req.headers().get("cookie").and_then(|v| v.to_str().ok());
            let status = if cookie == Some("sid=h2") { 200 } else { 401 };
            return Ok(hyper::Response::builder()
                .status(status)
                .body(String::new())
                .unwrap());
        }
        _ => {}
    }
    if let Some(status) = status {
        return Ok(hyper::Response::builder()
            .status(status)
            .header("content-type", "text/html")
            .body(format!("<html><body><h1>{status}</h1></body></html>\n"))
            .unwrap());
    }
    Ok(hyper::Response::new("ok\n".to_owned()))
}

/// A hyper-based test server on an ephemeral loopback port.
pub struct HyperServer {
    pub addr: SocketAddr,
    pub versions: Versions,
    _rt: tokio::runtime::Runtime,
}

/// Accepts connections and hands each to `serve` on its own task.
fn spawn_server<F, Fut>(serve: F) -> HyperServer
where
    F: Fn(tokio::net::TcpStream, Versions) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (rt, listener) = server_runtime();
    let addr = listener.local_addr().unwrap();
    let versions = Versions::default();
    let v = versions.clone();
    rt.spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(serve(sock, v.clone()));
        }
    });
    HyperServer {
        addr,
        versions,
        _rt: rt,
    }
}

/// An HTTP/2-only cleartext server (h2c with prior knowledge).
pub fn start_h2c() -> HyperServer {
    spawn_server(|sock, v| async move {
        let service = hyper::service::service_fn(move |req| answer(v.clone(), req));
        let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
            .await;
    })
}

/// A TLS server with a fresh self-signed certificate for `localhost`,
/// offering HTTP/2 and HTTP/1.1 through ALPN.
pub fn start_tls() -> HyperServer {
    start_tls_offering(&[b"h2", b"http/1.1"])
}

/// A TLS server like [`start_tls`] offering these ALPN protocols.
pub fn start_tls_offering(alpn: &[&[u8]]) -> HyperServer {
    let acceptor = self_signed_acceptor(alpn);
    spawn_server(move |sock, v| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(tls) = acceptor.accept(sock).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| answer(v.clone(), req));
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        }
    })
}

/// A TLS front for a cleartext HTTP/2 server at `backend`: it terminates
/// TLS (self-signed for `localhost`, ALPN `h2`) and passes the bytes on.
pub fn tls_front(backend: SocketAddr) -> HyperServer {
    tls_front_with(backend, self_signed_acceptor(&[b"h2"]))
}

/// A TLS front for `backend` that accepts connections with `acceptor`
/// (for example one that requires a client certificate).
pub fn tls_front_with(backend: SocketAddr, acceptor: tokio_rustls::TlsAcceptor) -> HyperServer {
    spawn_server(move |sock, _| {
        let acceptor = acceptor.clone();
        async move {
            let Ok(mut tls) = acceptor.accept(sock).await else {
                return;
            };
            let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                return;
            };
            let _ = plain.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
        }
    })
}

fn self_signed_acceptor(alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// One `redproof run`: its exit code, output, and the results file when
/// one was written (in `dir`, as `results.json`).
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub results: Option<Value>,
    pub dir: tempfile::TempDir,
}

impl Run {
    /// The results file, which the run must have written.
    pub fn results(&self) -> &Value {
        self.results
            .as_ref()
            .unwrap_or_else(|| panic!("no results file\n{}\n{}", self.stdout, self.stderr))
    }
}

/// The scenario file `text`, written into `dir`.
pub fn write_scenario(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("scenario.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `redproof run` on `scenario`, written to a fresh temporary directory
/// with `files` beside it; `args` follow the file, and the results go to
/// `results.json` in that directory. Colour is off.
pub fn run_scenario(scenario: &str, files: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let file = write_scenario(dir.path(), scenario);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(&file)
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .args(args)
        .output()
        .unwrap();
    finish(out, dir)
}

/// `redproof run` on `scenario` writing every output: `results.json`,
/// `junit.xml` and `summary.md` in the run's temporary directory; `args`
/// follow the file.
pub fn run_with_every_output(scenario: &str, args: &[&str]) -> Run {
    run_with_every_output_env(scenario, args, &[])
}

/// [`run_with_every_output`] with these environment variables set.
pub fn run_with_every_output_env(scenario: &str, args: &[&str], vars: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = write_scenario(dir.path(), scenario);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("NO_COLOR", "1")
        .envs(vars.iter().copied())
        .arg("run")
        .arg(&file)
        .args(args)
        .arg("--out")
        .arg(dir.path().join("results.json"))
        .arg("--junit")
        .arg(dir.path().join("junit.xml"))
        .arg("--markdown")
        .arg(dir.path().join("summary.md"))
        .output()
        .unwrap();
    finish(out, dir)
}

/// `redproof run FILE --out DIR/results.json`, started in the background
/// with its output captured. Colour is off.
pub fn spawn_run(file: &std::path::Path, dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("NO_COLOR", "1")
        .arg("run")
        .arg(file)
        .arg("--out")
        .arg(dir.join("results.json"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Sends SIGINT (Ctrl-C) to a run started by [`spawn_run`] and waits for
/// it to end.
pub fn interrupt(child: std::process::Child, dir: tempfile::TempDir) -> Run {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    finish(child.wait_with_output().unwrap(), dir)
}

/// The [`Run`] of a finished `redproof run` whose results went to
/// `results.json` in `dir`.
pub fn finish(out: std::process::Output, dir: tempfile::TempDir) -> Run {
    let results = std::fs::read_to_string(dir.path().join("results.json"))
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        results,
        dir,
    }
}

/// A one-thread runtime for a test server, and a listener on an ephemeral
/// loopback port.
fn server_runtime() -> (tokio::runtime::Runtime, TcpListener) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    (rt, listener)
}

/// A request's entry in a results file, by name.
pub fn request<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no request `{name}`"))
}

/// (outcome, expected, count) of each outcome of one request, as the
/// results file writes them: `{"status": 200}`, `{"grpc": "OK"}`,
/// `{"transport": "refused"}`, `{"check_failed": {"status": 200}}`.
pub fn outcomes(results: &Value, name: &str) -> Vec<(Value, bool, u64)> {
    request(results, name)["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["outcome"].clone(),
                o["ok"].as_bool().unwrap(),
                o["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Completed requests of `name` with exactly this outcome.
pub fn count(results: &Value, name: &str, outcome: Value) -> u64 {
    outcomes(results, name)
        .iter()
        .filter(|o| o.0 == outcome)
        .map(|o| o.2)
        .sum()
}

/// Completed requests of `name`, whatever their outcome.
pub fn total(results: &Value, name: &str) -> u64 {
    outcomes(results, name).iter().map(|o| o.2).sum()
}

/// Requests of `name` that got an HTTP response (any status, checks
/// passed or not): what the server can have counted.
pub fn responses(results: &Value, name: &str) -> u64 {
    outcomes(results, name)
        .iter()
        .filter(|o| o.0.get("status").is_some())
        .map(|o| o.2)
        .sum()
}

/// A GET over a fresh HTTP/1.0 connection: the status and body, or `None`
/// when nothing answered.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned())?;
    Some((status, body))
}

pub mod grafana;
pub mod prometheus;
pub mod recorder;
pub mod services;

/// The exposition-text parser the services' own tests use.
#[path = "../../services/tests/support/exposition.rs"]
pub mod exposition;

/// The sum of every sample of `name` on the metrics page at `addr` whose
/// labels include all of `labels`.
pub fn scrape_sum(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, text) = http_get(&addr.to_string(), "/metrics")
        .unwrap_or_else(|| panic!("no metrics page at {addr}"));
    assert_eq!(status, 200, "{text}");
    exposition::sum(&text, name, labels)
}

/// Polls `done` every 20 ms until it holds. `what` names the awaited event
/// in the failure reported when `timeout` passes first; the timeout only
/// keeps a broken run from hanging the test.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "gave up after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback address that refuses connections: its port is bound, so no
/// one else can take it while this lives, but not listening.
pub struct Refusing {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

pub fn refusing() -> Refusing {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    Refusing {
        addr: socket.local_addr().unwrap(),
        _socket: socket,
    }
}

/// A server that answers every request with what `answer` returns for its
/// path (status, JSON body), on an ephemeral loopback port: stands in for
/// a Prometheus that misbehaves in a given way. Runs until the test ends.
pub fn fake_api(answer: fn(&str) -> (u16, String)) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let (status, body) = answer(&path);
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                        body.len()
                    );
                    if conn.write_all(head.as_bytes()).is_err()
                        || conn.write_all(body.as_bytes()).is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}
