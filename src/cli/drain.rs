//! `pico worker drain NAME` and `pico worker undrain NAME`: ask the hub to move a worker's tenants
//! away (the drain runs on the hub: `hub/src/draining.rs`) and follow it, one line per tenant.

use std::process::ExitCode;
use std::time::Duration;

use hub::draining::{DrainStatus, DrainStep, Outcome};

use super::tenant::the_hub;
use super::{print_json, Context};

/// How often the drain's progress is read.
const POLL: Duration = Duration::from_millis(200);

/// Starts the drain of `name` (or joins the one under way) and, unless `no_wait`, prints each
/// tenant's outcome as the hub reports it; fails when a tenant stayed.
pub async fn drain(ctx: &Context, name: &str, no_wait: bool) -> anyhow::Result<ExitCode> {
    let hub = the_hub(ctx)?;
    let path = format!("/v1/workers/{name}/drain");
    let mut status: DrainStatus =
        serde_json::from_value(hub.post(&path, &serde_json::Value::Null).await?)?;
    if !ctx.json {
        println!(
            "draining {name}: the hub places nothing new on it; {} tenant(s) to move",
            status.tenants.len()
        );
    }
    let mut printed = 0;
    loop {
        if !ctx.json {
            for step in &status.steps[printed..] {
                println!("{}", describe(name, step));
            }
        }
        printed = status.steps.len();
        if status.done || no_wait {
            break;
        }
        tokio::time::sleep(POLL).await;
        status = serde_json::from_value(hub.get(&path).await?)?;
    }
    if ctx.json {
        print_json(&status)?;
    }
    let stayed = status.stayed();
    if !status.done {
        if !ctx.json {
            println!("the drain goes on at the hub: `pico hub ls workers` shows it");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if stayed.is_empty() {
        if !ctx.json {
            println!(
                "{name} drained: no tenant left on it; it takes none until `pico worker undrain {name}`"
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{name}: {} of {} tenant(s) could not move and stay on it: {}",
        stayed.len(),
        status.tenants.len(),
        stayed.join(", ")
    );
    Ok(ExitCode::FAILURE)
}

/// One tenant's outcome, as a line.
fn describe(worker: &str, step: &DrainStep) -> String {
    let tenant = &step.tenant;
    match &step.outcome {
        Outcome::Moved { to, downtime_ms } => {
            format!("{tenant}: moved to {to}, running ({downtime_ms} ms of downtime)")
        }
        Outcome::MovedAsleep { to } => {
            format!("{tenant}: moved to {to} asleep (no restore; its next client wakes it there)")
        }
        Outcome::Left { to } => format!("{tenant}: had already left for {to}"),
        Outcome::Stayed { why } => format!("{tenant}: stays on {worker}: {why}"),
    }
}

/// Lets the hub place tenants on `name` again.
pub async fn undrain(ctx: &Context, name: &str) -> anyhow::Result<ExitCode> {
    let answer = the_hub(ctx)?
        .post(
            &format!("/v1/workers/{name}/undrain"),
            &serde_json::Value::Null,
        )
        .await?;
    if ctx.json {
        print_json(&answer)?;
    } else {
        println!("{name} takes tenants again");
    }
    Ok(ExitCode::SUCCESS)
}
