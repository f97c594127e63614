//! Prometheus over its HTTP API: `status/buildinfo`, `targets`, and raw
//! samples read with a range selector evaluated at a fixed time through
//! `/api/v1/query`.

use std::time::Duration;

use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION};
use serde_json::Value;

use super::{Fetch, MetricSource, Series, SourceError, TargetStatus};
use crate::exec::Fetcher;
use crate::promql::Selector;
use crate::scenario::BaseUrl;

/// A Prometheus server.
pub struct Prometheus {
    url: String,
    fetcher: Fetcher,
    version: std::sync::Mutex<Option<String>>,
}

impl Prometheus {
    /// `token`, when given, is sent as a bearer token and never printed;
    /// it takes precedence over credentials written in the URL.
    /// Answers longer than `max_response` bytes are errors.
    pub fn new(base: &BaseUrl, token: Option<String>, max_response: usize) -> Result<Self, String> {
        let mut headers = vec![(ACCEPT, HeaderValue::from_static("application/json"))];
        if let Some(t) = token {
            // The message never quotes the token.
            let mut value = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| "the Prometheus token is not a valid HTTP header value".to_owned())?;
            value.set_sensitive(true);
            headers.push((AUTHORIZATION, value));
        }
        Ok(Self {
            url: base.to_string(),
            fetcher: Fetcher::new(base, headers, Duration::from_secs(30))
                .map_err(|e| format!("--prometheus {base}: {e}"))?
                .with_max_body(max_response),
            version: std::sync::Mutex::new(None),
        })
    }

    /// GETs an API path and returns `data` and `warnings`.
    async fn api(&self, path: &str) -> Result<(Value, Vec<String>), SourceError> {
        let (status, body) = self.fetcher.get(path).await.map_err(|e| {
            SourceError::Unavailable(format!("Prometheus at {} is unreachable: {e}", self.url))
        })?;
        let v: Value = serde_json::from_slice(&body).map_err(|_| {
            let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            if status == 401 || status == 403 {
                SourceError::Unavailable(format!(
                    "Prometheus at {} refused the request (HTTP {status}); check metrics.token_env",
                    self.url
                ))
            } else {
                SourceError::Unavailable(format!(
                    "{} answered HTTP {status} without Prometheus' JSON (is it Prometheus?): {snippet}",
                    self.url
                ))
            }
        })?;
        let warnings = v["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if v["status"] != "success" {
            return Err(SourceError::Query(format!(
                "Prometheus: {} ({})",
                v["error"].as_str().unwrap_or("unknown error"),
                v["errorType"]
                    .as_str()
                    .map_or_else(|| format!("HTTP {status}"), str::to_owned)
            )));
        }
        Ok((v["data"].clone(), warnings))
    }

    async fn query(&self, expr: &str, at_ms: i64) -> Result<(Value, Vec<String>), SourceError> {
        let mut q = String::from("/api/v1/query?query=");
        crate::template::push_query_encoded(&mut q, expr);
        q.push_str("&time=");
        q.push_str(&seconds(at_ms));
        self.api(&q).await
    }
}

/// `1700000000.123`
fn seconds(ms: i64) -> String {
    format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
}

fn parse_value(v: &Value) -> Option<(i64, f64)> {
    let pair = v.as_array()?;
    let t = pair.first()?.as_f64()?;
    let x = pair.get(1)?.as_str()?;
    let x = match x {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => x.parse().ok()?,
    };
    Some(((t * 1000.0).round() as i64, x))
}

/// The series of a query result. Anything but Prometheus' documented
/// shape is an error: read as "no series", it would pass for no data.
fn series_of(result: &Value, query: &str) -> Result<Vec<Series>, SourceError> {
    let shape = |what: &str| {
        SourceError::Query(format!(
            "Prometheus answered `{query}` with {what}, not the API's result shape"
        ))
    };
    let items = result
        .as_array()
        .ok_or_else(|| shape("a `result` that is not a list"))?;
    items
        .iter()
        .map(|s| {
            let metric = s["metric"]
                .as_object()
                .ok_or_else(|| shape("a series without a `metric` object"))?;
            let mut labels: crate::promql::Labels = metric
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let name = labels.remove("__name__").unwrap_or_default();
            let samples = match (s.get("values"), s.get("value")) {
                (Some(vs), _) => vs
                    .as_array()
                    .ok_or_else(|| shape("`values` that are not a list"))?
                    .iter()
                    .map(|v| {
                        parse_value(v)
                            .ok_or_else(|| shape("a sample that is not `[time, \"value\"]`"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (None, Some(v)) => vec![
                    parse_value(v)
                        .ok_or_else(|| shape("a sample that is not `[time, \"value\"]`"))?,
                ],
                (None, None) => return Err(shape("a series without samples")),
            };
            Ok(Series {
                name,
                labels,
                samples,
            })
        })
        .collect()
}

fn rfc3339_ms(s: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).ok()?;
    // Go's zero time means "never".
    (t.timestamp() > 0).then(|| t.timestamp_millis())
}

fn go_duration(s: &str) -> Option<Duration> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

impl MetricSource for Prometheus {
    fn describe(&self) -> String {
        match &*self.version.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(v) => format!("Prometheus {v} at {}", self.url),
            None => format!("Prometheus at {}", self.url),
        }
    }

    fn supports_promql(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<String, SourceError> {
        let (data, _) = self.api("/api/v1/status/buildinfo").await?;
        let v = data["version"]
            .as_str()
            .unwrap_or("(unknown version)")
            .to_owned();
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = Some(v.clone());
        Ok(v)
    }

    async fn samples(
        &self,
        selector: &Selector,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Fetch, SourceError> {
        let range = (to_ms - from_ms).max(1);
        let query = format!("{selector}[{range}ms]");
        let (data, warnings) = self.query(&query, to_ms).await?;
        if data["resultType"] != "matrix" {
            return Err(SourceError::Query(format!(
                "Prometheus answered `{query}` with a {} instead of a matrix",
                data["resultType"]
            )));
        }
        let series = series_of(&data["result"], &query)?;
        Ok(Fetch {
            query,
            eval_ms: to_ms,
            series,
            warnings,
        })
    }

    async fn targets(&self) -> Result<Vec<TargetStatus>, SourceError> {
        let (data, _) = self.api("/api/v1/targets?state=active").await?;
        let shape = |what: &str| {
            SourceError::Query(format!(
                "Prometheus answered `/api/v1/targets` with {what}, not the API's shape"
            ))
        };
        let targets = data["activeTargets"]
            .as_array()
            .ok_or_else(|| shape("no `activeTargets` list"))?;
        if targets.iter().any(|t| {
            t["labels"]["instance"].as_str().is_none() || t["scrapeUrl"].as_str().is_none()
        }) {
            return Err(shape("a target without `labels.instance` or `scrapeUrl`"));
        }
        Ok(targets
            .iter()
            .map(|t| TargetStatus {
                job: t["labels"]["job"].as_str().unwrap_or_default().to_owned(),
                instance: t["labels"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                scrape_url: t["scrapeUrl"].as_str().unwrap_or_default().to_owned(),
                health: t["health"].as_str().unwrap_or("unknown").to_owned(),
                last_scrape_ms: t["lastScrape"].as_str().and_then(rfc3339_ms),
                last_error: t["lastError"].as_str().unwrap_or_default().to_owned(),
                interval: t["scrapeInterval"].as_str().and_then(go_duration),
                listed: false,
            })
            .collect())
    }

    async fn instant(&self, expr: &str, at_ms: i64) -> Result<Fetch, SourceError> {
        let (data, warnings) = self.query(expr, at_ms).await?;
        let series = match data["resultType"].as_str() {
            Some("scalar") => vec![Series {
                name: String::new(),
                labels: Default::default(),
                samples: parse_value(&data["result"]).into_iter().collect(),
            }],
            _ => series_of(&data["result"], expr)?,
        };
        Ok(Fetch {
            query: expr.to_owned(),
            eval_ms: at_ms,
            series,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_matrices_and_times() {
        let v: Value = serde_json::from_str(
            r#"[{"metric":{"__name__":"x_total","job":"a"},"values":[[1700000000.5,"3"],[1700000001,"+Inf"]]}]"#,
        )
        .unwrap();
        let s = series_of(&v, "x_total[1s]").unwrap();
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].labels["job"], "a");
        assert_eq!(s[0].samples[0], (1_700_000_000_500, 3.0));
        assert!(s[0].samples[1].1.is_infinite());
        assert_eq!(seconds(1_700_000_000_005), "1700000000.005");
        assert_eq!(
            rfc3339_ms("2023-11-14T22:13:20.25+01:00"),
            Some(1_699_996_400_250)
        );
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert_eq!(go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(go_duration("500ms"), Some(Duration::from_millis(500)));
    }

    #[test]
    fn results_of_another_shape_are_errors_not_empty() {
        for bad in [
            r#""nope""#,
            r#"[{"values":[[1,"1"]]}]"#,
            r#"[{"metric":{},"values":"x"}]"#,
            r#"[{"metric":{},"values":[[1]]}]"#,
            r#"[{"metric":{}}]"#,
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            let e = series_of(&v, "q").unwrap_err();
            assert!(
                e.to_string().contains("not the API's result shape"),
                "{bad}: {e}"
            );
        }
        let empty: Value = serde_json::from_str("[]").unwrap();
        assert!(series_of(&empty, "q").unwrap().is_empty());
    }
}
