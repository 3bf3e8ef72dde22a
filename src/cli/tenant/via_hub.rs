//! The tenant commands that go through the hub (`pico --hub URL tenant add|ls`, `tenant move`),
//! and where the hub is.

use std::process::ExitCode;

use worker::protocol::Transport;
use worker::tenant::TenantSpec;

use super::print_tenants;
use crate::cli::{print_json, Context};

/// Where the hub is and its token: this worker's `[worker.hub]` (or `--hub`), else `[hub]`.
pub(crate) fn the_hub(ctx: &Context) -> anyhow::Result<TheHub> {
    let (addr, transport, token_file) = match &ctx.config.worker.hub {
        Some(link) => (
            link.addr,
            Transport::trusting(link.ca_file.as_deref())?,
            link.token_file.clone(),
        ),
        None => (
            ctx.config.hub.api_listen,
            ctx.config.hub.client_transport()?,
            ctx.config.hub.token_file.clone(),
        ),
    };
    let token = worker::protocol::ApiToken::cluster(token_file.as_deref())?;
    Ok(TheHub {
        addr,
        transport,
        token,
    })
}

/// The hub a command acts through: its API's address, how it is reached, its token.
pub(crate) struct TheHub {
    addr: std::net::SocketAddr,
    transport: Transport,
    token: worker::protocol::ApiToken,
}

impl TheHub {
    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(hub::api::get_at(self.addr, &self.transport, &self.token, path).await?)
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(hub::api::post(self.addr, &self.transport, &self.token, path, body).await?)
    }
}

/// `pico --hub URL tenant add`: the hub places the tenant and has that worker start it.
pub(super) async fn add_through_hub(ctx: &Context, spec: &TenantSpec) -> anyhow::Result<ExitCode> {
    let answer = the_hub(ctx)?
        .post("/v1/tenants", &serde_json::to_value(spec)?)
        .await?;
    if ctx.json {
        print_json(&answer)?;
    } else {
        print_tenants(&[serde_json::from_value(answer)?]);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pico --hub URL tenant ls`: the tenants of the whole cluster, as the hub knows them.
pub(super) async fn ls_through_hub(ctx: &Context) -> anyhow::Result<ExitCode> {
    let answer = hub::api::get(&ctx.config.hub, "/v1/tenants").await?;
    if ctx.json {
        print_json(&answer)?;
    } else {
        crate::cli::hub::print_tenants(&serde_json::from_value::<Vec<_>>(answer)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `pico tenant move`: asks the hub this worker reports to (or, on the hub's machine, the hub).
pub(super) async fn move_tenant(ctx: &Context, name: &str, to: &str) -> anyhow::Result<ExitCode> {
    let path = format!("/v1/tenants/{name}/move");
    let answer = the_hub(ctx)?
        .post(&path, &serde_json::json!({ "to": to }))
        .await?;
    if ctx.json {
        print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let r: hub::moving::MoveReport = serde_json::from_value(answer)?;
    println!(
        "{name} moved from {} to {} in {} ms of downtime (CPU check {} ms before it; swap-out {} ms, \
         adopt {} ms, swap-in {} ms): restore set {} pages, {} held there, {} from the cold tier \
         ({} bytes)",
        r.from,
        r.to,
        r.downtime_ms,
        r.cpu_check_ms,
        r.swap_out_ms,
        r.adopt_ms,
        r.swap_in_ms,
        r.restore_pages,
        r.restore_pages_held,
        r.restore_cold_pages,
        r.restore_cold_bytes
    );
    match r.bytes {
        Some(b) => println!(
            "its {} bytes of pages: {} held there, {} from {} (peer), {} from the cold tier \
             ({} bytes read from it in all)",
            b.checkpoint, b.held, b.peer, r.from, b.cold, b.cold_read
        ),
        None => println!("its restore did not finish in time to count where its pages came from"),
    }
    Ok(ExitCode::SUCCESS)
}
