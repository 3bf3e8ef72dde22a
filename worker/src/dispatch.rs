//! From a request to the worker call that answers it, with the tenant's tracing span: the one
//! place that maps an operation to a flow. Kept apart from the HTTP API ([`crate::api`]), which
//! only carries requests, so that any front end calls the same flows.

use std::sync::Arc;

use tracing::{info_span, Instrument};

use crate::error::{Error, Result};
use crate::host::Worker;
use crate::protocol::Request;

/// Runs `request` on `worker`; its answer as JSON.
pub(crate) async fn dispatch(worker: &Arc<Worker>, request: Request) -> Result<serde_json::Value> {
    match request {
        Request::Ping => Ok(serde_json::json!({"criu": worker.criu.version()})),
        Request::Ls => {
            let mut out = Vec::new();
            for name in worker.tenant_names() {
                if let Ok(info) = worker.status(&name).await {
                    out.push(info);
                }
            }
            to_json(&out)
        }
        Request::Status { name } => to_json(&worker.status(&name).await?),
        Request::Add(spec) => {
            let span = info_span!("tenant", tenant = %spec.name);
            // Boxed, as the other swap flows: their futures are deep.
            to_json(&Box::pin(worker.add(spec).instrument(span)).await?)
        }
        // Swaps run in the tenant's span of their own, whoever asks for them.
        Request::SwapOut { name } => to_json(&Box::pin(worker.swap_out(&name)).await?),
        Request::SwapIn {
            name,
            no_activeset,
            install,
        } => to_json(&Box::pin(worker.swap_in(&name, !no_activeset, install)).await?),
        Request::ActiveSet { name } => to_json(&worker.activeset_summary(&name).await?),
        Request::Evict { tier } => {
            if tier.as_deref() != Some("local") {
                worker.store.evict_hot();
            }
            if tier.as_deref() != Some("hot") {
                worker.store.evict_local()?;
            }
            Ok(serde_json::Value::Null)
        }
        Request::StoreStats => to_json(&worker.store.stats().await?),
        Request::Counters => to_json(&worker.store.live_counters()),
        Request::Logs { name, tail } => to_json(&worker.log_tail(&name, tail).await?),
        Request::Release { name } => {
            let span = info_span!("tenant", tenant = %name);
            worker.release_sleeping(&name).instrument(span).await?;
            Ok(serde_json::Value::Null)
        }
        Request::CpuRecord => {
            let record = worker.cpu_record().await?;
            Ok(serde_json::json!({ "record": pagestore::page::hex(&record) }))
        }
        Request::CpuCheck { record } => {
            let record = pagestore::page::unhex(&record)
                .ok_or_else(|| Error::BadRequest("record: not hex".into()))?;
            worker.cpu_check(&record).await?;
            Ok(serde_json::Value::Null)
        }
        Request::Held { checkpoint } => to_json(&worker.held(&checkpoint).await?),
        Request::Adopt {
            name,
            checkpoint,
            peer,
        } => {
            let span = info_span!("tenant", tenant = %name);
            let adopting = worker.adopt(&name, &checkpoint, peer.as_ref());
            to_json(&Box::pin(adopting.instrument(span)).await?)
        }
        Request::Rm { name } => {
            let span = info_span!("tenant", tenant = %name);
            Box::pin(worker.rm(&name).instrument(span)).await?;
            Ok(serde_json::Value::Null)
        }
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(Error::AnswerUnencodable)
}
