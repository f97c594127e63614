//! Values that must never be shown: what a scenario read from the
//! environment with `env("NAME")`, and the credentials of `auth:`.
//!
//! Validation registers each such value once; every output (the terminal
//! report, the results file, JUnit, Markdown, messages on stderr) passes
//! through [`scrub`], which writes `***` in its place. Values shorter than
//! [`MIN_LEN`] characters are not registered: masking `1` or `80` would
//! mask every count and port in the report while hiding nothing.

use std::borrow::Cow;
use std::sync::RwLock;

/// The shortest value worth masking.
pub const MIN_LEN: usize = 4;

static SECRETS: RwLock<Vec<Box<str>>> = RwLock::new(Vec::new());

/// Marks `value` as secret for the rest of the process.
pub fn register(value: &str) {
    if value.chars().count() < MIN_LEN {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| &**s == value) {
        all.push(value.into());
        // Longest first, so a secret that contains another is masked whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() || !all.iter().any(|s| text.contains(&**s)) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for s in all.iter() {
        if out.contains(&**s) {
            out = out.replace(&**s, "***");
        }
    }
    Cow::Owned(out)
}

/// Every string value in a JSON document scrubbed. Keys, numbers and the
/// serialised histograms (fields named `…histogram`, base64 that a short
/// secret could match by chance) are left as they are, so the document
/// keeps its shape and can be read again.
pub fn scrub_json(value: &mut serde_json::Value) {
    use serde_json::Value;
    if SECRETS.read().unwrap_or_else(|e| e.into_inner()).is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            if let Cow::Owned(o) = scrub(s) {
                *s = o;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(scrub_json),
        Value::Object(fields) => {
            for (k, v) in fields.iter_mut() {
                if !k.ends_with("histogram") {
                    scrub_json(v);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked_longest_first() {
        register("tok-4417-abc");
        register("4417");
        register("ab");
        assert_eq!(
            scrub("Bearer tok-4417-abc and 4417 but ab"),
            "Bearer *** and *** but ab"
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        let mut v = serde_json::json!({
            "a": ["x tok-4417-abc"],
            "n": 4417,
            "4417": "4417",
            "histogram": "HISTtok-4417-abc",
        });
        scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "a": ["x ***"],
                "n": 4417,
                "4417": "***",
                "histogram": "HISTtok-4417-abc",
            })
        );
    }
}
