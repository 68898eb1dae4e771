//! `onionpost admin plans …`: the operator's plans (`/v1/plans`).

use clap::Subcommand;

use super::{ApiClient, Columns, Output};
use crate::api::plans::{CreatePlan, Plan, PlanList};

const COLUMNS: Columns = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("QUOTA", "/quota_bytes"),
    ("IDENTITIES", "/identities_allowed"),
    ("GATEWAY", "/gateway_allowed"),
];

#[derive(Subcommand, Debug)]
pub enum PlansCommand {
    /// List plans.
    List,
    /// Create a plan.
    Create {
        name: String,
        #[arg(long)]
        quota_bytes: u64,
        #[arg(long)]
        identities: u32,
        #[arg(long)]
        gateway: bool,
    },
}

pub(super) async fn run(client: &ApiClient, command: &PlansCommand) -> anyhow::Result<Output> {
    match command {
        PlansCommand::List => {
            let plans: PlanList = client.get("/v1/plans").await?;
            Output::list(&plans, COLUMNS, "/plans")
        }
        PlansCommand::Create {
            name,
            quota_bytes,
            identities,
            gateway,
        } => {
            let request = CreatePlan {
                name: name.clone(),
                quota_bytes: *quota_bytes,
                identities_allowed: *identities,
                gateway_allowed: *gateway,
                gateway_daily_limit: 0,
            };
            let plan: Plan = client.post("/v1/plans", &request).await?;
            Output::one(&plan, COLUMNS)
        }
    }
}
