//! The worker's API: HTTP/1.1 with JSON bodies, on the worker's unix socket (mode 0600: no token)
//! and, with `api_listen`, on TCP, where every request carries a bearer token (`auth`).
//!
//! Each route of the table in `routes` carries one operation of [`Request`], which `dispatch`
//! runs; so the enum stays the one list of what a worker does, and the CLI's [`client`] asks
//! for it through the same table. `GET /metrics` serves Prometheus's text beside them, and
//! `POST /v1/pages` a peer's request for pages (binary, `crate::peer`). Failures
//! are JSON with a status that says their kind (`failure`); bodies are at most 1 MiB.
//!
//! The routes are in docs/api.md.

pub(crate) mod auth;
pub(crate) mod client;
mod failure;
mod listen;
pub(crate) mod routes;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use axum::{Json, Router};
use tracing::debug;

pub(crate) use listen::{api_token, serve, Listeners};

use crate::error::{Error, Result};
use crate::host::Worker;
use crate::protocol::Request;
use failure::Failure;
use routes::{Route, Verb, ROUTES};

/// The largest request body the API reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What the API serves: the worker, or a stand-in in tests.
pub(crate) trait Operations: Send + Sync + 'static {
    /// Carries out one request; its answer as JSON.
    fn run(
        self: &Arc<Self>,
        request: Request,
    ) -> impl Future<Output = Result<serde_json::Value>> + Send;
    /// The Prometheus scrape.
    fn metrics(&self) -> String;
    /// The pages a peer asks for (`POST /v1/pages`, [`pagestore::peer::wire`]) as this
    /// worker's local tier holds them.
    fn local_pages(
        self: &Arc<Self>,
        request: Bytes,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send;
}

impl Operations for Worker {
    fn run(
        self: &Arc<Self>,
        request: Request,
    ) -> impl Future<Output = Result<serde_json::Value>> + Send {
        crate::dispatch::dispatch(self, request)
    }

    fn metrics(&self) -> String {
        crate::metrics::render(self)
    }

    fn local_pages(
        self: &Arc<Self>,
        request: Bytes,
    ) -> impl Future<Output = Result<Vec<u8>>> + Send {
        crate::peer::serve(self.store.clone(), request)
    }
}

/// Every route of the API over `ops`, without authentication (see [`serve`] for TCP's).
pub(crate) fn router<O: Operations>(ops: Arc<O>) -> Router {
    // Routes that share a path share one method router.
    let mut paths: BTreeMap<&str, MethodRouter> = BTreeMap::new();
    for route in ROUTES {
        let ops = ops.clone();
        let handler = move |params: Option<Path<Vec<(String, String)>>>,
                            query: Result<Query<Vec<(String, String)>>, QueryRejection>,
                            body: Result<Bytes, BytesRejection>| {
            answer(ops, route, params, query, body)
        };
        let methods = paths.remove(route.path).unwrap_or_default();
        let methods = match route.verb {
            Verb::Get => methods.get(handler),
            Verb::Post => methods.post(handler),
            Verb::Delete => methods.delete(handler),
        };
        paths.insert(route.path, methods);
    }
    let mut router = Router::new();
    for (path, methods) in paths {
        router = router.route(path, methods);
    }
    let pages = ops.clone();
    router
        .route(
            crate::peer::PAGES_PATH,
            routing::post(move |body: Bytes| async move {
                match pages.local_pages(body).await {
                    Ok(answer) => {
                        ([(CONTENT_TYPE, "application/octet-stream")], answer).into_response()
                    }
                    Err(e) => Failure::from(e).into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            routing::get(move || async move {
                (
                    [(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
                    ops.metrics(),
                )
            }),
        )
        .fallback(|method: Method, uri: Uri| async move {
            Failure::new(StatusCode::NOT_FOUND, format!("no route {method} {uri}"))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            Failure::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{uri} does not take {method}"),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Answers one request of `route`: its `Request` run on a task of its own, so that a client
/// that goes away does not cancel a flow halfway (a swap always finishes).
async fn answer<O: Operations>(
    ops: Arc<O>,
    route: &'static Route,
    params: Option<Path<Vec<(String, String)>>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => return Failure::new(e.status(), e.body_text()).into_response(),
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return Failure::bad_request(e.body_text()).into_response(),
    };
    let params = params.map(|Path(p)| p).unwrap_or_default();
    let request = match routes::request_of(route, params, query, &body) {
        Ok(request) => request,
        Err(why) => return Failure::bad_request(why).into_response(),
    };
    debug!(op = route.op, "request");
    let ran = tokio::spawn(async move { ops.run(request).await }).await;
    match ran {
        Ok(Ok(value)) => Json(value).into_response(),
        Ok(Err(e)) => Failure::from(e).into_response(),
        Err(source) => Failure::from(Error::TaskFailed {
            task: "request",
            source,
        })
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    /// Answers every request with the request itself, and fails for tenant "ghost".
    struct Echo;

    impl Operations for Echo {
        async fn run(self: &Arc<Self>, request: Request) -> Result<serde_json::Value> {
            if let Request::Status { name } = &request {
                if name == "ghost" {
                    return Err(Error::UnknownTenant(name.clone()));
                }
            }
            Ok(serde_json::to_value(&request).unwrap())
        }

        fn metrics(&self) -> String {
            "pico_x 1\n".into()
        }

        async fn local_pages(self: &Arc<Self>, request: Bytes) -> Result<Vec<u8>> {
            Ok(request.to_vec())
        }
    }

    async fn send(
        router: Router,
        method: &str,
        uri: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Vec<u8>) {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body.into())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    fn method_of(verb: Verb) -> &'static str {
        match verb {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Delete => "DELETE",
        }
    }

    #[tokio::test]
    async fn every_request_makes_the_round_trip_through_its_route() {
        let router = router(Arc::new(Echo));
        for request in routes::tests::one_of_each() {
            let call = routes::call_of(&request).unwrap();
            let body = call.body.clone().unwrap_or_default();
            let (status, answer) = send(
                router.clone(),
                method_of(call.verb),
                &call.path_and_query,
                body,
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{call:?}");
            let echoed: Request = serde_json::from_slice(&answer).unwrap();
            assert_eq!(echoed, request, "{call:?}");
        }
    }

    #[tokio::test]
    async fn failures_are_json_with_their_status() {
        let router = router(Arc::new(Echo));
        let error = |body: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            v["error"].as_str().unwrap().to_string()
        };
        let (status, body) = send(router.clone(), "GET", "/v1/tenants/ghost", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            error(&body),
            "no tenant named \"ghost\" (see `pico tenant ls`)"
        );
        let (status, body) = send(router.clone(), "POST", "/v1/tenants", "{}").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error(&body).contains("missing field `name`"),
            "{}",
            error(&body)
        );
        let (status, body) = send(router.clone(), "GET", "/v2/nothing", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(error(&body).contains("/v2/nothing"));
        let (status, body) = send(router.clone(), "PUT", "/v1/tenants", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(error(&body).contains("PUT"));
        let (status, body) = send(router.clone(), "GET", "/v1/tenants/a/logs?tail=x", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{}", error(&body));
    }

    #[tokio::test]
    async fn bodies_over_one_mib_are_refused() {
        let router = router(Arc::new(Echo));
        let big = format!(
            r#"{{"name":"a","port":1,"cmd":["{}"]}}"#,
            "x".repeat(MAX_BODY_BYTES)
        );
        let (status, _) = send(router.clone(), "POST", "/v1/tenants", big).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let fits = r#"{"name":"a","port":1,"cmd":["x"]}"#;
        let (status, _) = send(router, "POST", "/v1/tenants", fits).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let response = router(Arc::new(Echo))
            .oneshot(
                axum::http::Request::get("/metrics")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            crate::metrics::CONTENT_TYPE
        );
    }

    #[tokio::test]
    async fn the_client_reaches_the_server_on_unix_and_tcp() {
        use crate::protocol::Client;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let unix = tokio::net::UnixListener::bind(&socket).unwrap();
        let serving = axum::serve(unix, router(Arc::new(Echo)));
        tokio::spawn(async move { serving.await });
        let request = Request::Logs {
            name: "a".into(),
            tail: Some(3),
        };
        let answer = Client::new(&socket).call(&request).await.unwrap();
        assert_eq!(answer, serde_json::to_value(&request).unwrap());
        let ghost = Request::Status {
            name: "ghost".into(),
        };
        match Client::new(&socket).call(&ghost).await {
            Err(Error::Remote(m)) => {
                assert_eq!(m, Error::UnknownTenant("ghost".into()).to_string())
            }
            other => panic!("{other:?}"),
        }
        let nobody = Client::new(&dir.path().join("none.sock"));
        assert!(matches!(
            nobody.call(&Request::Ping).await,
            Err(Error::WorkerNotRunning { .. })
        ));

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let token = auth::ApiToken::from_text("t0ken");
        let serving = axum::serve(tcp, listen::with_token(router(Arc::new(Echo)), token));
        tokio::spawn(async move { serving.await });
        let answer = Client::tcp(addr, "t0ken").call(&Request::Ls).await.unwrap();
        assert_eq!(answer, serde_json::json!({"op": "ls"}));
        match Client::tcp(addr, "wrong").call(&Request::Ls).await {
            Err(Error::Remote(m)) => assert!(m.contains("Bearer"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn on_tcp_only_the_token_passes() {
        let token = auth::ApiToken::from_text("t0ken");
        let tcp = listen::with_token(router(Arc::new(Echo)), token);
        let get = |auth: Option<&str>| {
            let mut request = axum::http::Request::get("/v1/tenants");
            if let Some(auth) = auth {
                request = request.header("authorization", auth);
            }
            tcp.clone().oneshot(request.body(Body::empty()).unwrap())
        };
        assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
        let wrong = get(Some("Bearer nope")).await.unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let body = axum::body::to_bytes(wrong.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        let right = get(Some("Bearer t0ken")).await.unwrap();
        assert_eq!(right.status(), StatusCode::OK);
    }
}
