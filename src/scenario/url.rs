//! Base URLs of targets and metric sources, checked once: scheme, host, no
//! query or fragment, and credentials in the URL split off to be sent as
//! basic auth and never shown.

use http::{HeaderValue, Uri};

/// A checked base URL: absolute `http://` or `https://`, with a host,
/// without query or fragment, kept without a trailing `/`.
///
/// Credentials in it (`http://user:secret@host`) are taken out of the
/// authority, sent as HTTP basic auth, and never shown: `Display` and
/// [`BaseUrl::redacted`] give `http://user:***@host`.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseUrl {
    /// As written, without the trailing `/`, credentials masked.
    shown: String,
    /// Without userinfo: the authority that goes on the wire.
    uri: Uri,
    userinfo: Option<Userinfo>,
}

/// The userinfo of a URL, percent-decoded (RFC 3986 §3.2.1).
#[derive(Clone, PartialEq)]
struct Userinfo {
    user: Vec<u8>,
    password: Vec<u8>,
}

impl std::fmt::Debug for Userinfo {
    /// Never the credentials: a `Debug` of a scenario may end up in a
    /// panic message or a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Userinfo(***)")
    }
}

impl BaseUrl {
    /// Checks `url`; the error says what was expected and what was wrong,
    /// quoting the URL with its credentials masked.
    pub fn parse(url: &str) -> Result<Self, String> {
        Self::parse_shown(url, url)
    }

    /// [`BaseUrl::parse`] for a URL rendered from `written` (a template
    /// with `env()`): messages and reports show `written`, never what the
    /// environment put in it.
    pub fn parse_shown(url: &str, written: &str) -> Result<Self, String> {
        let shown = redact_url(written);
        let example = "expected an absolute URL such as `http://127.0.0.1:8000`";
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{example}, got `{shown}` ({e})"))?;
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| format!("{example}, got `{shown}` (no scheme)"))?;
        if !matches!(scheme, "http" | "https") {
            return Err(format!(
                "expected an `http://` or `https://` URL, got scheme `{scheme}` in `{shown}`"
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{example}, got `{shown}` (no host)"));
        }
        if uri.query().is_some() || url.contains('#') {
            return Err(format!(
                "a target URL is a base without query or fragment, got `{shown}`"
            ));
        }
        let text = url.trim_end_matches('/');
        let uri = if text.len() == url.len() {
            uri
        } else {
            text.parse()
                .map_err(|e| format!("{example}, got `{shown}` ({e})"))?
        };
        let (uri, userinfo) =
            split_userinfo(uri).map_err(|e| format!("{example}, got `{shown}` ({e})"))?;
        Ok(Self {
            shown: if url == written {
                redact_url(text)
            } else {
                redact_url(written.trim_end_matches('/'))
            },
            uri,
            userinfo,
        })
    }

    /// Stands in for a URL that did not validate, so target indices stay
    /// stable while the rest of the file is checked; a scenario with it
    /// never leaves validation.
    pub(super) fn invalid() -> Self {
        Self {
            shown: String::new(),
            uri: Uri::default(),
            userinfo: None,
        }
    }

    /// The URL as it may be shown: credentials masked.
    pub fn redacted(&self) -> &str {
        &self.shown
    }

    /// The URL without credentials.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// `authorization: Basic …` for credentials written in the URL,
    /// marked sensitive.
    pub fn basic_auth(&self) -> Option<HeaderValue> {
        use base64::Engine as _;
        let u = self.userinfo.as_ref()?;
        let mut pair = u.user.clone();
        pair.push(b':');
        pair.extend_from_slice(&u.password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        Some(value)
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Takes the userinfo out of a URI's authority.
fn split_userinfo(uri: Uri) -> Result<(Uri, Option<Userinfo>), String> {
    let Some((info, host)) = uri.authority().and_then(|a| a.as_str().rsplit_once('@')) else {
        return Ok((uri, None));
    };
    let (user, password) = info.split_once(':').unwrap_or((info, ""));
    let userinfo = Userinfo {
        user: percent_decode(user),
        password: percent_decode(password),
    };
    let authority = host
        .parse()
        .map_err(|e| format!("the host after the credentials: {e}"))?;
    let mut parts = uri.into_parts();
    parts.authority = Some(authority);
    let uri = Uri::from_parts(parts).map_err(|e| e.to_string())?;
    Ok((uri, Some(userinfo)))
}

/// RFC 3986 percent-decoding; a `%` not followed by two hex digits stays
/// as written.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// `url` with the password of its userinfo masked (`user:***@`), or the
/// whole userinfo when it has no password (a lone token is the secret):
/// the only form in which a URL is shown, even in error messages.
pub fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let Some(at) = url[start..end].rfind('@').map(|i| start + i) else {
        return url.to_owned();
    };
    let masked = match url[start..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{}{masked}{}", &url[..start], &url[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_a_url_become_basic_auth_and_are_never_shown() {
        let u = BaseUrl::parse("http://alice:s3cr%40t@127.0.0.1:8000/api/").unwrap();
        assert_eq!(u.redacted(), "http://alice:***@127.0.0.1:8000/api");
        assert_eq!(u.to_string(), u.redacted());
        assert_eq!(u.uri().authority().unwrap().as_str(), "127.0.0.1:8000");
        assert_eq!(u.uri().to_string(), "http://127.0.0.1:8000/api");
        let auth = u.basic_auth().unwrap();
        assert!(auth.is_sensitive());
        // base64("alice:s3cr@t")
        assert_eq!(auth, "Basic YWxpY2U6czNjckB0");
        let debug = format!("{u:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
    }

    #[test]
    fn a_lone_user_is_masked_whole() {
        let u = BaseUrl::parse("https://ghp_token@example.test").unwrap();
        assert_eq!(u.redacted(), "https://***@example.test");
        // base64("ghp_token:")
        assert_eq!(u.basic_auth().unwrap(), "Basic Z2hwX3Rva2VuOg==");
        assert_eq!(BaseUrl::parse("http://h:1").unwrap().basic_auth(), None);
    }

    #[test]
    fn errors_quote_urls_masked() {
        let e = BaseUrl::parse("http://bob:hunter2@host/x?q=1").unwrap_err();
        assert!(e.contains("http://bob:***@host/x?q=1"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(redact_url("http://a:b@c/d@e"), "http://a:***@c/d@e");
        assert_eq!(redact_url("http://c/d@e"), "http://c/d@e");
        assert_eq!(percent_decode("%41%4a%zz%"), b"AJ%zz%");
    }
}
