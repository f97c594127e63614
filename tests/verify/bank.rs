//! Requests that share a route, against the bank service.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::services::prometheus;
use crate::{assert_clean, redproof, with_commas};

/// The bank service on an ephemeral port, stopped on drop.
struct Bank {
    addr: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bank {
    fn start() -> Self {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send(l.local_addr().unwrap()).unwrap();
                let _ = redproof_services::bank::serve(l, Default::default(), token).await;
            });
        });
        Bank {
            addr: rx.recv().unwrap(),
            shutdown,
            thread: Some(thread),
        }
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deposits and overdraws POST the same route with different bodies.
fn bank_scenario(bank: SocketAddr, prometheus: &str, verify: &str) -> String {
    format!(
        r#"name: bank-shared-route
targets:
  bank: {{ url: "http://{bank}", timeout: 5s }}
load: {{ users: 4, wait: 5ms..20ms, duration: 3s, drain: 5s }}
on_start:
  - name: open_account
    http: {{ target: bank, method: POST, path: /accounts, json: {{ owner: ann }} }}
    expect: {{ status: 201 }}
    capture: {{ account_id: {{ json: "$.id" }} }}
requests:
  - name: deposit
    weight: 2
    http: {{ target: bank, method: POST, path: "/accounts/{{{{ account_id }}}}/transactions", json: {{ kind: credit, amount: 100 }} }}
    expect: {{ status: 201 }}
  - name: overdraw
    http: {{ target: bank, method: POST, path: "/accounts/{{{{ account_id }}}}/transactions", json: {{ kind: debit, amount: 1000000000 }} }}
    expect: {{ status: 422 }}
metrics: {{ prometheus: "{prometheus}" }}
verify:
{verify}"#
    )
}

/// Two requests on one route: verified as a group they agree with the
/// server exactly; verified alone, the surplus is named as the other
/// request's traffic with the YAML that declares it.
#[test]
fn requests_sharing_a_route_verify_as_a_group_with_prometheus() {
    let bank = Bank::start();
    let prom = prometheus(&[("bank", format!("http://{}/metrics", bank.addr))]);
    let route = r#"match: { handler: "/accounts/{account_id}/transactions", method: POST }"#;
    let grouped = bank_scenario(
        bank.addr,
        &prom.url(),
        &format!(
            "  transactions: {{ convention: fastapi, requests: [deposit, overdraw], {route} }}\n"
        ),
    );
    let run = redproof(&grouped, &[]);
    assert_clean(&run);
    let both = run.client_responses("deposit") + run.client_responses("overdraw");
    assert!(run.client_responses("overdraw") > 0.0, "{}", run.stdout);
    for r in ["deposit", "overdraw"] {
        assert_eq!(run.server_count(r), both, "{}", run.stdout);
    }
    let (_, errors) = run.verdict("overdraw.errors");
    assert!(errors.contains("4xx: server"), "{errors}");

    let alone = bank_scenario(
        bank.addr,
        &prom.url(),
        &format!("  deposit: {{ convention: fastapi, {route} }}\n"),
    );
    let run = redproof(&alone, &[]);
    assert_eq!(run.code, 2, "{}", run.stdout);
    let (status, text) = run.verdict("deposit.count");
    assert_eq!(status, "fail");
    let overdraws = run.client_responses("overdraw");
    assert!(
        text.contains(&format!(
            "exactly `overdraw`'s {} responses",
            with_commas(overdraws as u64)
        )) && text.contains("`requests: [deposit, overdraw]`"),
        "{text}"
    );
    assert!(!text.contains("narrow"), "{text}");
    let failing: Vec<String> = run.failing().into_iter().map(|f| f.0).collect();
    assert_eq!(failing, ["deposit.count"], "{}", run.stdout);
}
