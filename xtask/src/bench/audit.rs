//! The API requests of Plexus's service account, from the API server's audit log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use plexus_tests::cluster::{LocalCluster, SA_USER};
use serde_json::Value;

use super::report::Figure;

/// How long the audit log must stay unchanged before its events are counted.
const AUDIT_SETTLE: Duration = Duration::from_millis(500);

/// A wall-clock interval, in µs since the epoch, to find the API requests made within it.
pub(super) type Window = (i64, i64);

/// Plexus's service account's requests in the audit log, once it has stopped growing: when
/// each was received (µs since the epoch) and what it was (`verb resource`).
pub(super) fn settled_sa_requests(cluster: &LocalCluster) -> Vec<(i64, String)> {
    settled(|| sa_requests(cluster, false))
}

/// [`settled_sa_requests`] with the program that made each request before its kind
/// (`plexus-ipam get ipamblocks`), from the user agent (`plexus-ipam/0.1.0`).
pub(super) fn settled_sa_requests_by_agent(cluster: &LocalCluster) -> Vec<(i64, String)> {
    settled(|| sa_requests(cluster, true))
}

/// The requests of `plexus` (Plexus's service account) and of `plexusd` (its user agent,
/// whatever its user) but watches, once the audit log has stopped growing, as
/// [`settled_sa_requests_by_agent`] gives them.
pub(super) fn settled_plexus_and_agent_requests(cluster: &LocalCluster) -> Vec<(i64, String)> {
    settled(|| {
        cluster
            .audit_events()
            .iter()
            .filter(|e| {
                e["user"]["username"] == SA_USER
                    || e["userAgent"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("plexusd/"))
            })
            .filter(|e| e["verb"] != "watch")
            .filter_map(|e| {
                let received = parse_micro_time(e["requestReceivedTimestamp"].as_str()?)?;
                let agent = e["userAgent"].as_str().unwrap_or("?");
                let program = agent.split('/').next().unwrap_or(agent);
                Some((received, format!("{program} {}", request_kind(e))))
            })
            .collect()
    })
}

/// `read()` once the audit log has stopped growing.
fn settled(read: impl Fn() -> Vec<(i64, String)>) -> Vec<(i64, String)> {
    // The API server writes an event just after it answers, so the last ones may still come.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut requests = read();
    loop {
        std::thread::sleep(AUDIT_SETTLE);
        let now = read();
        if now.len() == requests.len() || Instant::now() > deadline {
            return now;
        }
        requests = now;
    }
}

/// Plexus's service account's requests in the audit log so far; `by_agent` puts the program
/// that made each before its kind.
fn sa_requests(cluster: &LocalCluster, by_agent: bool) -> Vec<(i64, String)> {
    cluster
        .audit_events()
        .iter()
        .filter(|event| event["user"]["username"] == SA_USER)
        .filter_map(|event| {
            let received = parse_micro_time(event["requestReceivedTimestamp"].as_str()?)?;
            let kind = request_kind(event);
            if !by_agent {
                return Some((received, kind));
            }
            let agent = event["userAgent"].as_str().unwrap_or("?");
            let program = agent.split('/').next().unwrap_or(agent);
            Some((received, format!("{program} {kind}")))
        })
        .collect()
}

/// What a request was, from its audit event: `verb resource[/subresource]`, or `verb URI` for a
/// request of no object.
fn request_kind(event: &Value) -> String {
    let verb = event["verb"].as_str().unwrap_or("?");
    let object = &event["objectRef"];
    match object["resource"].as_str() {
        Some(resource) => match object["subresource"].as_str() {
            Some(sub) => format!("{verb} {resource}/{sub}"),
            None => format!("{verb} {resource}"),
        },
        None => format!("{verb} {}", event["requestURI"].as_str().unwrap_or("?")),
    }
}

/// The requests received within `window`, counted by kind.
pub(super) fn requests_in(
    requests: &[(i64, String)],
    (start, end): Window,
) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for (_, kind) in requests.iter().filter(|(at, _)| (start..=end).contains(at)) {
        *counts.entry(kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// Microseconds since the epoch.
pub(super) fn epoch_micros(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Microseconds since the epoch of a Kubernetes `MicroTime` (`2006-01-02T15:04:05.000000Z`, in
/// UTC, as audit events give them).
fn parse_micro_time(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let numbers = |text: &str, sep: char| -> Option<Vec<i64>> {
        let parts: Option<Vec<i64>> = text.split(sep).map(|p| p.parse().ok()).collect();
        parts.filter(|p| p.len() == 3)
    };
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let (ymd, hms) = (numbers(date, '-')?, numbers(clock, ':')?);
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}")[..6].parse().ok()?;
    let seconds =
        days_from_civil(ymd[0], ymd[1], ymd[2]) * 86_400 + hms[0] * 3_600 + hms[1] * 60 + hms[2];
    Some(seconds * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// One figure per request kind: key `{prefix}_{kind}` (the kind's spaces and punctuation as
/// `_`), label `    {kind}` (indented under its total), value `count / per`.
pub(super) fn request_kind_figures(
    prefix: &str,
    by_kind: BTreeMap<String, u32>,
    per: f64,
) -> Vec<Figure> {
    by_kind
        .into_iter()
        .map(|(kind, count)| {
            Figure::value(
                format!("{prefix}_{}", kind.replace([' ', '/', '-', '.'], "_")),
                format!("    {kind}"),
                "req",
                f64::from(count) / per,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn micro_times_are_read_as_utc() {
        assert_eq!(parse_micro_time("1970-01-01T00:00:00.000001Z"), Some(1));
        assert_eq!(
            parse_micro_time("2025-01-01T00:00:00Z"),
            Some(1_735_689_600_000_000)
        );
        assert_eq!(
            parse_micro_time("2024-02-29T23:59:59.5Z"),
            Some(1_709_251_199_500_000)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(parse_micro_time("2025-01-01 00:00:00Z"), None);
        assert_eq!(parse_micro_time("2025-01-01T00:00:00"), None);
    }

    #[test]
    fn requests_are_counted_by_kind_within_a_window() {
        let event = json!({"verb": "patch", "objectRef": {"resource": "pods", "name": "web"}});
        assert_eq!(request_kind(&event), "patch pods");
        let event = json!({"verb": "get", "requestURI": "/api"});
        assert_eq!(request_kind(&event), "get /api");
        let requests = [
            (5, "get pods".to_string()),
            (10, "get pods".to_string()),
            (12, "patch pods".to_string()),
            (21, "get pods".to_string()),
        ];
        let counts = requests_in(&requests, (10, 20));
        assert_eq!(
            counts.into_iter().collect::<Vec<_>>(),
            [("get pods".to_string(), 1), ("patch pods".to_string(), 1)]
        );
    }
}
