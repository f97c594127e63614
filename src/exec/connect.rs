//! Connections to targets: endpoints resolved from target URLs, TCP and
//! TLS (rustls, ALPN `h2` and `http/1.1`), and the handshake into an
//! HTTP/1.1 or HTTP/2 connection.
//!
//! Each worker owns one connection per target (like wrk), kept in its
//! `Scratch`: no pool, no locks. A connection that fails is dropped and
//! the worker's next request opens a new one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, header};
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::h1::{H1Conn, Io};
use super::{chain, classify, init_tls};
use crate::outcome::TransportError;
use crate::scenario::Target;

/// A worker's open connection to one target.
pub(crate) enum Conn {
    H1(H1Conn),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Whether a request can go out on this connection now.
    pub(super) async fn usable(&mut self) -> bool {
        match self {
            Conn::H1(c) => c.is_usable(),
            Conn::H2(s) => !s.is_closed() && (s.is_ready() || s.ready().await.is_ok()),
        }
    }
}

/// A target resolved for connecting.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) name: String,
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    pub(super) host: String,
    pub(super) port: u16,
    /// Path of the target URL, prepended to every request path.
    pub(super) prefix: String,
    pub(super) tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    pub(super) h2c: bool,
    pub(crate) timeout: Duration,
    pub(super) connect_timeout: Duration,
    /// `user-agent` and the target's headers.
    pub(crate) headers: HeaderMap,
    /// `host` for HTTP/1.1 requests.
    pub(super) host_header: HeaderValue,
}

impl Endpoint {
    pub(crate) fn new(t: &Target) -> Result<Self, String> {
        let uri = t.url.uri();
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("target `{}`: URL `{}` has no host", t.name, t.url))?;
        let https = scheme == Scheme::HTTPS;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let server_name = ServerName::try_from(host.clone()).map_err(|e| {
                format!(
                    "target `{}`: `{host}` is not a valid TLS server name: {e}",
                    t.name
                )
            })?;
            Some((Arc::new(tls_config(t.insecure)?), server_name))
        } else {
            None
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("redproof/", env!("CARGO_PKG_VERSION"))),
        );
        // Credentials in the URL go out as basic auth, the way curl and
        // browsers send them; an `authorization` header of the target (or
        // of a request) replaces it.
        if let Some(auth) = t.url.basic_auth() {
            headers.insert(header::AUTHORIZATION, auth);
        }
        for (k, v) in &t.headers {
            headers.insert(k.clone(), v.clone());
        }
        Ok(Self {
            name: t.name.clone(),
            scheme,
            host,
            port,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            tls,
            h2c: t.http2,
            timeout: t.timeout,
            connect_timeout: t.timeout.min(Duration::from_secs(10)),
            headers,
            host_header: HeaderValue::from_str(authority.as_str())
                .map_err(|e| format!("target `{}`: {e}", t.name))?,
            authority,
        })
    }

    /// Opens a connection: resolve, connect, TLS, HTTP handshake.
    pub(super) async fn connect(&self) -> Result<Conn, (TransportError, String)> {
        let (io, h2) = self.open().await?;
        handshake(io, h2).await
    }

    /// Opens a socket (with TLS for `https`), saying whether HTTP/2 is to
    /// be spoken on it: prior knowledge, or `h2` negotiated through ALPN.
    pub(crate) async fn open(&self) -> Result<(Box<dyn Io>, bool), (TransportError, String)> {
        let addrs: Vec<_> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                (
                    TransportError::Dns,
                    format!("cannot resolve `{}`: {e}", self.host),
                )
            })?
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    stream = Some(s);
                    break;
                }
                Ok(Err(e)) => {
                    last = Some((
                        if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            TransportError::Refused
                        } else {
                            TransportError::Connect
                        },
                        format!("tcp connect to {addr}: {e}"),
                    ))
                }
                Err(_) => {
                    last = Some((
                        TransportError::Connect,
                        format!(
                            "tcp connect to {addr}: no answer within {:?}",
                            self.connect_timeout
                        ),
                    ))
                }
            }
        }
        let stream = stream.ok_or_else(|| {
            last.unwrap_or((
                TransportError::Dns,
                format!("`{}` resolved to no address", self.host),
            ))
        })?;
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => Ok((Box::new(stream), self.h2c)),
            Some((config, name)) => {
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name.clone(), stream)
                    .await
                    .map_err(|e| {
                        (
                            TransportError::Tls,
                            format!("TLS handshake with `{}`: {}", self.host, chain(&e)),
                        )
                    })?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                Ok((Box::new(tls), h2))
            }
        }
    }
}

pub(super) async fn handshake(io: Box<dyn Io>, h2: bool) -> Result<Conn, (TransportError, String)> {
    let io = TokioIo::new(io);
    let fail = |e: hyper::Error| (classify(&e), format!("HTTP handshake: {}", chain(&e)));
    if h2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(fail)?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn::H2(sender))
    } else {
        Ok(Conn::H1(H1Conn::new(io.into_inner())))
    }
}

pub(super) fn tls_config(insecure: bool) -> Result<rustls::ClientConfig, String> {
    init_tls();
    let mut config = if insecure {
        rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                rustls::crypto::ring::default_provider().into(),
            )))
            .with_no_client_auth()
    } else {
        use rustls_platform_verifier::ConfigVerifierExt;
        rustls::ClientConfig::with_platform_verifier()
            .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// `insecure: true`: accepts any certificate (self-signed test servers),
/// still checking that signatures are well formed.
#[derive(Debug)]
pub(super) struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
