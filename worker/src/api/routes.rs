//! The API's routes as one table: each operation of [`Request`] (named by its `op` tag) at one
//! method and path. Both directions come from it: the server makes a matched route, its path
//! parameters, query and JSON body into a `Request` ([`request_of`]); the client makes a
//! `Request` into that method, path and body ([`call_of`]).
//!
//! Adding an operation is a variant of `Request` and one line of [`ROUTES`]. A field added to a
//! variant needs nothing here: a field named in the path (`{name}`) travels there, as a string;
//! the others in the JSON body of a POST, or in the query of a GET or DELETE. A query value is
//! JSON when it parses as JSON (`tail=200`, `flag=true`) and a plain string otherwise
//! (`tier=hot`); the client quotes a string that would parse (`"123"`), so every value makes the
//! round trip.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::protocol::Request;

/// The methods the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verb {
    Get,
    Post,
    Delete,
}

/// One operation at one method and path; `{field}` in the path is that field of the request.
#[derive(Debug)]
pub(crate) struct Route {
    pub verb: Verb,
    pub path: &'static str,
    /// The `op` tag of the [`Request`] variant it carries.
    pub op: &'static str,
}

const fn route(verb: Verb, path: &'static str, op: &'static str) -> Route {
    Route { verb, path, op }
}

use Verb::{Delete, Get, Post};

/// Every operation of the API (`GET /metrics` is not one: it is served beside them).
pub(crate) const ROUTES: &[Route] = &[
    route(Get, "/v1/ping", "ping"),
    route(Get, "/v1/tenants", "ls"),
    route(Post, "/v1/tenants", "add"),
    route(Get, "/v1/tenants/{name}", "status"),
    route(Delete, "/v1/tenants/{name}", "rm"),
    route(Post, "/v1/tenants/{name}/adopt", "adopt"),
    route(Get, "/v1/checkpoints/{checkpoint}/held", "held"),
    route(Post, "/v1/tenants/{name}/release", "release"),
    route(Get, "/v1/cpu", "cpu-record"),
    route(Post, "/v1/cpu/check", "cpu-check"),
    route(Post, "/v1/tenants/{name}/swap-out", "swap-out"),
    route(Post, "/v1/tenants/{name}/swap-in", "swap-in"),
    route(Get, "/v1/tenants/{name}/activeset", "active-set"),
    route(Get, "/v1/tenants/{name}/logs", "logs"),
    route(Post, "/v1/store/evict", "evict"),
    route(Get, "/v1/store/stats", "store-stats"),
    route(Get, "/v1/store/counters", "counters"),
];

/// A request as HTTP carries it.
#[derive(Debug, PartialEq)]
pub(crate) struct HttpCall {
    pub verb: Verb,
    /// The path with its parameters filled in and percent-encoded, and the query if any.
    pub path_and_query: String,
    /// The JSON body of a POST.
    pub body: Option<Vec<u8>>,
}

/// `request` as its route carries it.
pub(crate) fn call_of(request: &Request) -> Result<HttpCall> {
    // An internally tagged enum serializes as an object holding its tag.
    let mut fields = match serde_json::to_value(request).map_err(Error::RequestUnencodable)? {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    let op = match fields.remove("op") {
        Some(Value::String(op)) => op,
        _ => format!("{request:?}"),
    };
    let route = ROUTES
        .iter()
        .find(|r| r.op == op)
        .ok_or_else(|| Error::NoRoute { op: op.clone() })?;
    let mut path = String::new();
    for segment in route.path.split('/').skip(1) {
        path.push('/');
        match parameter(segment) {
            Some(field) => {
                let value = fields
                    .remove(field)
                    .ok_or_else(|| Error::NoRoute { op: op.clone() })?;
                path.push_str(&percent_encode(&path_text(&value)));
            }
            None => path.push_str(segment),
        }
    }
    fields.retain(|_, value| !value.is_null());
    let body = match route.verb {
        Verb::Post => Some(serde_json::to_vec(&fields).map_err(Error::RequestUnencodable)?),
        Verb::Get | Verb::Delete => {
            for (i, (field, value)) in fields.iter().enumerate() {
                path.push(if i == 0 { '?' } else { '&' });
                path.push_str(&percent_encode(field));
                path.push('=');
                path.push_str(&percent_encode(&query_text(value)));
            }
            None
        }
    };
    Ok(HttpCall {
        verb: route.verb,
        path_and_query: path,
        body,
    })
}

/// The request `route` carries, from its path parameters, query pairs (both decoded) and body
/// (empty, or a JSON object); on bad input, why.
pub(crate) fn request_of(
    route: &Route,
    path: Vec<(String, String)>,
    query: Vec<(String, String)>,
    body: &[u8],
) -> Result<Request, String> {
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => return Err("the body must be a JSON object".into()),
            Err(e) => return Err(format!("the body is not JSON: {e}")),
        }
    };
    for (field, raw) in query {
        fields.insert(field, query_value(&raw));
    }
    for (field, value) in path {
        fields.insert(field, Value::String(value));
    }
    fields.insert("op".into(), Value::String(route.op.into()));
    serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
}

/// The field a path segment stands for (`{name}`), if it is a parameter.
fn parameter(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// A value as a path parameter carries it: a string as itself (the server takes every path
/// parameter as a string).
fn path_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as the query carries it: a string as itself unless it would
/// parse as JSON, anything else as JSON.
fn query_text(value: &Value) -> String {
    match value {
        Value::String(s) if serde_json::from_str::<Value>(s).is_err() => s.clone(),
        other => other.to_string(),
    }
}

/// The inverse of [`query_text`].
fn query_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// `text` with every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::ActiveSetInstall;

    /// One request of every operation. Adding a variant to [`Request`] fails to compile here
    /// until it is listed (and so routed: see `every_operation_has_one_route`).
    pub(crate) fn one_of_each() -> Vec<Request> {
        let name = || "t-1".to_string();
        let all = vec![
            Request::Ping,
            Request::Ls,
            Request::Add(crate::tenant::TenantSpec {
                name: name(),
                port: 8080,
                cmd: vec!["python3".into(), "a b.py".into(), "123".into()],
                deterministic: true,
                idle_timeout_ms: Some(3_000),
                env: Default::default(),
                workdir: None,
                sandbox: true,
                read_only: vec!["/srv/app".into()],
                user_namespace: true,
                limits: crate::cgroup::Limits {
                    memory_limit: Some(256 << 20),
                    cpu_weight: Some(50),
                },
                disk_quota: Some(100 << 20),
                proxy_protocol: true,
                client_address: crate::tenant::ClientAddress::Loopback,
                checkpoint_every_ms: Some(300_000),
            }),
            Request::Status { name: name() },
            Request::Rm { name: name() },
            Request::Adopt {
                name: name(),
                checkpoint: "web-00000001-abc".into(),
                peer: Some(crate::protocol::PeerRef {
                    name: "w1".into(),
                    api: "10.0.0.11:7070".parse().unwrap(),
                }),
            },
            Request::Held {
                checkpoint: "73166aad984b54b0".into(),
            },
            Request::Release { name: name() },
            Request::CpuRecord,
            Request::CpuCheck {
                record: "00ff".into(),
            },
            Request::SwapOut { name: name() },
            Request::SwapIn {
                name: name(),
                no_activeset: true,
                install: Some(ActiveSetInstall::Prefetch),
            },
            Request::ActiveSet { name: name() },
            Request::Logs {
                name: name(),
                tail: Some(20),
            },
            Request::Evict {
                tier: Some("hot".into()),
            },
            Request::StoreStats,
            Request::Counters,
        ];
        for request in &all {
            match request {
                Request::Ping
                | Request::Ls
                | Request::Add(_)
                | Request::Status { .. }
                | Request::Rm { .. }
                | Request::Adopt { .. }
                | Request::Held { .. }
                | Request::Release { .. }
                | Request::CpuRecord
                | Request::CpuCheck { .. }
                | Request::SwapOut { .. }
                | Request::SwapIn { .. }
                | Request::ActiveSet { .. }
                | Request::Logs { .. }
                | Request::Evict { .. }
                | Request::StoreStats
                | Request::Counters => {}
            }
        }
        all
    }

    #[test]
    fn every_operation_has_one_route() {
        let all = one_of_each();
        assert_eq!(all.len(), ROUTES.len(), "a route without an operation");
        for request in &all {
            call_of(request).unwrap();
        }
        for (i, a) in ROUTES.iter().enumerate() {
            for b in &ROUTES[i + 1..] {
                assert!(a.op != b.op, "{} routed twice", a.op);
                assert!(
                    (a.verb, a.path) != (b.verb, b.path),
                    "{:?} {} twice",
                    a.verb,
                    a.path
                );
            }
        }
    }

    #[test]
    fn fields_go_to_the_path_the_query_or_the_body() {
        let call = call_of(&Request::Status { name: "123".into() }).unwrap();
        assert_eq!(call.path_and_query, "/v1/tenants/123");
        let call = call_of(&Request::SwapIn {
            name: "a.b".into(),
            no_activeset: false,
            install: None,
        })
        .unwrap();
        assert_eq!(call.verb, Verb::Post);
        assert_eq!(call.path_and_query, "/v1/tenants/a.b/swap-in");
        assert_eq!(call.body.unwrap(), br#"{"no_activeset":false}"#);
        let call = call_of(&Request::Logs {
            name: "x".into(),
            tail: Some(5),
        })
        .unwrap();
        assert_eq!(call.path_and_query, "/v1/tenants/x/logs?tail=5");
        assert_eq!(call.body, None);
        let call = call_of(&Request::Logs {
            name: "x".into(),
            tail: None,
        })
        .unwrap();
        assert_eq!(call.path_and_query, "/v1/tenants/x/logs");
    }

    #[test]
    fn query_values_make_the_round_trip() {
        for value in [
            Value::String("hot".into()),
            Value::String("123".into()),
            Value::String("true".into()),
            Value::String("a b&c=d".into()),
            Value::String("\"quoted\"".into()),
            Value::from(200),
            Value::Bool(false),
        ] {
            assert_eq!(query_value(&query_text(&value)), value);
        }
        assert_eq!(percent_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let add = ROUTES.iter().find(|r| r.op == "add").unwrap();
        let err = request_of(add, vec![], vec![], b"[1]").unwrap_err();
        assert!(err.contains("JSON object"), "{err}");
        let err = request_of(add, vec![], vec![], b"{nope").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = request_of(add, vec![], vec![], br#"{"name":"a"}"#).unwrap_err();
        assert!(err.contains("missing field `port`"), "{err}");
    }

    #[test]
    fn the_path_wins_over_the_body() {
        let swap_out = ROUTES.iter().find(|r| r.op == "swap-out").unwrap();
        let request = request_of(
            swap_out,
            vec![("name".into(), "from-path".into())],
            vec![],
            br#"{"name":"from-body"}"#,
        )
        .unwrap();
        assert_eq!(
            request,
            Request::SwapOut {
                name: "from-path".into()
            }
        );
    }
}
