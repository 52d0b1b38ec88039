//! `pgward audit export --format ocsf`: audit records as OCSF events of
//! the Datastore Activity class (6005, category Application Activity), one
//! JSON object a line, for SIEMs. docs/audit.md has the mapping.
//!
//! Statements map to activity Query (4), session starts to Connect (3),
//! session ends to Other (99, "Disconnect"); a refused or failed statement
//! has status Failure with its SQLSTATE as `status_code`. What OCSF has no
//! field for (the decision, rule, rule-set version, command tag, rows)
//! goes in `unmapped`. File headers, checkpoints and reloads are not
//! exported (they are the trail's own bookkeeping).

use serde_json::{json, Value};

/// OCSF Datastore Activity.
const CLASS_UID: u64 = 6005;
/// OCSF Application Activity.
const CATEGORY_UID: u64 = 6;

/// Milliseconds since the epoch of an RFC 3339 UTC time pgward wrote.
fn epoch_ms(time: &str) -> Option<i64> {
    // 2026-12-01T09:10:16.123456Z
    let (date, rest) = time.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let rest = rest.strip_suffix('Z')?;
    let (hms, frac) = rest.split_once('.').unwrap_or((rest, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let micros: i64 = format!("{frac:0<6}").get(..6)?.parse().ok()?;
    // days_from_civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + min * 60 + s) * 1_000_000 + micros) / 1000)
}

fn endpoint(client: Option<&str>) -> Value {
    let Some(addr) = client.and_then(|c| c.parse::<std::net::SocketAddr>().ok()) else {
        return Value::Null;
    };
    json!({ "ip": addr.ip().to_string(), "port": addr.port() })
}

/// The OCSF event for one audit line, or `None` for lines that are not
/// session or statement records.
pub fn to_ocsf(record: &Value) -> Option<Value> {
    let kind = record.get("type")?.as_str()?;
    let (activity_id, activity_name) = match kind {
        "statement" => (4, "Query"),
        "session_start" => (3, "Connect"),
        "session_end" => (99, "Disconnect"),
        _ => return None,
    };
    let s = |k: &str| record.get(k).and_then(Value::as_str);
    let failed = kind == "statement"
        && (s("decision") != Some("allowed")
            || record.get("sqlstate").is_some_and(|v| !v.is_null()));
    let groups: Vec<Value> = record
        .get("groups")
        .and_then(Value::as_array)
        .map(|g| g.iter().map(|n| json!({ "name": n })).collect())
        .unwrap_or_default();
    let mut event = json!({
        "class_uid": CLASS_UID,
        "class_name": "Datastore Activity",
        "category_uid": CATEGORY_UID,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": CLASS_UID * 100 + activity_id,
        "severity_id": 1,
        "status_id": if failed { 2 } else { 1 },
        "status": if failed { "Failure" } else { "Success" },
        "time": epoch_ms(s("time")?)?,
        "metadata": {
            "version": "1.1.0",
            "product": { "name": "pgward", "vendor_name": "pgward" },
            "uid": format!("{}", record.get("seq")?),
            "log_name": "pgward audit",
        },
        "actor": {
            "user": { "name": s("user"), "groups": groups },
            "session": { "uid": record.get("session").map(|v| v.to_string()) },
            "app_name": s("application_name"),
        },
        "src_endpoint": endpoint(s("client")),
        "database": { "name": s("database"), "type": "PostgreSQL", "type_id": 99 },
        "unmapped": {
            "upstream": s("upstream"),
            "role": s("role"),
        },
    });
    if kind == "statement" {
        event["query_info"] = json!({ "query_string": s("statement") });
        event["status_code"] = record.get("sqlstate").cloned().unwrap_or(Value::Null);
        event["message"] = record.get("reason").cloned().unwrap_or(Value::Null);
        for k in [
            "decision",
            "refused_by",
            "rule",
            "held_by",
            "held_ms",
            "approval",
            "tag",
            "rows",
            "bytes_sent",
            "duration_us",
            "tx_status",
            "rules_version",
            "params",
            "message",
            "index",
        ] {
            if let Some(v) = record.get(k) {
                event["unmapped"][k] = v.clone();
            }
        }
    } else if kind == "session_end" {
        event["message"] = record.get("reason").cloned().unwrap_or(Value::Null);
    }
    Some(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_to_epoch_milliseconds() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00.000000Z"), Some(0));
        assert_eq!(
            epoch_ms("2025-12-01T09:10:16.123456Z"),
            Some(1_764_580_216_123)
        );
        assert_eq!(
            epoch_ms("2000-02-29T00:00:00.000000Z"),
            Some(951_782_400_000)
        );
        assert_eq!(epoch_ms("garbage"), None);
    }

    #[test]
    fn a_refused_statement_is_a_failed_query() {
        let r = json!({
            "seq": 9, "type": "statement", "time": "2025-12-01T09:10:16.000000Z",
            "user": "alice", "groups": ["dev"], "client": "127.0.0.1:5000",
            "database": "appdb", "statement": "SELECT pg_sleep(1)",
            "decision": "refused", "rule": "no-sleeping", "sqlstate": "42501",
        });
        let e = to_ocsf(&r).unwrap();
        assert_eq!(e["class_uid"], 6005);
        assert_eq!(e["type_uid"], 600504);
        assert_eq!(e["status_id"], 2);
        assert_eq!(e["status_code"], "42501");
        assert_eq!(e["src_endpoint"]["port"], 5000);
        assert_eq!(e["query_info"]["query_string"], "SELECT pg_sleep(1)");
        assert_eq!(e["unmapped"]["rule"], "no-sleeping");
        assert!(to_ocsf(&json!({"seq": 1, "type": "checkpoint"})).is_none());
    }
}
