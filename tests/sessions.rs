//! End-to-end tests of sessions: each user's cookie jar and redirects,
//! against a loopback server that hands out a session cookie at `/login`,
//! redirects on some paths, and records the head of every request.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use support::recorder::{RecordingServer, respond};

/// `/login` answers `set-cookie: sid=N; Path=/` (N counts logins) and
/// `set-cookie: scoped=1; Path=/admin`; `/logout` deletes `sid`;
/// `/old` redirects (302) to `/me`, `/form` (303) to `/done`,
/// `/sso/start` sets `sid=sso` and redirects to the relative `finish`,
/// `/loop` to itself, `/away` to another host; anything else answers
/// 200. Heads are recorded, each followed by its body.
struct SessionServer {
    addr: SocketAddr,
    server: RecordingServer,
}

impl SessionServer {
    fn start() -> Self {
        let logins = AtomicU64::new(0);
        let server = RecordingServer::start(move |req, addr| {
            let path = req.path();
            let redirect = |code: u16, to: &str| (code, format!("location: {to}\r\n"));
            let (status, mut extra) = match path {
                "/old" => redirect(302, &format!("http://{addr}/me")),
                "/form" => redirect(303, "/done"),
                "/sso/start" => redirect(302, "finish"),
                "/loop" => redirect(302, "/loop"),
                "/away" => redirect(302, "http://other.invalid/me"),
                _ => (200, String::new()),
            };
            extra.push_str(&match path {
                "/login" => format!(
                    "set-cookie: sid={}; Path=/; HttpOnly\r\nset-cookie: scoped=1; Path=/admin\r\n",
                    logins.fetch_add(1, Ordering::Relaxed) + 1
                ),
                "/logout" => "set-cookie: sid=; Max-Age=0; Path=/\r\n".to_owned(),
                "/sso/start" => "set-cookie: sid=sso; Path=/\r\n".to_owned(),
                _ => String::new(),
            });
            respond(status, &extra, "ok")
        });
        Self {
            addr: server.addr,
            server,
        }
    }

    /// The recorded heads of requests to `path`, any method, each
    /// followed by its body.
    fn heads(&self, path: &str) -> Vec<String> {
        self.server
            .seen()
            .into_iter()
            .filter(|s| s.path() == path)
            .map(|s| s.head + &String::from_utf8_lossy(&s.body))
            .collect()
    }
}

fn cookie_line(head: &str) -> Option<&str> {
    head.lines()
        .find_map(|l| l.strip_prefix("cookie: "))
        .map(str::trim_end)
}

fn scenario(addr: SocketAddr, target_extra: &str) -> String {
    format!(
        r#"
name: sessions
targets:
  web: {{ url: "http://{addr}"{target_extra} }}
load: {{ users: 3, iterations_per_user: 2 }}
on_start:
  - {{ name: login, http: {{ target: web, path: /login }} }}
requests:
  - name: visit
    flow:
      - {{ name: me, http: {{ target: web, path: /me }} }}
      - {{ name: admin, http: {{ target: web, path: /admin/users }} }}
"#
    )
}

#[test]
fn each_user_keeps_its_own_cookies_and_sends_them_by_path() {
    let server = SessionServer::start();
    let r = support::run_scenario(&scenario(server.addr, ""), &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let me = server.heads("/me");
    assert_eq!(me.len(), 6);
    let mut sids: Vec<&str> = me
        .iter()
        .map(|h| cookie_line(h).unwrap_or_else(|| panic!("no cookie sent:\n{h}")))
        .collect();
    // `scoped` has Path=/admin: not sent to /me.
    assert!(
        sids.iter()
            .all(|c| c.starts_with("sid=") && !c.contains(';')),
        "{sids:?}"
    );
    sids.sort_unstable();
    sids.dedup();
    assert_eq!(sids.len(), 3, "one session per user: {sids:?}");
    for h in server.heads("/admin/users") {
        let c = cookie_line(&h).unwrap_or_else(|| panic!("no cookie sent:\n{h}"));
        // The longer path first.
        assert!(c.starts_with("scoped=1; sid="), "{c}");
    }
    // Cookie values are the server's business: no output shows them.
    assert!(!r.stdout.contains("sid="), "{}", r.stdout);
}

#[test]
fn cookies_false_sends_none_and_max_age_zero_deletes() {
    let server = SessionServer::start();
    let r = support::run_scenario(
        &scenario(server.addr, ", cookies: false"),
        &[],
        &["--quiet"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let me = server.heads("/me");
    assert_eq!(me.len(), 6);
    assert!(me.iter().all(|h| cookie_line(h).is_none()), "{me:?}");

    let server = SessionServer::start();
    let logout = format!(
        r#"
name: logout
targets:
  web: {{ url: "http://{}" }}
load: {{ users: 1, iterations: 1 }}
requests:
  - name: visit
    flow:
      - {{ name: login, http: {{ target: web, path: /login }} }}
      - {{ name: logout, http: {{ target: web, path: /logout }} }}
      - {{ name: me, http: {{ target: web, path: /me }} }}
"#,
        server.addr
    );
    let r = support::run_scenario(&logout, &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let logout = server.heads("/logout");
    assert_eq!(cookie_line(&logout[0]), Some("sid=1"));
    let me = server.heads("/me");
    assert_eq!(me.len(), 1);
    assert_eq!(cookie_line(&me[0]), None, "{}", me[0]);
}

#[test]
fn redirects_are_followed_within_the_origin_up_to_the_limit() {
    let server = SessionServer::start();
    let scenario = format!(
        r#"
name: redirects
targets:
  web: {{ url: "http://{}", follow_redirects: 3 }}
load: {{ users: 1, iterations: 1 }}
requests:
  - name: visit
    flow:
      - {{ name: old, http: {{ target: web, path: /old }}, expect: {{ status: 200 }} }}
      - name: form
        http: {{ target: web, method: POST, path: /form, body: "a=1" }}
        expect: {{ status: 200 }}
      - {{ name: sso, http: {{ target: web, path: /sso/start }}, expect: {{ status: 200 }} }}
      - {{ name: loop, http: {{ target: web, path: /loop, follow_redirects: 2 }}, expect: {{ status: 302 }} }}
      - {{ name: away, http: {{ target: web, path: /away }}, expect: {{ status: 302 }} }}
      - {{ name: off, http: {{ target: web, path: /old, follow_redirects: 0 }}, expect: {{ status: 302 }} }}
"#,
        server.addr
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // An absolute Location on the same origin is followed; the request
    // is counted once, under its final status.
    assert_eq!(server.heads("/old").len(), 2);
    assert_eq!(server.heads("/me").len(), 1);
    assert_eq!(
        support::count(r.results(), "old", serde_json::json!({"status": 200})),
        1
    );
    // 303 continues as a GET without the body.
    let form = server.heads("/form");
    assert!(
        form[0].starts_with("POST /form ") && form[0].ends_with("a=1"),
        "{form:?}"
    );
    let done = server.heads("/done");
    assert_eq!(done.len(), 1);
    assert!(done[0].starts_with("GET /done "), "{}", done[0]);
    assert!(!done[0].contains("content-length"), "{}", done[0]);
    // A relative Location resolves against the path, and a cookie set
    // by the redirect goes with the next hop.
    let finish = server.heads("/sso/finish");
    assert_eq!(finish.len(), 1);
    assert!(finish[0].contains("cookie: sid=sso\r\n"), "{}", finish[0]);
    // The limit: the first request and two hops, then the 302 is the answer.
    assert_eq!(server.heads("/loop").len(), 3);
    assert_eq!(
        support::count(r.results(), "loop", serde_json::json!({"status": 302})),
        1
    );
    // Another origin is not followed.
    assert_eq!(server.heads("/away").len(), 1);
    assert_eq!(
        support::count(r.results(), "away", serde_json::json!({"status": 302})),
        1
    );
    assert_eq!(
        support::count(r.results(), "off", serde_json::json!({"status": 302})),
        1
    );
}

#[test]
fn cookies_and_redirects_work_over_http2_too() {
    let server = support::start_h2c();
    let scenario = format!(
        r#"
name: h2-session
targets:
  web: {{ url: "http://{}", http2: true, follow_redirects: 1 }}
load: {{ users: 1, iterations: 2 }}
requests:
  - {{ name: login, http: {{ target: web, path: /session/login }}, expect: {{ status: 200 }} }}
"#,
        server.addr
    );
    let r = support::run_scenario(&scenario, &[], &["--quiet"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    // Each login was followed to `/session/me`, which saw its cookie.
    assert_eq!(
        support::count(r.results(), "login", serde_json::json!({"status": 200})),
        2
    );
    assert_eq!(server.versions.get("HTTP/2.0"), 4);
}
