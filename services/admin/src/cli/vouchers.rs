//! `onionpost admin vouchers …`: prepaid voucher codes (`/v1/vouchers`).

use clap::Subcommand;
use serde_json::{Value, json};

use super::{ApiClient, Output};
use crate::api::plans::{MintVouchers, VoucherBatch};

#[derive(Subcommand, Debug)]
pub enum VouchersCommand {
    /// Mint voucher codes (shown once).
    Mint {
        plan: String,
        #[arg(long)]
        days: u32,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
}

pub(super) async fn run(client: &ApiClient, command: &VouchersCommand) -> anyhow::Result<Output> {
    let VouchersCommand::Mint { plan, days, count } = command;
    let request = MintVouchers {
        plan: plan.clone(),
        days: *days,
        count: *count,
        expires_at: None,
    };
    let batch: VoucherBatch = client.post("/v1/vouchers", &request).await?;
    // At a terminal, one code a row, easy to copy.
    let rows: Vec<Value> = batch
        .codes
        .iter()
        .map(|code| json!({"code": code}))
        .collect();
    Output::shown_as(
        &batch,
        json!({"codes": rows}),
        &[("CODE", "/code")],
        "/codes",
    )
}
