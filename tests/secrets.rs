//! What a run must never show: credentials written in URLs, values read
//! from the environment with `env()`, and control
//! sequences that servers put in bodies, status messages and errors. Each
//! test runs `redproof` against loopback servers and reads every output:
//! stdout, stderr, the results file, JUnit and Markdown.

mod support;

use support::recorder::{RecordingServer, respond};

/// A server that records every request and answers each with `status`
/// and `body`.
fn recorder(status: u16, body: &'static str) -> RecordingServer {
    RecordingServer::start(move |_, _| respond(status, "", body))
}

/// Every output of a run, to search.
fn outputs(r: &support::Run) -> Vec<(&'static str, String)> {
    let read = |name: &str| std::fs::read_to_string(r.dir.path().join(name)).unwrap();
    vec![
        ("stdout", r.stdout.clone()),
        ("stderr", r.stderr.clone()),
        ("results.json", read("results.json")),
        ("junit.xml", read("junit.xml")),
        ("summary.md", read("summary.md")),
    ]
}

#[test]
fn credentials_in_urls_are_sent_as_basic_auth_and_never_shown() {
    let web = recorder(200, "ok\n");
    // Not Prometheus: verification cannot run, and says so with its URL.
    let prometheus = recorder(500, "down\n");
    let down = support::refusing();
    let scenario = format!(
        r#"
name: secrets
targets:
  web: {{ url: "http://alice:w3b-s3cret%40x@{web}/" }}
  down: {{ url: "http://bob:d0wn-s3cret@{down}" }}
load: {{ users: 1, iterations: 40 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
  - {{ name: gone, http: {{ target: down, path: /ok }} }}
metrics:
  prometheus: "http://carol:pr0m-s3cret@{prometheus}"
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        web = web.addr,
        down = down.addr,
        prometheus = prometheus.addr,
    );
    // Preflight stops the run at the Prometheus that is down: its message
    // masks the password too.
    let stopped = support::run_scenario(&scenario, &[], &[]);
    assert_eq!(stopped.code, 69, "{}", stopped.stderr);
    assert!(!stopped.stderr.contains("s3cret"), "{}", stopped.stderr);
    assert!(
        stopped
            .stderr
            .contains(&format!("http://carol:***@{}", prometheus.addr)),
        "{}",
        stopped.stderr
    );
    // Every output of a run that goes on without preflight.
    let r = support::run_with_every_output(&scenario, &["--no-preflight"]);
    for (name, text) in outputs(&r) {
        for secret in ["s3cret", "YWxpY2U6", "Ym9iOmQw", "Y2Fyb2w6"] {
            assert!(
                !text.contains(secret),
                "{name} shows `{secret}`:\n{text}\n--- stderr\n{}",
                r.stderr
            );
        }
    }
    // The URLs are still recognisable, their passwords masked.
    assert!(
        r.stderr.contains(&format!("http://bob:***@{}", down.addr)),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(&format!("http://carol:***@{}", prometheus.addr)),
        "{}",
        r.stderr
    );

    let heads = web.heads();
    assert!(!heads.is_empty(), "the target saw no request");
    for head in &heads {
        // base64("alice:w3b-s3cret@x"): percent-decoded before encoding.
        assert!(
            head.contains("authorization: Basic YWxpY2U6dzNiLXMzY3JldEB4\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("host: {}\r\n", web.addr)), "{head}");
        assert!(!head.contains("alice:"), "{head}");
    }
    let heads = prometheus.heads();
    assert!(!heads.is_empty(), "Prometheus was never asked");
    // base64("carol:pr0m-s3cret")
    assert!(
        heads[0].contains("authorization: Basic Y2Fyb2w6cHIwbS1zM2NyZXQ=\r\n"),
        "{}",
        heads[0]
    );
}

#[test]
fn values_from_the_environment_are_sent_and_never_shown() {
    // The server echoes the token, so the failed check's message would
    // quote it if nothing masked it.
    let web = recorder(200, "echo: t0ken-from-env-42");
    let down = support::refusing();
    let scenario = r#"
name: env-secrets
targets:
  web:
    url: 'http://{{ env("RP_WEB") }}/'
    headers: { x-api-key: '{{ env("RP_KEY") }}' }
  down: { url: 'http://{{ env("RP_DOWN", "127.0.0.1:9") }}' }
load: { users: 1, iterations: 2 }
requests:
  - name: all_of_it
    flow:
      - name: item
        http:
          target: web
          method: POST
          path: '/items/{{ env("RP_ITEM") }}'
          headers: { authorization: 'Bearer {{ env("RP_TOKEN") }}' }
          json: { note: '{{ env("RP_ITEM") }}', n: "{{ seq() }}" }
        expect: { body_contains: never-there }
      - { name: gone, http: { target: down, path: /x } }
"#;
    let web_addr = web.addr.to_string();
    let down_addr = down.addr.to_string();
    let vars = [
        ("RP_WEB", web_addr.as_str()),
        ("RP_DOWN", down_addr.as_str()),
        ("RP_KEY", "k3y-from-env"),
        ("RP_ITEM", "item-from-env"),
        ("RP_TOKEN", "t0ken-from-env-42"),
    ];
    let r = support::run_with_every_output_env(scenario, &[], &vars);
    // 69: a target never answered.
    assert_eq!(r.code, 69, "{}\n{}", r.stdout, r.stderr);
    for (name, text) in outputs(&r) {
        for (var, value) in vars {
            assert!(
                !text.contains(value),
                "{name} shows the value of {var} (`{value}`):\n{text}"
            );
        }
    }
    // The failed check still says what it saw, with the token masked, and
    // the unreachable target is named by the URL as written.
    assert!(r.stdout.contains("echo: ***"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains(r#"(http://{{ env("RP_DOWN", "127.0.0.1:9") }}) never answered"#),
        "{}",
        r.stderr
    );

    let seen = web.seen();
    assert!(!seen.is_empty(), "the target saw no request");
    for req in &seen {
        let head = &req.head;
        assert!(
            head.starts_with("POST /items/item-from-env HTTP/1.1\r\n"),
            "{head}"
        );
        assert_eq!(req.header("x-api-key"), Some("k3y-from-env"), "{head}");
        assert_eq!(
            req.header("authorization"),
            Some("Bearer t0ken-from-env-42"),
            "{head}"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&seen[0].body),
        r#"{"note":"item-from-env","n":1}"#
    );
}

#[test]
fn a_prometheus_url_from_the_environment_is_used_and_shown_as_written() {
    let web = recorder(200, "ok\n");
    // Not Prometheus: preflight stops the run and names its URL.
    let prometheus = recorder(500, "down\n");
    let scenario = format!(
        r#"
name: env-prometheus
targets:
  web: {{ url: "http://{web}" }}
load: {{ users: 1, iterations: 2 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  prometheus: 'http://carol:{{{{ env("RP_PROM_PASSWORD") }}}}@{{{{ env("RP_PROM") }}}}'
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        web = web.addr,
    );
    let addr = prometheus.addr.to_string();
    let vars = [
        ("RP_PROM", addr.as_str()),
        ("RP_PROM_PASSWORD", "pr0m-fr0m-env"),
    ];
    let r = support::run_with_every_output_env(&scenario, &[], &vars);
    assert_eq!(r.code, 69, "{}", r.stderr);
    assert!(
        r.stderr.contains(r#"{{ env("RP_PROM") }}"#),
        "the URL as written:\n{}",
        r.stderr
    );
    for (var, value) in vars {
        assert!(
            !r.stderr.contains(value),
            "stderr shows {var}:\n{}",
            r.stderr
        );
        assert!(
            !r.stdout.contains(value),
            "stdout shows {var}:\n{}",
            r.stdout
        );
    }
    let heads = prometheus.heads();
    assert!(!heads.is_empty(), "Prometheus was never asked");
    // base64("carol:pr0m-fr0m-env")
    assert!(
        heads[0].contains("authorization: Basic Y2Fyb2w6cHIwbS1mcjBtLWVudg==\r\n"),
        "{}",
        heads[0]
    );
    assert!(web.heads().is_empty(), "preflight sent load");

    // A scrape URL from the environment: the embedded scraper reads it,
    // and every message masks what the environment put in it.
    let page = recorder(500, "down\n");
    let scenario = format!(
        r#"
name: env-scrape
targets:
  web: {{ url: "http://{web}" }}
load: {{ users: 1, iterations: 2 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
metrics:
  scrape: ['http://{{{{ env("RP_SCRAPE") }}}}/metrics']
verify:
  ok: {{ convention: django, match: {{ view: ok }} }}
"#,
        web = web.addr,
    );
    let addr = page.addr.to_string();
    let r = support::run_with_every_output_env(&scenario, &[], &[("RP_SCRAPE", addr.as_str())]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(!page.heads().is_empty(), "the page was never scraped");
    assert!(!r.stderr.contains(&addr), "{}", r.stderr);
    assert!(r.stderr.contains("http://***/metrics"), "{}", r.stderr);
    assert!(web.heads().is_empty(), "preflight sent load");
}

#[test]
fn auth_sends_basic_and_bearer_credentials_and_never_shows_them() {
    let web = recorder(200, "ok\n");
    let scenario = format!(
        r#"
name: auth
targets:
  web:
    url: "http://{web}"
    auth: {{ basic: {{ user: ann, password: '{{{{ env("RP_PASSWORD") }}}}' }} }}
load: {{ users: 1, iterations: 2 }}
requests:
  - name: both
    flow:
      - {{ name: as_ann, http: {{ target: web, path: /basic }} }}
      - name: with_token
        http:
          target: web
          path: /bearer
          auth: {{ bearer: '{{{{ env("RP_TOKEN") }}}}' }}
"#,
        web = web.addr,
    );
    let vars = [("RP_PASSWORD", "pa55-w0rd"), ("RP_TOKEN", "t0k-3n-xyz")];
    let r = support::run_with_every_output_env(&scenario, &[], &vars);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // base64("ann:pa55-w0rd")
    let basic = "YW5uOnBhNTUtdzByZA==";
    for (name, text) in outputs(&r) {
        for secret in ["pa55-w0rd", "t0k-3n-xyz", basic] {
            assert!(!text.contains(secret), "{name} shows `{secret}`:\n{text}");
        }
    }
    let heads = web.heads();
    let basic_head = heads
        .iter()
        .find(|h| h.starts_with("GET /basic "))
        .expect("no /basic");
    assert!(
        basic_head.contains(&format!("authorization: Basic {basic}\r\n")),
        "{basic_head}"
    );
    let bearer_head = heads
        .iter()
        .find(|h| h.starts_with("GET /bearer "))
        .expect("no /bearer");
    // The request's credentials replace the target's.
    assert!(
        bearer_head.contains("authorization: Bearer t0k-3n-xyz\r\n"),
        "{bearer_head}"
    );
    assert_eq!(
        bearer_head.matches("authorization").count(),
        1,
        "{bearer_head}"
    );
}

#[test]
fn a_scenario_authorization_header_replaces_url_credentials() {
    let web = recorder(200, "ok\n");
    let scenario = format!(
        r#"
name: secrets
targets:
  web: {{ url: "http://alice:pw@{web}", headers: {{ authorization: "Bearer t" }} }}
load: {{ users: 1, iterations: 1 }}
requests:
  - {{ name: ok, http: {{ target: web, path: /ok }} }}
"#,
        web = web.addr,
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let heads = web.heads();
    assert!(
        heads[0].contains("authorization: Bearer t\r\n"),
        "{}",
        heads[0]
    );
    assert_eq!(heads[0].matches("authorization").count(), 1, "{}", heads[0]);
}

#[test]
fn server_text_reaches_no_output_with_its_control_characters() {
    let web = recorder(200, "\x1b]0;pwned\x07\x1b[2Jhello");
    let prometheus = recorder(500, "\x1b[31mred\u{9b}0m");
    let scenario = format!(
        r#"
name: escapes
targets:
  web: {{ url: "http://{web}" }}
load: {{ users: 1, iterations: 2 }}
requests:
  - name: greeting
    http: {{ target: web, path: /hello }}
    expect: {{ body_contains: goodbye }}
metrics:
  prometheus: "http://{prometheus}"
verify:
  greeting: {{ convention: django, match: {{ view: hello }} }}
"#,
        web = web.addr,
        prometheus = prometheus.addr,
    );
    let r = support::run_with_every_output(&scenario, &["--no-preflight"]);
    for (name, text) in outputs(&r) {
        assert!(
            !text.contains(['\x1b', '\x07', '\u{9b}']),
            "{name} has raw control characters: {text:?}"
        );
    }
    // The report wraps at 80 columns: read it as one line.
    let words = r.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains(
            r"the body does not contain `goodbye`; it begins `\x1b]0;pwned\x07\x1b[2Jhello`"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains(r"\x1b[31mred\u{9b}0m"), "{}", r.stdout);
}

#[test]
fn validation_messages_do_not_quote_values_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = support::write_scenario(
        dir.path(),
        r#"
name: env-in-errors
targets:
  web: { url: "http://127.0.0.1:9" }
load: { users: 1, duration: 1s }
requests:
  - { name: item, http: { target: web, path: '/items/{{ env("RP_ITEM") }}' } }
"#,
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redproof"))
        .env("RP_ITEM", "has space-s3cret")
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    // The path is refused where it is written, without its value.
    assert!(
        err.contains("`path`: `/items/***` is not a valid request target"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
