//! What the other requests of the run tell about an entry: calls derived
//! from other requests (`derived:`), whose status and latency the client
//! never saw, and a count that is off by exactly another request's
//! traffic, which names that request and the YAML that declares it.

use super::{Checked, thousands};
use crate::scenario::verification::VerifyEntry;
use crate::verify::{ClientRequest, Status};

/// The largest multiple of another request's count tried as the number
/// of calls each of its requests causes.
const MAX_CALLS_PER_REQUEST: u64 = 4;

fn derived_text(client: &ClientRequest) -> String {
    client
        .derived
        .iter()
        .map(|d| {
            format!(
                "{} call{} from {}",
                thousands(d.calls as f64),
                if d.calls == 1 { "" } else { "s" },
                d.from
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why errors per status cannot be compared with derived calls in the
/// series.
pub(super) fn unknown_derived_status(client: &ClientRequest) -> String {
    let failing: Vec<&str> = client
        .derived
        .iter()
        .filter(|d| !d.clean)
        .map(|d| d.from.as_str())
        .collect();
    if failing.is_empty() {
        format!(
            "the status of the {} is not known to the client: it saw the requests that caused them, and only gRPC has a single success code to assume",
            derived_text(client)
        )
    } else {
        format!(
            "the status of the {} is not known to the client: {} got error responses, and which status each call here ended with cannot be told",
            derived_text(client),
            failing.join(", ")
        )
    }
}

/// Why latency is not compared with derived calls in the series.
pub(super) fn untimed_derived(client: &ClientRequest) -> String {
    format!(
        "the client did not time the {} (it timed the requests that caused them), so latency is not compared; the server figures are still reported",
        derived_text(client)
    )
}

/// A request whose traffic, `k` times over, is the count's difference.
struct Match {
    name: String,
    per: u64,
    responses: u64,
}

fn matches(diff: f64, slack: f64, candidates: &[&ClientRequest]) -> Vec<Match> {
    let mut out = Vec::new();
    for c in candidates {
        // A tiny count matches too many differences to mean anything.
        if c.responses < 3 || c.responses as f64 <= 2.0 * slack {
            continue;
        }
        if let Some(per) = (1..=MAX_CALLS_PER_REQUEST)
            .find(|k| (diff - (k * c.responses) as f64).abs() <= slack + 0.5)
        {
            out.push(Match {
                name: c.name.clone(),
                per,
                responses: c.responses,
            });
        }
    }
    out
}

fn times(m: &Match) -> String {
    if m.per == 1 {
        format!("`{}`'s {} responses", m.name, thousands(m.responses as f64))
    } else {
        format!(
            "{} × `{}`'s {} responses",
            m.per,
            m.name,
            thousands(m.responses as f64)
        )
    }
}

/// With the count explained by another request's traffic, the checks
/// that compare the same mixture per status or latency say nothing more.
fn skip_the_rest(r: &mut Checked, why: &str) {
    for v in &mut r.verdicts {
        if matches!(
            v.check.as_str(),
            "errors" | "mean" | "duration" | "quantiles"
        ) && v.status != Status::Skipped
        {
            v.status = Status::Skipped;
            v.summary = why.to_owned();
            v.diagnosis = None;
            v.warnings.clear();
        }
    }
}

/// Replaces the generic diagnosis of a failed count when its difference
/// is exactly the traffic of another request of the run (or a multiple):
/// a surplus from a request the entry does not declare, or a shortfall
/// of a request it declares that never reaches these series. `known`
/// holds the requests the entry covers or derives.
pub(super) fn name_other_requests(
    r: &mut Checked,
    entry: &VerifyEntry,
    known: &[String],
    clients: &[ClientRequest],
) {
    let Some(server) = r.facts.server_count else {
        return;
    };
    let client = r.client.responses as f64;
    let slack = r.slack as f64;
    let Some(v) = r.verdicts.iter_mut().find(|v| v.check == "count") else {
        return;
    };
    // Only the generic causes are replaced: a named one (uncounted 5xx,
    // worker registries) already explains the count.
    let generic = v.status == Status::Fail
        && v.diagnosis.as_deref().is_some_and(|d| {
            d.contains("other traffic matches these series")
                || d.contains("requests lost before instrumentation")
        });
    if !generic {
        return;
    }
    let entry_name = &entry.name;
    if server > client {
        let diff = server - client;
        let others: Vec<&ClientRequest> = clients
            .iter()
            .filter(|c| !known.contains(&c.name))
            .collect();
        let found = matches(diff, slack, &others);
        if found.is_empty() {
            return;
        }
        let members: Vec<&str> = known.iter().map(String::as_str).collect();
        let options: Vec<String> = found
            .iter()
            .map(|m| {
                let derived = format!(
                    "`derived: {{ {}: {} }}` if each `{}` request causes {} call{} here",
                    m.name,
                    m.per,
                    m.name,
                    m.per,
                    if m.per == 1 { "" } else { "s" }
                );
                let how = if m.per == 1 {
                    let mut list = members.clone();
                    list.push(&m.name);
                    format!(
                        "`requests: [{}]` in `verify.{entry_name}` if it is the same route, or {derived}",
                        list.join(", ")
                    )
                } else {
                    format!("{derived}, in `verify.{entry_name}`")
                };
                if found.len() == 1 {
                    how
                } else {
                    format!("for `{}`, {how}", m.name)
                }
            })
            .collect();
        v.diagnosis = Some(format!(
            "server counted {} more than the client sent, exactly {}: {} traffic reaches these series too. Declare it: {}",
            thousands(diff),
            found.iter().map(times).collect::<Vec<_>>().join(", or "),
            if found.len() == 1 {
                "that request's"
            } else {
                "one of these requests'"
            },
            options.join("; ")
        ));
        skip_the_rest(
            r,
            "the series hold another request's traffic too (see count)",
        );
    } else {
        let diff = client - server;
        // Only requests the entry declared besides one of its own can be
        // the missing part.
        if known.len() < 2 {
            return;
        }
        let declared: Vec<ClientRequest> = known
            .iter()
            .filter_map(|n| {
                let c = clients.iter().find(|c| &c.name == n)?;
                let per = entry
                    .derived
                    .iter()
                    .find(|(i, _)| clients.get(*i).is_some_and(|x| &x.name == n))
                    .map_or(1, |(_, per)| *per);
                let mut c = c.clone();
                c.responses *= per;
                Some(c)
            })
            .collect();
        let refs: Vec<&ClientRequest> = declared.iter().collect();
        let found: Vec<Match> = matches(diff, slack, &refs)
            .into_iter()
            .filter(|m| m.per == 1)
            .collect();
        if found.is_empty() {
            return;
        }
        let names: Vec<String> = found.iter().map(|m| format!("`{}`", m.name)).collect();
        v.diagnosis = Some(format!(
            "server counted {} fewer than expected, exactly the {} calls of {}: declared in `verify.{entry_name}` ({}), but that traffic never reaches these series; remove it from the entry, or check that it is routed here",
            thousands(diff),
            thousands(found.iter().map(|m| m.responses).sum::<u64>() as f64),
            names.join(" or "),
            if entry.derived.iter().any(|(i, _)| clients
                .get(*i)
                .is_some_and(|c| found.iter().any(|m| m.name == c.name)))
            {
                "`derived:`"
            } else {
                "`requests:`"
            }
        ));
        skip_the_rest(
            r,
            "the client figures include a request whose traffic does not reach these series (see count)",
        );
    }
}
