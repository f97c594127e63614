//! Live client metrics (`--metrics-listen`): the client's RED figures
//! served in the Prometheus text format while the run goes on, so a
//! dashboard can overlay what the client measured on what the server
//! reports.
//!
//! The engine's control loop renders the page once a second from its
//! cumulative totals ([`Exposition`]); a small HTTP/1.1 server on the
//! main runtime answers every scrape with the latest page. Nothing is
//! done per request.

mod exposition;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use exposition::{BUCKETS_MICROS, CONTENT_TYPE, Exposition, escape_label};

/// The path the page is served at.
pub const PATH: &str = "/metrics";

/// Why `--metrics-listen` cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "`{0}` is not an address to listen on: expected HOST:PORT, such as 127.0.0.1:9464 or 0.0.0.0:9464 (port 0 picks a free one)"
    )]
    Address(String),
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// The page being served, and how many scrapes fetched each version.
#[derive(Debug, Default)]
struct Page {
    body: Bytes,
    /// Bumped on every publish: a scrape after the last publish has seen
    /// the final figures.
    version: u64,
}

/// The running server: publish pages into it; it stops with the runtime.
#[derive(Debug, Clone)]
pub struct LiveServer {
    addr: SocketAddr,
    page: Arc<Mutex<Page>>,
    /// The version of the page each scrape was answered with.
    scraped: watch::Receiver<u64>,
}

impl LiveServer {
    /// Binds `addr` and starts serving an empty page on the current
    /// runtime.
    pub async fn start(addr: &str) -> Result<Self, ListenError> {
        let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
            .await
            .map_err(|_| ListenError::Address(addr.to_owned()))?
            .collect();
        if resolved.is_empty() {
            return Err(ListenError::Address(addr.to_owned()));
        }
        let listener =
            TcpListener::bind(&resolved[..])
                .await
                .map_err(|source| ListenError::Bind {
                    addr: addr.to_owned(),
                    source,
                })?;
        let bound = listener.local_addr().map_err(|source| ListenError::Bind {
            addr: addr.to_owned(),
            source,
        })?;
        let page = Arc::new(Mutex::new(Page::default()));
        let (scrape_tx, scraped) = watch::channel(0);
        tokio::spawn(serve(listener, page.clone(), Arc::new(scrape_tx)));
        Ok(Self {
            addr: bound,
            page,
            scraped,
        })
    }

    /// The address bound (with the port the system picked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves `text` from now on.
    pub fn publish(&self, text: String) {
        let mut page = lock(&self.page);
        page.body = Bytes::from(text);
        page.version += 1;
    }

    /// Waits until the last page published has been scraped once, or for
    /// at most `linger`; false when `linger` passed first.
    pub async fn wait_scraped(&self, linger: Duration) -> bool {
        let version = lock(&self.page).version;
        let mut scraped = self.scraped.clone();
        tokio::time::timeout(linger, scraped.wait_for(|v| *v >= version))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

fn lock(page: &Mutex<Page>) -> std::sync::MutexGuard<'_, Page> {
    page.lock().unwrap_or_else(|p| p.into_inner())
}

/// At most this many scrape connections are served at once; more wait
/// to be accepted.
const MAX_CONNECTIONS: usize = 64;

async fn serve(listener: TcpListener, page: Arc<Mutex<Page>>, scraped: Arc<watch::Sender<u64>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((sock, _)) = listener.accept().await else {
            // Out of file descriptors, most likely: let some close.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (page, scraped) = (page.clone(), scraped.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let answer = answer(&req, &page, &scraped);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(sock), service)
                .await;
            drop(permit);
        });
    }
}

fn answer(
    req: &Request<Incoming>,
    page: &Mutex<Page>,
    scraped: &watch::Sender<u64>,
) -> Response<Full<Bytes>> {
    let reply = |status, content_type, body: Bytes| {
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .expect("a valid response")
    };
    if req.uri().path() != PATH {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"redproof serves its live metrics at /metrics\n"),
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            Bytes::from_static(b"GET /metrics\n"),
        );
    }
    let (body, version) = {
        let p = lock(page);
        (p.body.clone(), p.version)
    };
    scraped.send_if_modified(|v| {
        let newer = version > *v;
        if newer {
            *v = version;
        }
        newer
    });
    reply(StatusCode::OK, CONTENT_TYPE, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, text.split_once("\r\n\r\n").unwrap().1.to_owned())
    }

    #[tokio::test]
    async fn serves_the_last_page_published_and_knows_when_it_was_scraped() {
        let server = LiveServer::start("127.0.0.1:0").await.unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);
        server.publish("a 1\n".into());
        server.publish("a 2\n".into());
        assert!(!server.wait_scraped(Duration::from_millis(10)).await);
        assert_eq!(get(addr, "/metrics").await, (200, "a 2\n".into()));
        assert!(server.wait_scraped(Duration::from_secs(5)).await);
        assert_eq!(get(addr, "/").await.0, 404);
    }

    #[tokio::test]
    async fn a_bad_address_or_a_port_in_use_is_an_error() {
        let e = LiveServer::start("9464").await.unwrap_err();
        assert!(matches!(e, ListenError::Address(_)), "{e}");
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = LiveServer::start(&addr).await.unwrap_err();
        assert!(matches!(e, ListenError::Bind { .. }), "{e}");
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
