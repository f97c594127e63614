//! Response checks beyond the status (`expect.json`, `body_contains`,
//! `header`) and captures into user variables, compiled once per run.

use http::{HeaderMap, HeaderName};
use serde_json::Value;
use serde_json_path::JsonPath;

use crate::scenario::{CaptureSource, Request};

enum Source {
    Json(JsonPath, String),
    Header(HeaderName),
}

/// What a step does with a response it expected.
pub(crate) struct ResponseRules {
    json: Vec<(JsonPath, String, Value)>,
    body_contains: Option<String>,
    headers: Vec<(HeaderName, String)>,
    captures: Vec<(String, usize, Source)>,
}

impl std::fmt::Debug for ResponseRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseRules")
            .field("json", &self.json.iter().map(|j| &j.1).collect::<Vec<_>>())
            .field("captures", &self.captures.len())
            .finish()
    }
}

fn parse_path(p: &str) -> Result<JsonPath, String> {
    JsonPath::parse(p).map_err(|e| format!("`{p}` is not a valid JSON path: {e}"))
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
    pub fn of(r: &Request) -> Result<Option<Self>, String> {
        if !r.reads_response() {
            return Ok(None);
        }
        let json = r
            .expect
            .json
            .iter()
            .map(|(p, v)| Ok((parse_path(&p.value)?, p.value.clone(), v.clone())))
            .collect::<Result<_, String>>()?;
        let headers = r
            .expect
            .headers
            .iter()
            .map(|(k, v)| {
                HeaderName::from_bytes(k.as_bytes())
                    .map(|h| (h, v.clone()))
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, String>>()?;
        let captures = r
            .captures
            .iter()
            .map(|c| {
                let source = match &c.source {
                    CaptureSource::Json(p) => Source::Json(parse_path(&p.value)?, p.value.clone()),
                    CaptureSource::Header(h) => Source::Header(
                        HeaderName::from_bytes(h.as_bytes()).map_err(|e| e.to_string())?,
                    ),
                };
                Ok((c.name.clone(), c.slot, source))
            })
            .collect::<Result<_, String>>()?;
        Ok(Some(Self {
            json,
            body_contains: r.expect.body_contains.clone(),
            headers,
            captures,
        }))
    }

    /// Whether the rules read the body as JSON.
    fn wants_json(&self) -> bool {
        !self.json.is_empty()
            || self
                .captures
                .iter()
                .any(|c| matches!(c.2, Source::Json(..)))
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
            return Err(format!("the body does not contain `{needle}`"));
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
            for (path, text, want) in &self.json {
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
        for (name, slot, source) in &self.captures {
            let value = match source {
                Source::Json(path, text) => {
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
                Source::Header(h) => match headers.and_then(|hs| hs.get(h)) {
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
