//! `onionpost admin identities …`: onion identities of accounts (`/v1/accounts/{id}/identities`,
//! `/v1/identities`).

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::json;

use super::{ApiClient, Columns, Output, segment};
use crate::api::identities::{CreateIdentity, Identity, IdentityList};

const COLUMNS: Columns = &[
    ("ID", "/id"),
    ("ADDRESS", "/address"),
    ("STATE", "/state"),
    ("FINGERPRINT", "/fingerprint"),
];

#[derive(Subcommand, Debug)]
pub enum IdentitiesCommand {
    /// List an account's identities.
    List { account: String },
    /// Create an identity (a new onion and key) for an account.
    Create {
        account: String,
        local_part: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Show one identity.
    Show { id: String },
    /// Revoke an identity for good.
    Delete { id: String },
    /// Write an identity's QR code (SVG, or PNG with --png) to a file.
    Qr {
        id: String,
        #[arg(long)]
        png: bool,
        #[arg(long, short)]
        output: std::path::PathBuf,
    },
}

pub(super) async fn run(client: &ApiClient, command: &IdentitiesCommand) -> anyhow::Result<Output> {
    match command {
        IdentitiesCommand::List { account } => {
            let list: IdentityList = client
                .get(&format!("/v1/accounts/{}/identities", segment(account)))
                .await?;
            Output::list(&list, COLUMNS, "/identities")
        }
        IdentitiesCommand::Create {
            account,
            local_part,
            display_name,
        } => {
            let request = CreateIdentity {
                local_part: local_part.clone(),
                display_name: display_name.clone(),
            };
            let identity: Identity = client
                .post(
                    &format!("/v1/accounts/{}/identities", segment(account)),
                    &request,
                )
                .await?;
            Output::one(&identity, COLUMNS)
        }
        IdentitiesCommand::Show { id } => {
            let identity: Identity = client
                .get(&format!("/v1/identities/{}", segment(id)))
                .await?;
            Output::one(&identity, COLUMNS)
        }
        IdentitiesCommand::Delete { id } => {
            client
                .delete(&format!("/v1/identities/{}", segment(id)))
                .await?;
            Output::one(&json!({"revoked": id}), &[("REVOKED", "/revoked")])
        }
        IdentitiesCommand::Qr { id, png, output } => {
            let kind = if *png { "png" } else { "svg" };
            let image = client
                .get_bytes(&format!("/v1/identities/{}/qr.{kind}", segment(id)))
                .await?;
            std::fs::write(output, &image)
                .with_context(|| format!("writing {}", output.display()))?;
            Output::one(
                &json!({"written": output.display().to_string(), "bytes": image.len()}),
                &[("WRITTEN", "/written"), ("BYTES", "/bytes")],
            )
        }
    }
}
