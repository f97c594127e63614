//! polls and bank: Django- and FastAPI-style metrics, and the faults of
//! web workers (saw-tooth registries, uncounted 5xx, unmeasured delay,
//! milliseconds as seconds, resets, frozen pages).

use std::time::{Duration, Instant};

use redproof_services::bank::{self, BankOptions};
use redproof_services::faults::Faults;
use redproof_services::polls::{self, PollsOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exposition::sample;
use crate::{faults, get, listener, wait_until};

struct Polls {
    url: String,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

async fn start_polls(flags: &[&str], mean_ms: u64) -> Polls {
    let (l, addr) = listener().await;
    let shutdown = CancellationToken::new();
    let opts = PollsOptions {
        mean: Duration::from_millis(mean_ms),
        stddev: Duration::from_millis(mean_ms / 10),
        faults: faults(flags),
    };
    let handle = tokio::spawn(polls::serve(l, opts, shutdown.clone()));
    Polls {
        url: format!("http://{addr}"),
        shutdown,
        handle,
    }
}

impl Polls {
    async fn metrics(&self) -> String {
        get(&format!("{}/prometheus/metrics", self.url)).await.1
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.handle)
            .await
            .expect("shut down in time")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test]
async fn polls_answers_and_exports_django_and_gunicorn_metrics() {
    let p = start_polls(&[], 20).await;
    assert_eq!(get(&format!("{}/polls/2xx_success/", p.url)).await.0, 200);
    assert_eq!(get(&format!("{}/polls/4xx_not_found/", p.url)).await.0, 404);
    assert_eq!(get(&format!("{}/polls/5xx_exception/", p.url)).await.0, 500);
    let m = p.metrics().await;
    let resp = "django_http_responses_total_by_status_view_method_total";
    assert_eq!(
        sample(
            &m,
            resp,
            &[
                ("status", "200"),
                ("view", "polls:2xx_success"),
                ("method", "GET")
            ]
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            resp,
            &[("status", "404"), ("view", "polls:4xx_not_found")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            resp,
            &[("status", "500"), ("view", "polls:5xx_exception")]
        ),
        Some(1.0)
    );
    assert!(m.contains("# TYPE django_http_responses_total_by_status_view_method_total counter"));
    let hist = "django_http_requests_latency_seconds_by_view_method";
    assert_eq!(
        sample(
            &m,
            &format!("{hist}_count"),
            &[("view", "polls:2xx_success"), ("method", "GET")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{hist}_bucket"),
            &[("view", "polls:2xx_success"), ("le", "0.01")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &m,
            &format!("{hist}_bucket"),
            &[("view", "polls:2xx_success"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert!(
        m.contains("le=\"75.0\"") || m.contains("le=\"75\""),
        "django-prometheus buckets: {m}"
    );
    assert_eq!(
        sample(
            &m,
            "django_http_exceptions_total_by_type_total",
            &[("type", "ZeroDivisionError")]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&m, "gunicorn_requests", &[]), Some(3.0));
    assert_eq!(sample(&m, "gunicorn_request_status_404", &[]), Some(1.0));
    assert!(
        sample(&m, "gunicorn_request_duration", &[("quantile", "0.99")]).is_some(),
        "{m}"
    );
    assert_eq!(
        sample(&m, "gunicorn_request_duration_count", &[]),
        Some(3.0)
    );
    p.stop().await;
}

#[tokio::test]
async fn workers_fault_makes_counters_saw_tooth() {
    let p = start_polls(&["workers=4"], 1).await;
    // 61 requests cannot split evenly over 4 workers, so the round-robin
    // scrapes must see a drop somewhere.
    for _ in 0..61 {
        get(&format!("{}/polls/4xx_not_found/", p.url)).await;
    }
    let mut values = Vec::new();
    for _ in 0..8 {
        let m = p.metrics().await;
        values.push(
            sample(
                &m,
                "django_http_responses_total_by_status_view_method_total",
                &[("status", "404")],
            )
            .unwrap_or(0.0),
        );
    }
    assert!(
        values.windows(2).any(|w| w[1] < w[0]),
        "successive scrapes never went down: {values:?}"
    );
    assert!(
        values.iter().all(|v| *v < 61.0),
        "no single worker saw every request: {values:?}"
    );
    let m = p.metrics().await;
    assert_eq!(
        sample(&m, "gunicorn_requests", &[]),
        Some(61.0),
        "statsd_exporter sums every worker"
    );
    p.stop().await;
}

#[tokio::test]
async fn uncounted_errors_fault_drops_5xx() {
    let p = start_polls(&["uncounted-errors"], 1).await;
    for path in ["2xx_success", "5xx_exception", "5xx_exception"] {
        get(&format!("{}/polls/{path}/", p.url)).await;
    }
    let m = p.metrics().await;
    let resp = "django_http_responses_total_by_status_view_method_total";
    assert_eq!(sample(&m, resp, &[("status", "200")]), Some(1.0));
    assert_eq!(sample(&m, resp, &[("status", "500")]), None, "{m}");
    // gunicorn's statsd metrics see every response the app sent.
    assert_eq!(sample(&m, "gunicorn_requests", &[]), Some(3.0));
    assert_eq!(sample(&m, "gunicorn_request_status_500", &[]), Some(2.0));
    p.stop().await;
}

#[tokio::test]
async fn unmeasured_delay_fault_hides_queueing() {
    let p = start_polls(&["unmeasured-delay=200ms"], 1).await;
    let start = Instant::now();
    assert_eq!(get(&format!("{}/polls/4xx_not_found/", p.url)).await.0, 404);
    let client = start.elapsed().as_secs_f64();
    assert!(client >= 0.2, "the request was held {client} s");
    let m = p.metrics().await;
    let sum = sample(
        &m,
        "django_http_requests_latency_seconds_by_view_method_sum",
        &[("view", "polls:4xx_not_found")],
    )
    .unwrap();
    // The server's timer runs inside the client's: without the delay it
    // leaves at least the 200 ms of it over, however slow the machine;
    // with it, the server's time would be at least the client's.
    assert!(
        sum <= client - 0.2,
        "server-side time must not include the delay: {sum} s of {client} s"
    );
    p.stop().await;
}

#[tokio::test]
async fn ms_as_seconds_fault_inflates_latency_1000x() {
    let p = start_polls(&["ms-as-seconds"], 30).await;
    get(&format!("{}/polls/2xx_success/", p.url)).await;
    let m = p.metrics().await;
    let sum = sample(
        &m,
        "django_http_requests_latency_seconds_by_view_method_sum",
        &[("view", "polls:2xx_success")],
    )
    .unwrap();
    assert!(
        sum > 10.0,
        "30 ms observed as milliseconds reads as ~30 s: {sum}"
    );
    p.stop().await;
}

#[tokio::test]
async fn reset_every_fault_restarts_counters() {
    let p = start_polls(&["reset-every=400ms"], 1).await;
    let polls = &p;
    fn gets(m: &str) -> Option<f64> {
        let by_method = "django_http_requests_total_by_method_total";
        sample(m, by_method, &[("method", "GET")])
    }
    // Five requests and a scrape in one registry's lifetime: each attempt
    // starts in a registry without the series (a fresh one, or one that
    // was just recreated), so all five are counted unless a reset lands
    // among them, which sends the test on to the next registry.
    let mut sent = 0.0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "never five requests in one registry"
        );
        wait_until("a fresh registry", Duration::from_secs(10), || async move {
            gets(&polls.metrics().await).is_none()
        })
        .await;
        for _ in 0..5 {
            get(&format!("{}/polls/4xx_not_found/", p.url)).await;
        }
        sent += 5.0;
        let before = gets(&p.metrics().await);
        assert!(before.is_none_or(|n| n <= 5.0), "{before:?}");
        if before == Some(5.0) {
            break;
        }
    }
    // No more requests: only a recreated registry loses the series.
    wait_until(
        "the registry to be recreated",
        Duration::from_secs(10),
        || async move { gets(&polls.metrics().await).is_none() },
    )
    .await;
    let m = p.metrics().await;
    assert_eq!(
        sample(&m, "gunicorn_requests", &[]),
        Some(sent),
        "statsd_exporter is another process"
    );
    p.stop().await;
}

#[tokio::test]
async fn frozen_metrics_fault_stops_updates() {
    let p = start_polls(&["frozen-metrics=200ms"], 1).await;
    let resp = "django_http_responses_total_by_status_view_method_total";
    get(&format!("{}/polls/4xx_not_found/", p.url)).await;
    // The freeze comes 200 ms after that first request. Probes on another
    // view show when: the first scrape that misses one is frozen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut probes = 0.0;
    let frozen = loop {
        assert!(Instant::now() < deadline, "the metrics never froze");
        get(&format!("{}/polls/2xx_success/", p.url)).await;
        probes += 1.0;
        let m = p.metrics().await;
        if sample(&m, resp, &[("view", "polls:2xx_success")]).unwrap_or(0.0) < probes {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        sample(&frozen, resp, &[("view", "polls:4xx_not_found")]),
        Some(1.0),
        "{frozen}"
    );
    for _ in 0..3 {
        get(&format!("{}/polls/4xx_not_found/", p.url)).await;
    }
    let m = p.metrics().await;
    assert_eq!(m, frozen, "the frozen page changed");
    p.stop().await;
}

#[tokio::test]
async fn bank_accounts_transactions_and_fastapi_metrics() {
    let dir = std::env::temp_dir().join(format!("redproof-bank-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("bank.sqlite");
    let client = reqwest::Client::new();
    let (l, addr) = listener().await;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(bank::serve(
        l,
        BankOptions {
            database: Some(db.clone()),
            faults: Faults::default(),
        },
        shutdown.clone(),
    ));
    let base = format!("http://{addr}");

    let r = client
        .post(format!("{base}/accounts"))
        .body(r#"{"owner":"alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let acct: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    let id = acct["id"].as_i64().unwrap();
    let tx = |body: &'static str| {
        client
            .post(format!("{base}/accounts/{id}/transactions"))
            .body(body)
            .send()
    };
    assert_eq!(
        tx(r#"{"kind":"credit","amount":1000}"#)
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    assert_eq!(
        tx(r#"{"kind":"debit","amount":300}"#)
            .await
            .unwrap()
            .status()
            .as_u16(),
        201
    );
    let over = tx(r#"{"kind":"debit","amount":5000}"#).await.unwrap();
    assert_eq!(over.status().as_u16(), 422);
    let detail: serde_json::Value = serde_json::from_str(&over.text().await.unwrap()).unwrap();
    assert_eq!(detail["detail"][0]["type"], "insufficient_funds");
    assert_eq!(
        tx(r#"{"kind":"gift","amount":-1}"#)
            .await
            .unwrap()
            .status()
            .as_u16(),
        422
    );
    assert_eq!(
        client
            .post(format!("{base}/accounts"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        422
    );
    let (status, body) = get(&format!("{base}/accounts/{id}/balance")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["balance"],
        700
    );
    assert_eq!(get(&format!("{base}/accounts/999999")).await.0, 404);
    let (status, body) = get(&format!("{base}/accounts/abc")).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("int_parsing"), "{body}");
    let (_, txs) = get(&format!("{base}/accounts/{id}/transactions")).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&txs)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let (_, m) = get(&format!("{base}/metrics")).await;
    let h = "/accounts/{account_id}/transactions";
    assert_eq!(
        sample(
            &m,
            "http_requests_total",
            &[("handler", h), ("method", "POST"), ("status", "2xx")]
        ),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "http_requests_total",
            &[("handler", h), ("method", "POST"), ("status", "4xx")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "http_requests_total",
            &[("handler", "/accounts/{account_id}"), ("status", "4xx")] // 404 and the 422 for `abc`
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "http_request_duration_seconds_bucket",
            &[("handler", h), ("method", "POST"), ("le", "+Inf")]
        ),
        Some(4.0)
    );
    assert!(
        m.contains("le=\"0.1\"") && m.contains("le=\"0.5\"") && m.contains("le=\"1.0\""),
        "{m}"
    );

    shutdown.cancel();
    handle.await.unwrap().unwrap();
    // The database survives a restart.
    let (l, addr) = listener().await;
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(bank::serve(
        l,
        BankOptions {
            database: Some(db),
            faults: Faults::default(),
        },
        shutdown.clone(),
    ));
    let (status, body) = get(&format!("http://{addr}/accounts/{id}/balance")).await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap()["balance"].clone()
        ),
        (200, serde_json::json!(700))
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
