//! redproof against hostile or broken peers: what it does when things go
//! wrong, asserted on its exit code and on every output.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::json;
use support::{Run, count, fake_api, request, total};

const BUILDINFO: &str = r#"{"status":"success","data":{"version":"2.42.0"}}"#;
const NO_TARGETS: &str = r#"{"status":"success","data":{"activeTargets":[],"droppedTargets":[]}}"#;

/// A scenario against the test server, verified against `prometheus`
/// after the load (preflight skipped: these Prometheus fakes scrape no
/// targets, which preflight alone would already refuse).
fn verified_run(prometheus: SocketAddr) -> Run {
    verified_run_with(prometheus, &["--quiet", "--no-preflight"])
}

fn verified_run_with(prometheus: SocketAddr, args: &[&str]) -> Run {
    let server = support::start();
    let scenario = format!(
        r#"
name: bad-prometheus
targets:
  web: {{ url: "{}" }}
load: {{ users: 2, iterations: 20 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  prometheus: "http://{prometheus}"
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        server.url()
    );
    support::run_with_every_output(&scenario, args)
}

fn redproof() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"));
    c.env("NO_COLOR", "1");
    c
}

/// A Prometheus whose answers pass the first look but cannot be used must
/// fail the gate (exit 2) in every output, never pass it.
fn assert_fails_everywhere(r: &Run, why: &str) {
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("verification not run"), "{}", r.stdout);
    assert!(
        r.stderr.contains("error: verification not run"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains(why), "{}", r.stderr);
    let results = r.results();
    assert!(results["verification_error"].is_string(), "{results}");
    assert!(
        results.get("verification_unavailable").is_none(),
        "{results}"
    );
    let junit = std::fs::read_to_string(r.dir.path().join("junit.xml")).unwrap();
    assert!(
        junit.contains("<failure") || junit.contains("<error"),
        "{junit}"
    );
    let md = std::fs::read_to_string(r.dir.path().join("summary.md")).unwrap();
    assert!(
        md.contains("❌") && md.contains("Verification not run"),
        "{md}"
    );
    let out = redproof()
        .arg("report")
        .arg(r.dir.path().join("results.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "re-rendered report");
}

#[test]
fn prometheus_query_errors_fail_the_gate() {
    let prometheus = fake_api(|path| {
        if path.starts_with("/api/v1/status/buildinfo") {
            (200, BUILDINFO.into())
        } else if path.starts_with("/api/v1/targets") {
            (200, NO_TARGETS.into())
        } else {
            (
                422,
                r#"{"status":"error","errorType":"execution","error":"query processing would load too many samples"}"#.into(),
            )
        }
    });
    assert_fails_everywhere(&verified_run(prometheus), "too many samples");
    // With preflight, a Prometheus that scrapes nothing stops the run
    // before any traffic.
    let r = verified_run_with(prometheus, &["--quiet"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("scrapes no targets"), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was sent"), "{}", r.stderr);
}

#[test]
fn prometheus_answers_of_the_wrong_shape_fail_the_gate() {
    let prometheus = fake_api(|path| {
        if path.starts_with("/api/v1/status/buildinfo") {
            (200, BUILDINFO.into())
        } else if path.starts_with("/api/v1/targets") {
            (200, NO_TARGETS.into())
        } else {
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":"nope"}}"#.into(),
            )
        }
    });
    assert_fails_everywhere(&verified_run(prometheus), "not the API's result shape");
}

/// A `/metrics` page that never ends: the scrape stops at
/// `metrics.max_response`, the page counts as down with that reason, and
/// the run ends with its results instead of exhausting memory.
#[test]
fn an_endless_metrics_page_is_cut_at_the_limit() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let page = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut b = [0u8; 4096];
                let _ = conn.read(&mut b);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
                let line = b"endless_total{a=\"b\"} 1\n".repeat(1000);
                while conn.write_all(&line).is_ok() {}
            });
        }
    });
    let server = support::start();
    let scenario = format!(
        r#"
name: endless-page
targets:
  web: {{ url: "{}" }}
load: {{ users: 1, iterations: 10 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  scrape: ["http://{page}/metrics"]
  max_response: 1M
  settle_timeout: 3s
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        server.url()
    );
    // Preflight stops the run before any traffic, naming the limit.
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("is down") && r.stderr.contains("byte limit"),
        "{}",
        r.stderr
    );
    assert!(r.results.is_none(), "nothing ran, so no results file");
    assert_eq!(server.counts.get("/"), 0);
    // Without preflight the load runs and verification says why it fails.
    let r = support::run_scenario(&scenario, &[], &["--quiet", "--no-preflight"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("byte limit"), "{}", r.stdout);
    assert!(r.results()["verification"].is_object());
}

/// What a hostile server does with one request.
enum Act {
    /// Writes these bytes and reads the next request.
    Answer(Vec<u8>),
    /// Writes these bytes and closes.
    AnswerClose(Vec<u8>),
    /// Closes without a byte.
    Close,
    /// Writes these bytes (maybe none) and then nothing more, holding the
    /// connection until the client gives up on it.
    Stall(Vec<u8>),
}

/// A server on a loopback port whose every request gets `act(method,
/// path, n)` (`n` counts the requests before it on the same connection).
/// It counts the requests it read whole and the ones it answered.
struct Hostile {
    addr: SocketAddr,
    seen: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
}

impl Hostile {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn hostile(act: fn(&str, &str, usize) -> Act) -> Hostile {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let (s, a) = (seen.clone(), answered.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (seen, answered) = (s.clone(), a.clone());
            std::thread::spawn(move || serve_hostile(conn, act, &seen, &answered));
        }
    });
    Hostile {
        addr,
        seen,
        answered,
    }
}

fn serve_hostile(
    mut conn: TcpStream,
    act: fn(&str, &str, usize) -> Act,
    seen: &AtomicU64,
    answered: &AtomicU64,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for n in 0.. {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or("").to_owned();
        let path = words.next().unwrap_or("/").to_owned();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let act = act(&method, &path, n);
        // An early answer goes out before the body is read.
        if let Act::AnswerClose(bytes) = &act
            && length > 0
        {
            let _ = conn.write_all(bytes);
            answered.fetch_add(1, Ordering::SeqCst);
            let _ = std::io::copy(&mut (&mut reader).take(length as u64), &mut std::io::sink());
            seen.fetch_add(1, Ordering::SeqCst);
            return;
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        seen.fetch_add(1, Ordering::SeqCst);
        match act {
            Act::Answer(bytes) => {
                if conn.write_all(&bytes).is_err() {
                    return;
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            Act::AnswerClose(bytes) => {
                if conn.write_all(&bytes).is_ok() {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Act::Close => return,
            Act::Stall(bytes) => {
                let _ = conn.write_all(&bytes);
                // Until the client closes.
                let _ = std::io::copy(&mut reader, &mut std::io::sink());
                return;
            }
        }
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn ok() -> Act {
    Act::Answer(OK.to_vec())
}

/// A scenario whose `targets` and `requests` are given (as YAML flow
/// lines), run with `load`.
fn hostile_run(targets: &str, load: &str, requests: &str) -> Run {
    let scenario =
        format!("name: hostile\ntargets:\n{targets}\nload: {load}\nrequests:\n{requests}\n");
    support::run_with_every_output(&scenario, &["--quiet"])
}

/// Servers close kept-alive connections without saying so (after an
/// idle timeout, or uvicorn after an unhandled exception). Here every
/// connection serves one answer and closes at the next request without a
/// byte: an idempotent GET is sent once more on a new connection and
/// counted as a retry; a POST is not sent twice and ends as
/// `no_response`. The server's answers equal the client's responses.
#[test]
fn stale_keep_alive_connections_retry_only_idempotent_requests() {
    let server = hostile(|_, _, n| if n == 0 { ok() } else { Act::Close });
    let r = hostile_run(
        &format!("  web: {{ url: \"{}\" }}", server.url()),
        "{ users: 2, iterations: 60 }",
        "  - { name: read, http: { target: web, path: /r } }\n  - { name: write, http: { target: web, method: POST, path: /w, body: x } }",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let res = r.results();
    let reads = total(res, "read");
    assert!(reads > 0, "{}", r.stdout);
    assert_eq!(
        count(res, "read", json!({"status": 200})),
        reads,
        "{}",
        r.stdout
    );
    assert!(
        request(res, "read")["retries"].as_u64().unwrap() > 0,
        "{res}"
    );
    let closed = count(res, "write", json!({"transport": "no_response"}));
    assert!(closed > 0, "{}", r.stdout);
    assert!(request(res, "write").get("retries").is_none(), "{res}");
    assert!(r.stdout.contains("not sent twice"), "{}", r.stdout);
    assert!(
        r.stdout.contains("sent again on a new connection"),
        "{}",
        r.stdout
    );
    let responses = reads + count(res, "write", json!({"status": 200}));
    assert_eq!(server.answered.load(Ordering::SeqCst), responses);
    assert_eq!(reads + total(res, "write"), 60);
}

/// A server that accepts and never answers, or stops in the middle of a
/// body: the target's timeout ends each request as `timeout`, and the
/// connection is not reused (every request reaches the server).
#[test]
fn stalled_answers_time_out() {
    let server = hostile(|_, path, _| match path {
        "/silent" => Act::Stall(Vec::new()),
        _ => Act::Stall(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec()),
    });
    let r = hostile_run(
        &format!("  web: {{ url: \"{}\", timeout: 300ms }}", server.url()),
        "{ users: 2, iterations: 6 }",
        "  - { name: silent, http: { target: web, path: /silent } }\n  - { name: half, http: { target: web, path: /half } }",
    );
    let res = r.results();
    for name in ["silent", "half"] {
        assert_eq!(
            count(res, name, json!({"transport": "timeout"})),
            total(res, name),
            "{}",
            r.stdout
        );
    }
    assert_eq!(server.seen.load(Ordering::SeqCst), 6);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// `100 Continue` and `103 Early Hints` come before the real answer,
/// whose body the checks read.
#[test]
fn interim_responses_precede_the_answer() {
    let server = hostile(|_, _, _| {
        Act::Answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
                .to_vec(),
        )
    });
    let r = hostile_run(
        &format!("  web: {{ url: \"{}\" }}", server.url()),
        "{ users: 2, iterations: 40 }",
        "  - { name: hinted, http: { target: web, path: /h }, expect: { status: 200, body_contains: hello } }",
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(count(r.results(), "hinted", json!({"status": 200})), 40);
    assert_eq!(server.answered.load(Ordering::SeqCst), 40);
}

/// Answers that break HTTP/1.1 framing are errors of their kind, each
/// with its message, and never reuse the connection: every request
/// reaches the server.
#[test]
fn broken_framing_is_classified() {
    let server = hostile(|_, path, _| {
        match path {
        "/short" => Act::AnswerClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec()),
        "/cut-head" => Act::AnswerClose(b"HTTP/1.1 200 OK\r\ncontent-le".to_vec()),
        "/bad-chunk" => Act::Answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n".to_vec(),
        ),
        "/not-http" => Act::AnswerClose(b"220 smtp.example.com ESMTP ready\r\n".to_vec()),
        "/hang-up" => Act::Close,
        // Both framings: chunked wins, as RFC 9112 says.
        _ => Act::Answer(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
    }
    });
    let r = hostile_run(
        &format!("  web: {{ url: \"{}\" }}", server.url()),
        "{ users: 1, iterations: 60 }",
        "  - { name: short, http: { target: web, path: /short } }\n  - { name: cut_head, http: { target: web, path: /cut-head } }\n  - { name: bad_chunk, http: { target: web, path: /bad-chunk } }\n  - { name: not_http, http: { target: web, path: /not-http } }\n  - { name: hang_up, http: { target: web, path: /hang-up } }\n  - { name: both, http: { target: web, path: /both }, expect: { status: 200, body_contains: hello } }",
    );
    let res = r.results();
    for (name, outcome) in [
        ("short", json!({"transport": "reset"})),
        ("cut_head", json!({"transport": "reset"})),
        ("bad_chunk", json!({"transport": "body"})),
        ("not_http", json!({"transport": "other"})),
        ("hang_up", json!({"transport": "no_response"})),
        ("both", json!({"status": 200})),
    ] {
        let n = total(res, name);
        assert!(n > 0, "{name}: {}", r.stdout);
        assert_eq!(
            count(res, name, outcome.clone()),
            n,
            "{name} {outcome}: {}",
            r.stdout
        );
    }
    // The report wraps at 80 columns: read it as one line.
    let words = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    for message in [
        "in the middle of the response head",
        "invalid HTTP response",
        "closed the connection before any response",
    ] {
        assert!(words.contains(message), "{message}: {}", r.stdout);
    }
    assert_eq!(server.seen.load(Ordering::SeqCst), 60);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
}

/// A head larger than 256 KiB is refused; a large body nobody reads is
/// discarded as it arrives; a body kept for a check stops at the
/// target's `max_body`, even one that never ends.
#[test]
fn huge_heads_and_bodies_are_bounded() {
    let server = hostile(|_, path, _| match path {
        "/big-head" => {
            let mut head = b"HTTP/1.1 200 OK\r\nx-filler: ".to_vec();
            head.extend(std::iter::repeat_n(b'a', 300 * 1024));
            head.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
            Act::AnswerClose(head)
        }
        "/big-body" => {
            let mut reply = b"HTTP/1.1 200 OK\r\ncontent-length: 20000000\r\n\r\n".to_vec();
            reply.resize(reply.len() + 20_000_000, b'x');
            Act::Answer(reply)
        }
        _ => {
            // A chunked body that goes on for ever.
            let mut reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..4096 {
                reply.extend_from_slice(b"400\r\n");
                reply.resize(reply.len() + 1024, b'x');
                reply.extend_from_slice(b"\r\n");
            }
            Act::Stall(reply)
        }
    });
    let r = hostile_run(
        &format!(
            "  web: {{ url: \"{}\", max_body: 1M, timeout: 20s }}",
            server.url()
        ),
        "{ users: 1, iterations: 9 }",
        "  - { name: big_head, http: { target: web, path: /big-head } }\n  - { name: big_body, http: { target: web, path: /big-body } }\n  - { name: endless, http: { target: web, path: /endless }, expect: { status: 200, body_contains: never } }",
    );
    let res = r.results();
    assert_eq!(
        count(res, "big_head", json!({"transport": "other"})),
        total(res, "big_head")
    );
    assert!(r.stdout.contains("larger than 256 KiB"), "{}", r.stdout);
    assert_eq!(
        count(res, "big_body", json!({"status": 200})),
        total(res, "big_body")
    );
    assert_eq!(
        count(res, "endless", json!({"transport": "body"})),
        total(res, "endless")
    );
    assert!(r.stdout.contains("1000000 byte limit"), "{}", r.stdout);
    assert_eq!(server.seen.load(Ordering::SeqCst), 9);
}

/// A server that answers before reading the request body (`413` with
/// `connection: close`), then drains it: the answer counts.
#[test]
fn early_answers_count() {
    let server = hostile(|_, _, _| {
        Act::AnswerClose(
            b"HTTP/1.1 413 Payload Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
                .to_vec(),
        )
    });
    let body = "x".repeat(200_000);
    let r = hostile_run(
        &format!("  web: {{ url: \"{}\" }}", server.url()),
        "{ users: 2, iterations: 20 }",
        &format!(
            "  - {{ name: upload, http: {{ target: web, method: POST, path: /u, body: \"{body}\" }}, expect: {{ status: 413 }} }}"
        ),
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(count(r.results(), "upload", json!({"status": 413})), 20);
    assert_eq!(server.answered.load(Ordering::SeqCst), 20);
}

/// A metrics page with a malformed line is a failed scrape, named with
/// its line in the first failing verdict, never read as a page of zeros.
#[test]
fn a_malformed_metrics_page_is_named_by_its_line() {
    let server = hostile(|_, path, _| {
        if path == "/metrics" {
            let body = "django_http_responses_total_by_status_view_method_total{status=\"200\",view=\"ok\",method=\"GET\"} 1\n\
                        django_http_responses_total_by_status_view_method_total{status=\"200\",view=\"ok\" 2\n";
            Act::Answer(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes(),
            )
        } else {
            ok()
        }
    });
    let scenario = format!(
        r#"
name: malformed-page
targets:
  web: {{ url: "{url}" }}
load: {{ users: 1, iterations: 5 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  scrape: ["{url}/metrics"]
  settle_timeout: 2s
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        url = server.url()
    );
    // Preflight reads the page once and stops: nothing else is sent.
    let r = support::run_with_every_output(&scenario, &["--quiet"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "metrics page {}/metrics is down: unreadable metrics page: line 2",
            server.url()
        )),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing was sent"), "{}", r.stderr);
    assert_eq!(server.seen.load(Ordering::SeqCst), 1);
    let r = support::run_with_every_output(&scenario, &["--quiet", "--no-preflight"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    let first = r
        .stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("FAIL"))
        .take_while(|l| !l.trim_start().starts_with("NO DATA"))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        first.contains("unreadable metrics page: line 2"),
        "{}",
        r.stdout
    );
    let md = std::fs::read_to_string(r.dir.path().join("summary.md")).unwrap();
    assert!(md.contains("line 2"), "{md}");
}
