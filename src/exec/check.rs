//! Response checks beyond the status (`expect.json`, `body_contains`,
//! `header`) and captures into user variables, as the scenario compiled
//! them.

use http::{HeaderMap, HeaderName};
use serde_json::Value;

use crate::scenario::{Capture, CaptureSource, JsonQuery, Request};

/// What a step does with a response it expected: the compiled checks and
/// captures of its request.
pub(crate) struct ResponseRules {
    json: Vec<(JsonQuery, Value)>,
    body_contains: Option<String>,
    headers: Vec<(HeaderName, String)>,
    captures: Vec<Capture>,
}

impl std::fmt::Debug for ResponseRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseRules")
            .field(
                "json",
                &self.json.iter().map(|j| &j.0.text).collect::<Vec<_>>(),
            )
            .field("captures", &self.captures.len())
            .finish()
    }
}

/// A JSON value as a variable's text: strings without quotes.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl ResponseRules {
    /// The rules of a request, or `None` when it only checks the status.
    pub fn of(r: &Request) -> Option<Self> {
        r.reads_response().then(|| Self {
            json: r.expect.json.clone(),
            body_contains: r.expect.body_contains.clone(),
            headers: r.expect.headers.clone(),
            captures: r.captures.clone(),
        })
    }

    /// Whether the rules read the body as JSON.
    fn wants_json(&self) -> bool {
        !self.json.is_empty()
            || self
                .captures
                .iter()
                .any(|c| matches!(c.source, CaptureSource::Json(_)))
    }

    /// Applies the rules to an HTTP response; on success the captures are
    /// in `vars`, on failure the message says what did not hold.
    pub fn apply_http(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        vars: &mut Vec<String>,
    ) -> Result<(), String> {
        for (name, want) in &self.headers {
            match headers.get(name).map(|v| v.to_str().unwrap_or("")) {
                Some(got) if got == want => {}
                Some(got) => return Err(format!("header `{name}` is `{got}`, expected `{want}`")),
                None => return Err(format!("header `{name}` is missing, expected `{want}`")),
            }
        }
        if let Some(needle) = &self.body_contains
            && !String::from_utf8_lossy(body).contains(needle.as_str())
        {
            return Err(format!(
                "the body does not contain `{needle}`; it begins `{}`",
                String::from_utf8_lossy(&body[..body.len().min(120)])
            ));
        }
        let json = if self.wants_json() {
            Some(serde_json::from_slice::<Value>(body).map_err(|e| {
                format!(
                    "the body is not JSON ({e}): `{}`",
                    String::from_utf8_lossy(&body[..body.len().min(120)])
                )
            })?)
        } else {
            None
        };
        self.apply(json.as_ref(), Some(headers), vars)
    }

    /// Applies the rules to a gRPC reply written as JSON.
    pub fn apply_json(&self, reply: &Value, vars: &mut Vec<String>) -> Result<(), String> {
        self.apply(Some(reply), None, vars)
    }

    fn apply(
        &self,
        json: Option<&Value>,
        headers: Option<&HeaderMap>,
        vars: &mut Vec<String>,
    ) -> Result<(), String> {
        if let Some(doc) = json {
            for (JsonQuery { text, path }, want) in &self.json {
                let got = path
                    .query(doc)
                    .at_most_one()
                    .map_err(|_| format!("`{text}` matched more than one value"))?;
                match got {
                    Some(got) if got == want => {}
                    Some(got) => return Err(format!("`{text}` is {got}, expected {want}")),
                    None => return Err(format!("`{text}` matched nothing, expected {want}")),
                }
            }
        }
        for Capture { name, slot, source } in &self.captures {
            let value = match source {
                CaptureSource::Json(JsonQuery { text, path }) => {
                    let doc = json.ok_or_else(|| format!("capture `{name}`: no JSON to read"))?;
                    match path.query(doc).at_most_one() {
                        Ok(Some(v)) => as_text(v),
                        Ok(None) => {
                            return Err(format!("capture `{name}`: `{text}` matched nothing"));
                        }
                        Err(_) => {
                            return Err(format!(
                                "capture `{name}`: `{text}` matched more than one value"
                            ));
                        }
                    }
                }
                CaptureSource::Header(h) => match headers.and_then(|hs| hs.get(h)) {
                    Some(v) => v.to_str().unwrap_or("").to_owned(),
                    None => return Err(format!("capture `{name}`: header `{h}` is missing")),
                },
            };
            if vars.len() <= *slot {
                vars.resize(slot + 1, String::new());
            }
            vars[*slot] = value;
        }
        Ok(())
    }
}
