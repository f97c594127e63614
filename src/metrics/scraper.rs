//! The embedded scraper: reads `/metrics` pages itself, at a fixed
//! interval, and keeps every raw sample in memory.
//!
//! Each sample carries the start time of its scrape (as in Prometheus),
//! and each series gets an `instance` label (`host:port` of its page)
//! unless the page already sets one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Fetch, MetricSource, Series, SourceError, TargetStatus, now_ms, text};
use crate::exec::Fetcher;
use crate::promql::{Labels, Selector};
use crate::scenario::{BaseUrl, redact_url};

struct Page {
    url: String,
    instance: String,
    path: String,
    fetcher: Fetcher,
}

#[derive(Default)]
struct Store {
    series: HashMap<(String, Labels), Vec<(i64, f64)>>,
    status: Vec<TargetStatus>,
    /// Per page: whether its last scrape failed before any HTTP answer.
    unreachable: Vec<bool>,
}

/// A page whose last scrape failed.
#[derive(Debug, Clone, PartialEq)]
pub struct DownPage {
    pub url: String,
    pub error: String,
    /// Nothing answered (connection refused, no response head in time,
    /// TLS); otherwise the page answered with an error status, a body
    /// past the size limit, or text that is not a metrics page.
    pub unreachable: bool,
}

/// Scrapes a fixed set of pages.
pub struct Scraper {
    pages: Vec<Page>,
    interval: Duration,
    /// Name prefixes of the families kept; empty keeps every family.
    keep: Vec<String>,
    store: Mutex<Store>,
}

impl Scraper {
    /// Pages longer than `max_response` bytes count as failed scrapes.
    /// Only families whose names start with one of `keep` are stored
    /// (every family when it is empty).
    pub fn new(
        urls: &[String],
        interval: Duration,
        max_response: usize,
        keep: Vec<String>,
    ) -> Result<Arc<Self>, String> {
        let mut pages = Vec::new();
        for url in urls {
            // Only the masked form is kept for reports: the page's URL may
            // carry credentials, sent as basic auth by the fetcher.
            let shown = redact_url(url);
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("scrape URL `{shown}`: {e}"))?;
            let authority = uri
                .authority()
                .ok_or_else(|| format!("scrape URL `{shown}` has no host"))?;
            let base = format!("{}://{authority}", uri.scheme_str().unwrap_or("http"));
            let base = BaseUrl::parse(&base).map_err(|e| format!("scrape URL `{shown}`: {e}"))?;
            let timeout = interval.max(Duration::from_secs(1)) * 5;
            pages.push(Page {
                url: shown,
                instance: base
                    .uri()
                    .authority()
                    .map_or_else(String::new, |a| a.to_string()),
                path: uri
                    .path_and_query()
                    .map_or("/metrics".to_owned(), |p| p.to_string()),
                fetcher: Fetcher::new(
                    &base,
                    vec![(
                        http::header::ACCEPT,
                        http::HeaderValue::from_static("text/plain;version=0.0.4;q=1,*/*;q=0.1"),
                    )],
                    timeout.min(Duration::from_secs(10)),
                )?
                .with_max_body(max_response),
            });
        }
        let status = pages
            .iter()
            .map(|p| TargetStatus {
                job: String::new(),
                instance: p.instance.clone(),
                scrape_url: p.url.clone(),
                health: "unknown".into(),
                last_scrape_ms: None,
                last_error: String::new(),
                interval: Some(interval),
                listed: true,
            })
            .collect();
        Ok(Arc::new(Self {
            pages,
            interval,
            keep,
            store: Mutex::new(Store {
                series: HashMap::new(),
                unreachable: vec![false; urls.len()],
                status,
            }),
        }))
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Scrapes every page once, concurrently.
    pub async fn scrape_all(&self) {
        let scrapes = self
            .pages
            .iter()
            .enumerate()
            .map(|(i, p)| self.scrape(i, p));
        futures_join_all(scrapes).await;
    }

    async fn scrape(&self, i: usize, page: &Page) {
        let started = now_ms();
        let fetched = page.fetcher.get(&page.path).await;
        let unreachable = fetched.as_ref().is_err_and(|e| !e.answered);
        let body = match fetched {
            Ok((200, body)) => Ok(body),
            Ok((status, _)) => Err(format!("HTTP {status}")),
            Err(e) => Err(e.message),
        };
        // Samples go straight into the store, one line at a time; a page
        // found malformed part-way has its samples taken back out, as
        // Prometheus keeps nothing of a scrape that fails.
        let mut store = self.store();
        let result = body.and_then(|body| {
            let text = String::from_utf8_lossy(&body);
            let keep = |name: &str| {
                self.keep.is_empty() || self.keep.iter().any(|p| name.starts_with(p.as_str()))
            };
            let parsed = text::parse_each(&text, keep, |s| {
                let mut labels = s.labels;
                labels
                    .entry("instance".into())
                    .or_insert_with(|| page.instance.clone());
                // A series written twice on one page keeps both samples:
                // verification tells the duplicate apart.
                store
                    .series
                    .entry((s.name, labels))
                    .or_default()
                    .push((started, s.value));
            });
            parsed.map_err(|e| {
                store.series.retain(|(_, labels), samples| {
                    if labels.get("instance") == Some(&page.instance) {
                        while samples.last().is_some_and(|(t, _)| *t == started) {
                            samples.pop();
                        }
                    }
                    !samples.is_empty()
                });
                format!("unreadable metrics page: {e}")
            })
        });
        store.unreachable[i] = unreachable && result.is_err();
        let st = &mut store.status[i];
        match result {
            Ok(()) => {
                // The start of the last successful scrape: a page that
                // never answered has none.
                st.last_scrape_ms = Some(started);
                st.health = "up".into();
                st.last_error.clear();
            }
            Err(e) => {
                st.health = "down".into();
                st.last_error = e;
            }
        }
    }

    /// The pages whose last scrape failed, in the order given.
    pub fn down(&self) -> Vec<DownPage> {
        let store = self.store();
        store
            .status
            .iter()
            .zip(&store.unreachable)
            .filter(|(st, _)| st.health == "down")
            .map(|(st, &unreachable)| DownPage {
                url: st.scrape_url.clone(),
                error: st.last_error.clone(),
                unreachable,
            })
            .collect()
    }

    /// Scrapes every page at the interval, starting one interval from now,
    /// until `stop`.
    pub fn spawn(self: &Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            // The first tick is one interval away, not now: the caller has
            // just taken the baseline scrape, and a second one started now
            // would finish after the load began while stamped before it,
            // moving early requests into the baseline.
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + me.interval, me.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => me.scrape_all().await,
                }
            }
        })
    }
}

/// Runs futures concurrently on the current task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futs: impl Iterator<Item = F>) {
    let mut set: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

impl MetricSource for Scraper {
    fn describe(&self) -> String {
        format!(
            "embedded scraper ({} page{}, every {:?})",
            self.pages.len(),
            if self.pages.len() == 1 { "" } else { "s" },
            self.interval
        )
    }

    fn supports_promql(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<String, SourceError> {
        Ok("embedded".into())
    }

    async fn samples(
        &self,
        selector: &Selector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Fetch, SourceError> {
        let store = self.store();
        let mut series: Vec<Series> = store
            .series
            .iter()
            .filter(|((name, labels), _)| selector.matches(name, labels))
            .filter_map(|((name, labels), samples)| {
                let samples: Vec<(i64, f64)> = samples
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t > from_ms && *t <= to_ms)
                    .collect();
                (!samples.is_empty()).then(|| Series {
                    name: name.clone(),
                    labels: labels.clone(),
                    samples,
                })
            })
            .collect();
        series.sort_by(|a, b| (&a.name, &a.labels).cmp(&(&b.name, &b.labels)));
        Ok(Fetch {
            query: selector.to_string(),
            eval_ms: to_ms,
            series,
            warnings: Vec::new(),
        })
    }

    async fn targets(&self) -> Result<Vec<TargetStatus>, SourceError> {
        Ok(self.store().status.clone())
    }

    async fn instant(&self, _expr: &str, _at_ms: i64) -> Result<Fetch, SourceError> {
        Err(SourceError::Unsupported(
            "PromQL needs a Prometheus source: give `metrics.prometheus` or --prometheus URL"
                .into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The periodic scrapes start one interval after the baseline: a scrape
    /// started at once would overlap the start of the load.
    #[tokio::test]
    async fn periodic_scrapes_start_one_interval_after_the_baseline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hits_tx, mut hits) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let hits_tx = hits_tx.clone();
                tokio::spawn(async move {
                    let mut b = [0u8; 4096];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 {
                            return;
                        }
                        let _ = hits_tx.send(Instant::now());
                        let body = "x_total 1\n";
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let interval = Duration::from_millis(300);
        let scraper = Scraper::new(
            &[format!("http://{addr}/metrics")],
            interval,
            1 << 20,
            Vec::new(),
        )
        .unwrap();
        scraper.scrape_all().await;
        let baseline = hits.recv().await.unwrap();
        let stop = CancellationToken::new();
        let task = scraper.spawn(stop.clone());
        let next = hits.recv().await.unwrap();
        stop.cancel();
        task.await.unwrap();
        assert!(
            next.duration_since(baseline) >= interval - Duration::from_millis(5),
            "second scrape {:?} after the baseline",
            next.duration_since(baseline)
        );
    }

    /// Serves `pages` in turn, one per scrape, on a loopback port.
    async fn serve_pages(pages: Vec<&'static str>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut pages = pages.into_iter();
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0u8; 4096];
            while let Ok(n) = s.read(&mut b).await {
                let Some(body) = pages.next().filter(|_| n > 0) else {
                    return;
                };
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                s.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        addr
    }

    async fn stored(scraper: &Scraper, metric: &str) -> Vec<f64> {
        let sel = Selector::new(metric, Vec::new());
        let f = scraper.samples(&sel, 0, i64::MAX).await.unwrap();
        f.series
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.1))
            .collect()
    }

    #[tokio::test]
    async fn keeps_only_the_families_verification_reads() {
        let addr = serve_pages(vec!["a_total 1\na_created 7\nother_total 5\n"]).await;
        let scraper = Scraper::new(
            &[format!("http://{addr}/metrics")],
            Duration::from_secs(1),
            1 << 20,
            vec!["a_".into()],
        )
        .unwrap();
        scraper.scrape_all().await;
        assert_eq!(stored(&scraper, "a_total").await, [1.0]);
        assert_eq!(stored(&scraper, "a_created").await, [7.0]);
        assert!(stored(&scraper, "other_total").await.is_empty());
    }

    #[tokio::test]
    async fn a_page_malformed_part_way_keeps_none_of_its_samples() {
        let addr = serve_pages(vec![
            "a_total 1\n",
            "a_total 2\na_total{ 3\n",
            "a_total 4\n",
        ])
        .await;
        let scraper = Scraper::new(
            &[format!("http://{addr}/metrics")],
            Duration::from_secs(1),
            1 << 20,
            Vec::new(),
        )
        .unwrap();
        scraper.scrape_all().await;
        // Scrapes are stamped in milliseconds: the next one must not share
        // the first one's stamp.
        tokio::time::sleep(Duration::from_millis(2)).await;
        scraper.scrape_all().await;
        let status = scraper.targets().await.unwrap();
        assert_eq!(status[0].health, "down");
        assert!(
            status[0].last_error.contains("line 2"),
            "{}",
            status[0].last_error
        );
        assert_eq!(stored(&scraper, "a_total").await, [1.0]);
        tokio::time::sleep(Duration::from_millis(2)).await;
        scraper.scrape_all().await;
        assert_eq!(stored(&scraper, "a_total").await, [1.0, 4.0]);
    }

    /// Preflight reads `down()`: a page that nothing answers is told apart
    /// from one that answers with something that is not a metrics page.
    #[tokio::test]
    async fn down_pages_say_whether_anything_answered() {
        let refused = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let malformed = serve_pages(vec!["a_total{ 1\n"]).await;
        let fine = serve_pages(vec!["a_total 1\n"]).await;
        let urls: Vec<String> = [refused, malformed, fine]
            .iter()
            .map(|a| format!("http://{a}/metrics"))
            .collect();
        let scraper = Scraper::new(&urls, Duration::from_secs(1), 1 << 20, Vec::new()).unwrap();
        scraper.scrape_all().await;
        let down = scraper.down();
        assert_eq!(down.len(), 2, "{down:?}");
        assert_eq!(down[0].url, urls[0]);
        assert!(down[0].unreachable, "{down:?}");
        assert_eq!(down[1].url, urls[1]);
        assert!(!down[1].unreachable, "{down:?}");
        assert!(down[1].error.contains("line 1"), "{down:?}");
    }
}
