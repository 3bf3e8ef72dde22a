//! The hub's HTTP API (bearer token on every request, as a worker's TCP API): workers report to
//! it (`POST /v1/heartbeat`, answered with their lease) and claim a new tenant's name and port
//! (`POST /v1/claims`, 409 with the reason when another tenant holds either); `pico hub ls`
//! reads what it knows (`GET /v1/workers`, `GET /v1/tenants`), `pico tenant move` moves a
//! tenant (`POST /v1/tenants/{name}/move`, `{"to": WORKER}`), `pico --hub URL tenant add`
//! places a new one (`POST /v1/tenants`, a tenant spec) and `pico worker drain` drains a worker
//! (`POST /v1/workers/{name}/drain`, which starts it; `GET` of the same, its progress;
//! `POST /v1/workers/{name}/undrain`).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing;
use axum::{Json, Router};
use worker::hub_wire::{Claim, Heartbeat, Lease};
use worker::protocol::{call_json, require_token, ApiToken, Transport};
use worker::tenant::TenantSpec;

use crate::config::HubConfig;
use crate::error::Result;
use crate::hub::Hub;
use crate::registry::{TenantView, WorkerView};

/// The API's routes over `hub`, each request checked against `token`.
pub fn router(hub: Arc<Hub>, token: ApiToken) -> Router {
    Router::new()
        .route("/v1/heartbeat", routing::post(heartbeat))
        .route("/v1/claims", routing::post(claim))
        .route("/v1/tenants/{name}/move", routing::post(move_tenant))
        .route("/v1/workers", routing::get(workers))
        .route(
            "/v1/workers/{name}/drain",
            routing::post(drain).get(drain_status),
        )
        .route("/v1/workers/{name}/undrain", routing::post(undrain))
        .route("/v1/tenants", routing::get(tenants).post(add_tenant))
        .layer(axum::middleware::from_fn_with_state(token, require_token))
        .with_state(hub)
}

async fn heartbeat(State(hub): State<Arc<Hub>>, Json(beat): Json<Heartbeat>) -> Json<Lease> {
    let release = hub.registry().heartbeat(&beat, Instant::now());
    Json(Lease {
        lease_ms: hub.config.lease_ms,
        release,
    })
}

async fn claim(State(hub): State<Arc<Hub>>, Json(claim): Json<Claim>) -> Response {
    let claimed = hub
        .registry()
        .claim(&claim.worker, &claim.name, claim.port, Instant::now());
    match claimed {
        Ok(()) => Json(serde_json::Value::Null).into_response(),
        Err(why) => refused(StatusCode::CONFLICT, why),
    }
}

/// `{"to": WORKER}`.
#[derive(serde::Deserialize)]
struct MoveTo {
    to: String,
}

async fn move_tenant(
    State(hub): State<Arc<Hub>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Json(body): Json<MoveTo>,
) -> Response {
    match crate::moving::move_tenant(&hub, &name, &body.to).await {
        Ok(report) => Json(report).into_response(),
        Err(why) => refused(StatusCode::CONFLICT, why),
    }
}

async fn drain(
    State(hub): State<Arc<Hub>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match crate::draining::start(&hub, &name) {
        Ok(status) => Json(status).into_response(),
        Err(why) => refused(StatusCode::NOT_FOUND, why),
    }
}

async fn drain_status(
    State(hub): State<Arc<Hub>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match crate::draining::status(&hub, &name) {
        Some(status) => Json(status).into_response(),
        None => refused(
            StatusCode::NOT_FOUND,
            format!("this hub has not drained {name} since it started"),
        ),
    }
}

async fn undrain(
    State(hub): State<Arc<Hub>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    match crate::draining::undrain(&hub, &name) {
        Ok(()) => Json(serde_json::json!({ "worker": name, "draining": false })).into_response(),
        Err(why) => refused(StatusCode::NOT_FOUND, why),
    }
}

/// A refusal with its reason, as `{"error"}`.
fn refused(status: StatusCode, why: String) -> Response {
    (status, Json(serde_json::json!({ "error": why }))).into_response()
}

async fn add_tenant(State(hub): State<Arc<Hub>>, Json(spec): Json<TenantSpec>) -> Response {
    match crate::adding::add_tenant(&hub, spec).await {
        Ok(info) => Json(info).into_response(),
        Err(why) => refused(StatusCode::CONFLICT, why),
    }
}

async fn workers(State(hub): State<Arc<Hub>>) -> Json<Vec<WorkerView>> {
    Json(hub.registry().workers(Instant::now()))
}

async fn tenants(State(hub): State<Arc<Hub>>) -> Json<Vec<TenantView>> {
    Json(hub.registry().tenants(Instant::now()))
}

/// `GET path` of the hub's API that `config` describes, with its token (what `pico hub ls`
/// reads).
pub async fn get(config: &HubConfig, path: &str) -> Result<serde_json::Value> {
    let token = config.token()?;
    let transport = config.client_transport()?;
    get_at(config.api_listen, &transport, &token, path).await
}

/// `GET path` on the hub's API at `addr` over `transport` (what `pico worker drain` polls).
pub async fn get_at(
    addr: std::net::SocketAddr,
    transport: &Transport,
    token: &ApiToken,
    path: &str,
) -> Result<serde_json::Value> {
    ask(addr, transport, token, axum::http::Method::GET, path, None).await
}

/// `POST path` with `body` on the hub's API at `addr` over `transport` (what `pico tenant move`,
/// `pico --hub URL tenant add` and `pico worker drain` ask).
pub async fn post(
    addr: std::net::SocketAddr,
    transport: &Transport,
    token: &ApiToken,
    path: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value> {
    ask(
        addr,
        transport,
        token,
        axum::http::Method::POST,
        path,
        Some(body),
    )
    .await
}

/// `method path` with `body` on the hub's API at `addr`.
async fn ask(
    addr: std::net::SocketAddr,
    transport: &Transport,
    token: &ApiToken,
    method: axum::http::Method,
    path: &str,
    body: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    Ok(call_json("the hub", addr, transport, token.text(), method, path, body).await?)
}
