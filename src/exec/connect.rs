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
use crate::scenario::{Target, TlsFiles};

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
    /// The largest response body kept for checks and captures.
    pub(crate) max_body: usize,
    /// Users keep a cookie jar for this target.
    pub(super) cookies: bool,
    /// Redirects followed by default.
    pub(super) follow_redirects: u32,
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
            Some((
                Arc::new(tls_config(t.insecure, t.tls.as_ref())?),
                server_name,
            ))
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
            max_body: t.max_body,
            cookies: t.cookies,
            follow_redirects: t.follow_redirects,
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
                        let why = certificate_problem(&e).unwrap_or_else(|| chain(&e));
                        (
                            TransportError::Tls,
                            format!("TLS handshake with `{}`: {why}", self.host),
                        )
                    })?;
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                Ok((Box::new(tls), h2))
            }
        }
    }
}

/// A server certificate the verifier refused, said in words with what to
/// do about it; `None` for any other failure. rustls names the failed
/// check (`UnknownIssuer`, `CaUsedAsEndEntity`) in terms only a TLS
/// implementer reads.
pub(super) fn certificate_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(c) = cur {
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::InvalidCertificate(ce)) = tls {
            return describe_certificate_error(ce);
        }
        cur = c.source();
    }
    None
}

const TRUST_HINT: &str = "trust its CA (the system's store, or SSL_CERT_FILE=ca.pem), \
                          or set `insecure: true` on the target of a test server";

fn describe_certificate_error(ce: &rustls::CertificateError) -> Option<String> {
    use rustls::CertificateError as C;
    let insecure = "or set `insecure: true` on the target of a test server";
    let date = |t: &rustls::pki_types::UnixTime| {
        chrono::DateTime::from_timestamp(t.as_secs() as i64, 0).map_or_else(String::new, |d| {
            format!(" on {}", d.format("%Y-%m-%d %H:%M UTC"))
        })
    };
    Some(match ce {
        C::UnknownIssuer => format!(
            "the server's certificate is not signed by a CA this machine trusts \
             (self-signed, or from a private CA); {TRUST_HINT}"
        ),
        C::BadSignature => format!(
            "the server's certificate chain has a signature that does not verify \
             (a certificate altered, or sent with the wrong issuer); {TRUST_HINT}"
        ),
        C::Expired => format!("the server's certificate has expired; renew it, {insecure}"),
        C::ExpiredContext { not_after, .. } => format!(
            "the server's certificate expired{}; renew it, {insecure}",
            date(not_after)
        ),
        C::NotValidYet => format!(
            "the server's certificate is not valid yet (check this machine's clock), {insecure}"
        ),
        C::NotValidYetContext { not_before, .. } => format!(
            "the server's certificate is only valid from{} (check this machine's clock), \
             {insecure}",
            date(not_before)
        ),
        C::NotValidForName => format!(
            "the server's certificate is not valid for the host name in the URL; \
             use a name the certificate lists, {insecure}"
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } => format!(
            "the server's certificate is not valid for `{}` (it names {}); \
             use a name the certificate lists, {insecure}",
            expected.to_str(),
            if presented.is_empty() {
                "no host".to_owned()
            } else {
                presented.join(", ")
            }
        ),
        C::Revoked => format!("the server's certificate has been revoked by its CA; {insecure}"),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "the server's certificate is not meant for TLS servers (its extended key usage); \
             {insecure}"
        ),
        C::BadEncoding => {
            format!("the server's certificate cannot be parsed; {insecure}")
        }
        C::Other(other) => {
            // webpki's errors that rustls has no variant for come through
            // by name.
            let name = other.to_string();
            if name.contains("CaUsedAsEndEntity") {
                format!(
                    "the server presents a CA certificate (basic constraints CA:TRUE) as its \
                     own, which verifiers refuse; issue it a server certificate signed by that \
                     CA and {TRUST_HINT}"
                )
            } else if name.contains("EndEntityUsedAsCa") {
                format!("the server's chain uses a server certificate as a CA; {TRUST_HINT}")
            } else {
                return None;
            }
        }
        _ => return None,
    })
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

pub(super) fn tls_config(
    insecure: bool,
    files: Option<&TlsFiles>,
) -> Result<rustls::ClientConfig, String> {
    init_tls();
    let builder = rustls::ClientConfig::builder();
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                rustls::crypto::ring::default_provider().into(),
            )))
    } else if let Some(ca) = files.map(|f| &f.ca).filter(|ca| !ca.is_empty()) {
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca {
            roots
                .add(cert.clone())
                .map_err(|e| format!("`tls.ca`: a certificate cannot be trusted: {e}"))?;
        }
        builder.with_root_certificates(roots)
    } else {
        use rustls_platform_verifier::BuilderVerifierExt;
        builder
            .with_platform_verifier()
            .map_err(|e| format!("cannot load the system's TLS roots: {e}"))?
    };
    let mut config = match files.and_then(|f| f.client.as_ref()) {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain.clone(), key.clone_key())
            .map_err(|e| format!("`tls.cert` and `tls.key`: {e}"))?,
        None => builder.with_no_client_auth(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError as C;

    /// As the handshake reports it: a rustls error inside an I/O error.
    fn said(ce: C) -> String {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(ce),
        );
        certificate_problem(&io).expect("a certificate problem")
    }

    #[derive(Debug)]
    struct Named(&'static str);
    impl std::fmt::Display for Named {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Named {}

    #[test]
    fn certificate_errors_are_said_in_words_with_a_hint() {
        let unknown = said(C::UnknownIssuer);
        assert!(
            unknown.contains("not signed by a CA this machine trusts"),
            "{unknown}"
        );
        assert!(unknown.contains("`insecure: true`"), "{unknown}");
        assert!(unknown.contains("SSL_CERT_FILE"), "{unknown}");
        assert!(said(C::BadSignature).contains("signature that does not verify"));
        assert!(said(C::Expired).contains("has expired"));
        let expired = said(C::ExpiredContext {
            time: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000)),
            not_after: rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
                1_700_000_000,
            )),
        });
        assert!(
            expired.contains("expired on 2023-11-14 22:13 UTC"),
            "{expired}"
        );
        assert!(said(C::NotValidYet).contains("check this machine's clock"));
        let name = said(C::NotValidForNameContext {
            expected: ServerName::try_from("api.test").unwrap(),
            presented: vec!["DnsName(\"localhost\")".into()],
        });
        assert!(name.contains("not valid for `api.test`"), "{name}");
        assert!(name.contains("localhost"), "{name}");
        assert!(said(C::Revoked).contains("revoked"));
        let ca = said(C::Other(rustls::OtherError(Arc::new(Named(
            "CaUsedAsEndEntity",
        )))));
        assert!(ca.contains("presents a CA certificate"), "{ca}");
        assert!(ca.contains("`insecure: true`"), "{ca}");
    }

    #[test]
    fn other_failures_keep_their_own_message() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(C::Other(rustls::OtherError(Arc::new(Named(
                "SomethingElse",
            ))))),
        );
        assert_eq!(certificate_problem(&io), None);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_problem(&refused), None);
    }
}
