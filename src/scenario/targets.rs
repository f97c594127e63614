//! Targets: base URLs, headers, auth, TLS files and the gRPC side
//! (`protos` compiled now, or reflection), checked once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use marked_yaml::Spanned;

use super::calls::{auth_kind, basic_value, check_header_name, env_only};
use super::checker::{Checker, pos};
use super::raw::{self, OrderedMap, Text};
use super::types::*;
use super::units;
use super::url::BaseUrl;

/// The `authorization` header of a target's `auth:`, read once (only
/// `env()` may be used in it), marked sensitive.
fn target_auth(c: &mut Checker, auth: &Spanned<raw::RawAuth>) -> Option<http::HeaderValue> {
    let text = match auth_kind(c, auth)? {
        Ok(basic) => {
            let user = env_only(c, &basic.user, "auth.basic.user");
            let password = env_only(c, &basic.password, "auth.basic.password");
            basic_value(&user?, &password?)
        }
        Err(token) => {
            let token = env_only(c, token, "auth.bearer")?;
            crate::secrets::register(&token);
            format!("Bearer {token}")
        }
    };
    match http::HeaderValue::from_str(&text) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Some(v)
        }
        Err(_) => {
            c.err(
                pos(auth),
                "`auth`: the credentials are not valid in an HTTP header (control characters?)",
            );
            None
        }
    }
}

/// A target's `tls:`: PEM files read now, relative to the scenario.
fn check_tls(c: &mut Checker, tls: &Spanned<raw::RawTls>, t: &raw::RawTarget) -> Option<TlsFiles> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if !t
        .url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("https://")
    {
        c.err(
            pos(tls),
            "`tls` goes with `https://` targets: it sets the CA and client certificate of the TLS connection",
        );
        return None;
    }
    if let (Some(_), Some(i)) = (&tls.ca, &t.insecure)
        && **i
    {
        c.err(
            pos(i),
            "`insecure: true` accepts any certificate, so `tls.ca` would never be used; keep one",
        );
    }
    let base = c.base.clone();
    let certs = |c: &mut Checker, f: &Text, what: &str| -> Option<Vec<CertificateDer<'static>>> {
        let path = base.join(f.as_str());
        match CertificateDer::pem_file_iter(&path).and_then(|it| it.collect::<Result<Vec<_>, _>>())
        {
            Ok(v) if !v.is_empty() => Some(v),
            Ok(_) => {
                c.err(pos(f), format!("`tls.{what}`: `{}` holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)", f.as_str()));
                None
            }
            Err(e) => {
                c.err(pos(f), format!("`tls.{what}`: cannot read certificates from `{}` (relative paths start at the scenario's directory): {e}", f.as_str()));
                None
            }
        }
    };
    let ca = match &tls.ca {
        Some(f) => certs(c, f, "ca")?,
        None => Vec::new(),
    };
    let client = match (&tls.cert, &tls.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => {
            let chain = certs(c, cert, "cert");
            let key = match PrivateKeyDer::from_pem_file(base.join(key.as_str())) {
                Ok(k) => Some(k),
                Err(e) => {
                    c.err(
                        pos(key),
                        format!(
                            "`tls.key`: cannot read a PEM private key from `{}`: {e}",
                            key.as_str()
                        ),
                    );
                    None
                }
            };
            Some((chain?, Arc::new(key?)))
        }
        _ => {
            c.err(
                pos(tls),
                "`tls`: a client certificate needs both `cert:` and `key:`",
            );
            return None;
        }
    };
    if ca.is_empty() && client.is_none() {
        c.err(pos(tls), "`tls`: expected `ca:` (a PEM bundle to trust) and/or `cert:` with `key:` (a client certificate)");
        return None;
    }
    Some(TlsFiles { ca, client })
}

/// The most redirects one request may follow.
pub(super) const MAX_REDIRECTS: u64 = 20;

pub(super) fn check_follow(c: &mut Checker, v: &Option<Text>) -> Option<u32> {
    c.parse_opt(v, "follow_redirects", |t| match units::parse_count(t)? {
        n if n <= MAX_REDIRECTS => Ok(n as u32),
        n => Err(format!(
            "at most {MAX_REDIRECTS} redirects can be followed, got {n}"
        )),
    })
}

pub(super) fn check_targets(
    c: &mut Checker,
    raw: &OrderedMap<raw::RawTarget>,
    base: &Path,
) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    for (name, t) in &raw.0 {
        let grpc = check_grpc_target(c, t, base);
        let url = if t.url.contains("{{") {
            env_only(c, &t.url, "url")
                .and_then(|u| c.parse(&t.url, "url", |written| BaseUrl::parse_shown(&u, written)))
        } else {
            c.parse(&t.url, "url", BaseUrl::parse)
        };
        let timeout = c
            .parse_opt(&t.timeout, "timeout", units::parse_duration)
            .unwrap_or(DEFAULT_TIMEOUT);
        let max_body = c
            .parse_opt(&t.max_body, "max_body", units::parse_bytes)
            .unwrap_or(DEFAULT_MAX_BODY);
        if let (Some(m), Some(_)) = (&t.max_body, &grpc) {
            c.err(
                pos(m),
                "`max_body` goes with HTTP targets; a gRPC target's limit is `max_message`",
            );
        }
        let mut headers = Vec::new();
        for (k, v) in &t.headers.0 {
            let name = check_header_name(c, k);
            let from_env = v.contains("{{");
            let text = if from_env {
                // Target headers are built once into every connection's
                // requests: only `env()`, read now, can go in them.
                match env_only(c, v, &format!("headers`: `{}", k.as_str())) {
                    Some(t) => t,
                    None => continue,
                }
            } else {
                v.to_string()
            };
            let value = http::HeaderValue::from_str(&text).map(|mut h| {
                h.set_sensitive(from_env);
                h
            });
            if value.is_err() {
                c.err(
                    pos(v),
                    format!(
                        "`headers`: the value of `{}` is not a valid HTTP header value",
                        k.as_str()
                    ),
                );
            }
            if let (Some(name), Ok(value)) = (name, value) {
                headers.push((name, value));
            }
        }
        let follow_redirects = check_follow(c, &t.follow_redirects).unwrap_or(0);
        if let (Some(f), Some(_)) = (&t.follow_redirects, &grpc) {
            c.err(
                pos(f),
                "`follow_redirects` goes with HTTP targets; gRPC has no redirects",
            );
        }
        let tls = t.tls.as_ref().and_then(|tls| check_tls(c, tls, t));
        if let (Some(c_), Some(_)) = (&t.cookies, &grpc) {
            c.err(
                pos(c_),
                "`cookies` goes with HTTP targets; gRPC calls carry no cookies",
            );
        }
        if let Some(auth) = &t.auth {
            if let Some((k, _)) = t
                .headers
                .0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
            {
                c.err(
                    pos(k),
                    "`headers`: `authorization` and `auth` both set the authorization header; keep one",
                );
            } else if let Some(value) = target_auth(c, auth) {
                headers.push((http::header::AUTHORIZATION, value));
            }
        }
        if let Some(url) = url {
            out.push(Target {
                name: name.to_string(),
                url,
                headers,
                timeout,
                http2: grpc.is_some() || t.http2.as_ref().is_some_and(|b| **b),
                insecure: t.insecure.as_ref().is_some_and(|b| **b),
                max_body,
                cookies: grpc.is_none() && t.cookies.as_ref().is_none_or(|b| **b),
                follow_redirects,
                tls,
                grpc,
            });
        } else {
            // Keep the index stable for requests that name this target.
            out.push(Target {
                name: name.to_string(),
                url: BaseUrl::invalid(),
                headers,
                timeout,
                http2: false,
                insecure: false,
                max_body,
                cookies: false,
                follow_redirects,
                tls: None,
                grpc,
            });
        }
    }
    out
}

/// The gRPC side of a target: `protos` (compiled now) or `reflection`.
fn check_grpc_target(c: &mut Checker, t: &raw::RawTarget, base: &Path) -> Option<GrpcTarget> {
    let reflection = t.reflection.as_ref().is_some_and(|b| **b);
    let resolve = |p: &Text| base.join(p.as_str());
    let max_message = c
        .parse_opt(&t.max_message, "max_message", units::parse_bytes)
        .unwrap_or(DEFAULT_MAX_MESSAGE);
    if !t.protos.is_empty() && reflection {
        c.err(
            t.reflection.as_ref().and_then(pos),
            "`protos` and `reflection: true` both describe the services; keep one",
        );
        return None;
    }
    if reflection {
        if let Some(first) = t.import_paths.first() {
            c.err(
                pos(first),
                "`import_paths` goes with `protos`, not with `reflection`",
            );
        }
        return Some(GrpcTarget {
            source: ProtoSource::Reflection,
            pool: None,
            max_message,
        });
    }
    if t.protos.is_empty() {
        if let Some(first) = t.import_paths.first() {
            c.err(
                pos(first),
                "`import_paths` goes with `protos`: list the `.proto` files too",
            );
        }
        if let Some(m) = &t.max_message {
            c.err(
                pos(m),
                "`max_message` goes with gRPC targets (`protos` or `reflection: true`)",
            );
        }
        return None;
    }
    let files: Vec<PathBuf> = t.protos.iter().map(resolve).collect();
    let mut import_paths: Vec<PathBuf> = t.import_paths.iter().map(resolve).collect();
    if import_paths.is_empty() {
        // By default imports resolve next to the files themselves.
        for f in &files {
            // A bare file name beside a scenario read from the working
            // directory has an empty parent, which is no directory at all.
            let dir = match f.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
                _ => PathBuf::from("."),
            };
            if !import_paths.contains(&dir) {
                import_paths.push(dir);
            }
        }
    }
    let source = ProtoSource::Protos {
        files,
        import_paths,
    };
    let pool = match super::grpc::compile_protos(&source) {
        Ok(pool) => Some(pool),
        Err((index, message)) => {
            let at = index
                .and_then(|i| t.protos.get(i))
                .or(t.protos.first())
                .and_then(pos);
            c.err(at, format!("`protos`: {message}"));
            None
        }
    };
    Some(GrpcTarget {
        source,
        pool,
        max_message,
    })
}
