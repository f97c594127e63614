//! End-to-end tests of sessions: each user's cookie jar, against a
//! loopback server that hands out a session cookie at `/login` and
//! records the head of every request.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// `/login` answers `set-cookie: sid=N; Path=/` (N counts logins) and
/// `set-cookie: scoped=1; Path=/admin`; `/logout` deletes `sid`;
/// anything else answers 200. Heads are recorded with their path.
struct SessionServer {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl SessionServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let logins = Arc::new(AtomicU64::new(0));
        let h = heads.clone();
        std::thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(mut sock) = sock else { return };
                let (h, logins) = (h.clone(), logins.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(sock.try_clone().unwrap());
                    loop {
                        let mut head = String::new();
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                length = v.trim().parse().unwrap();
                            }
                            head.push_str(&line);
                        }
                        let mut body = vec![0; length];
                        r.read_exact(&mut body).unwrap();
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        let extra = match path.as_str() {
                            "/login" => format!(
                                "set-cookie: sid={}; Path=/; HttpOnly\r\nset-cookie: scoped=1; Path=/admin\r\n",
                                logins.fetch_add(1, Ordering::Relaxed) + 1
                            ),
                            "/logout" => "set-cookie: sid=; Max-Age=0; Path=/\r\n".to_owned(),
                            _ => String::new(),
                        };
                        h.lock().unwrap().push(head);
                        let resp = format!("HTTP/1.1 200 OK\r\n{extra}content-length: 2\r\n\r\nok");
                        if sock.write_all(resp.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, heads }
    }

    /// The recorded heads of requests to `path`.
    fn heads(&self, path: &str) -> Vec<String> {
        let prefix = format!("GET {path} ");
        self.heads
            .lock()
            .unwrap()
            .iter()
            .filter(|h| h.starts_with(&prefix))
            .cloned()
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
