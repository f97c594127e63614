//! A user's cookie jar for one target, as a browser keeps it (RFC 6265,
//! host-only): `Set-Cookie` answers are stored, and each later request
//! to the same target carries the cookies whose path matches and that
//! have not expired.
//!
//! A jar belongs to one user and one target, so the `Domain` attribute
//! (which widens a cookie to sibling hosts) has nothing to widen to and is
//! ignored. The jar is a short list: a user holds a handful of cookies,
//! which a linear scan serves faster than any map; an empty jar costs one
//! length check per request, and nothing is allocated until a server sets
//! a cookie.

use std::time::{Duration, Instant, SystemTime};

/// Stores the `set-cookie` headers of a response from `target` in the
/// user's jar for it; `path` is the request's path.
pub fn store_all(jars: &mut Vec<Jar>, target: usize, headers: &http::HeaderMap, path: &str) {
    let mut set = headers.get_all(http::header::SET_COOKIE).iter().peekable();
    if set.peek().is_none() {
        return;
    }
    if jars.len() <= target {
        jars.resize_with(target + 1, Jar::default);
    }
    let now = Instant::now();
    for v in set {
        jars[target].store(v.as_bytes(), path, now);
    }
}

#[derive(Debug, Clone)]
struct Cookie {
    name: Box<str>,
    value: Box<str>,
    /// The path the cookie applies to (and below).
    path: Box<str>,
    expires: Option<Instant>,
    secure: bool,
}

/// The cookies one user holds for one target.
#[derive(Debug, Default, Clone)]
pub struct Jar {
    cookies: Vec<Cookie>,
}

impl Jar {
    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    /// Stores one `Set-Cookie` value received in answer to a request for
    /// `request_path`. Values that are not `name=value` are ignored, as
    /// browsers do.
    pub fn store(&mut self, set_cookie: &[u8], request_path: &str, now: Instant) {
        let Ok(text) = std::str::from_utf8(set_cookie) else {
            return;
        };
        let mut attrs = text.split(';');
        let Some((name, value)) = attrs.next().and_then(|p| p.split_once('=')) else {
            return;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return;
        }
        let mut path = None;
        let mut expires = None;
        let mut max_age: Option<i64> = None;
        let mut secure = false;
        for attr in attrs {
            let (key, val) = attr.split_once('=').unwrap_or((attr, ""));
            let (key, val) = (key.trim(), val.trim());
            if key.eq_ignore_ascii_case("path") && val.starts_with('/') {
                path = Some(val);
            } else if key.eq_ignore_ascii_case("max-age") {
                max_age = val.parse().ok().or(max_age);
            } else if key.eq_ignore_ascii_case("expires") {
                expires = parse_http_date(val).or(expires);
            } else if key.eq_ignore_ascii_case("secure") {
                secure = true;
            }
        }
        // Max-Age wins over Expires (RFC 6265 §5.3 step 3).
        let expires = match max_age {
            Some(s) if s <= 0 => Some(now),
            Some(s) => now.checked_add(Duration::from_secs(s as u64)),
            None => expires.map(
                |at: SystemTime| match at.duration_since(SystemTime::now()) {
                    Ok(left) => now + left,
                    Err(_) => now,
                },
            ),
        };
        let path = path.map_or_else(|| default_path(request_path), str::to_owned);
        self.cookies
            .retain(|c| !(&*c.name == name && *c.path == *path));
        if expires.is_some_and(|e| e <= now) {
            // An expiry in the past deletes the cookie.
            return;
        }
        self.cookies.push(Cookie {
            name: name.into(),
            value: value.into(),
            path: path.into(),
            expires,
            secure,
        });
        // Longer paths first, as they are sent (RFC 6265 §5.4 step 2).
        self.cookies
            .sort_by_key(|c| std::cmp::Reverse(c.path.len()));
    }

    /// Appends `name=value; …` of the cookies for `path` to `out`;
    /// `https` says whether `Secure` ones may go. Expired cookies are
    /// dropped on the way. Returns whether any was written.
    pub fn write_header(
        &mut self,
        out: &mut String,
        path: &str,
        https: bool,
        now: Instant,
    ) -> bool {
        self.cookies.retain(|c| c.expires.is_none_or(|e| e > now));
        let path = path.split('?').next().unwrap_or(path);
        let mut any = false;
        for c in self
            .cookies
            .iter()
            .filter(|c| (https || !c.secure) && path_matches(path, &c.path))
        {
            if any {
                out.push_str("; ");
            }
            out.push_str(&c.name);
            out.push('=');
            out.push_str(&c.value);
            any = true;
        }
        any
    }
}

/// The directory of the request path (RFC 6265 §5.1.4).
fn default_path(request_path: &str) -> String {
    let path = request_path.split('?').next().unwrap_or("/");
    match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => path[..i].to_owned(),
    }
}

/// RFC 6265 §5.1.4: `/a` matches `/a`, `/a/` and `/a/b`, not `/ab`.
fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request.as_bytes().get(cookie.len()) == Some(&b'/')))
}

/// `Wed, 21 Oct 2015 07:28:00 GMT` (and the RFC 2822 forms).
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc2822(s).ok()?;
    let secs = t.timestamp();
    if secs < 0 {
        return Some(SystemTime::UNIX_EPOCH);
    }
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(jar: &mut Jar, path: &str, https: bool, now: Instant) -> String {
        let mut s = String::new();
        jar.write_header(&mut s, path, https, now);
        s
    }

    #[test]
    fn cookies_are_sent_by_path_and_replaced_by_name() {
        let now = Instant::now();
        let mut jar = Jar::default();
        assert!(jar.is_empty());
        jar.store(b"sid=abc; Path=/; HttpOnly", "/login", now);
        jar.store(b"cart=1; Path=/shop", "/login", now);
        jar.store(b"pref=dark", "/account/settings", now);
        jar.store(b"tls=yes; Secure", "/", now);
        jar.store(b"garbage", "/", now);
        assert_eq!(header(&mut jar, "/", false, now), "sid=abc");
        assert_eq!(
            header(&mut jar, "/shop/1?x=1", false, now),
            "cart=1; sid=abc"
        );
        assert_eq!(header(&mut jar, "/shopping", false, now), "sid=abc");
        assert_eq!(
            header(&mut jar, "/account/x", false, now),
            "pref=dark; sid=abc"
        );
        assert_eq!(header(&mut jar, "/", true, now), "sid=abc; tls=yes");
        jar.store(b"sid=def; Path=/", "/", now);
        assert_eq!(header(&mut jar, "/", false, now), "sid=def");
    }

    #[test]
    fn cookies_expire_and_are_deleted() {
        let now = Instant::now();
        let mut jar = Jar::default();
        jar.store(b"a=1; Max-Age=10", "/", now);
        jar.store(b"b=2; Expires=Wed, 21 Oct 2015 07:28:00 GMT", "/", now);
        jar.store(b"c=3; Expires=Wed, 21 Oct 2099 07:28:00 GMT", "/", now);
        assert_eq!(header(&mut jar, "/", false, now), "a=1; c=3");
        let later = now + Duration::from_secs(11);
        assert_eq!(header(&mut jar, "/", false, later), "c=3");
        jar.store(b"c=; Max-Age=0", "/", later);
        assert_eq!(header(&mut jar, "/", false, later), "");
        assert!(jar.is_empty());
    }
}
