//! `onionpost admin accounts …`: hosted accounts (`/v1/accounts`).

use clap::Subcommand;
use serde_json::json;

use super::{ApiClient, Columns, Output, query, segment, word};
use crate::api::accounts::{
    Account, AccountPage, CreateAccount, ListAccountsQuery, Redeem, StateChange, UpdateAccount,
};

const COLUMNS: Columns = &[
    ("ID", "/id"),
    ("LOGIN", "/login"),
    ("PLAN", "/plan"),
    ("STATE", "/state"),
    ("PAID UNTIL", "/paid_until"),
    ("USED", "/quota/used_bytes"),
    ("QUOTA", "/quota/limit_bytes"),
    ("IDENTITIES", "/identities"),
];

#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// List accounts.
    List {
        /// Only accounts in this state (active, grace, expired, suspended).
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Create an account.
    Create {
        login: String,
        #[arg(long)]
        password: String,
        /// Plan id; the default plan when absent.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Show one account.
    Show { id: String },
    /// Suspend, resume, change plan or reset the password.
    Update {
        id: String,
        #[arg(long, conflicts_with = "resume")]
        suspend: bool,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        password: Option<String>,
    },
    /// Delete an account, its identities (revoked first) and its mail.
    Delete { id: String },
    /// Redeem a voucher code for an account.
    Redeem { id: String, code: String },
}

pub(super) async fn run(client: &ApiClient, command: &AccountsCommand) -> anyhow::Result<Output> {
    match command {
        AccountsCommand::List {
            state,
            limit,
            page_token,
        } => {
            let filters = ListAccountsQuery {
                state: state
                    .as_deref()
                    .map(|text| word("state", text))
                    .transpose()?,
                limit: *limit,
                page_token: page_token.clone(),
            };
            let page: AccountPage = client
                .get(&format!("/v1/accounts{}", query(&filters)?))
                .await?;
            Output::list(&page, COLUMNS, "/accounts")
        }
        AccountsCommand::Create {
            login,
            password,
            plan,
        } => {
            let request = CreateAccount {
                login: login.clone(),
                password: password.clone(),
                plan: plan.clone(),
            };
            let account: Account = client.post("/v1/accounts", &request).await?;
            Output::one(&account, COLUMNS)
        }
        AccountsCommand::Show { id } => {
            let account: Account = client.get(&format!("/v1/accounts/{}", segment(id))).await?;
            Output::one(&account, COLUMNS)
        }
        AccountsCommand::Update {
            id,
            suspend,
            resume,
            plan,
            password,
        } => {
            let state = match (suspend, resume) {
                (true, _) => Some(StateChange::Suspended),
                (false, true) => Some(StateChange::Active),
                (false, false) => None,
            };
            let request = UpdateAccount {
                state,
                plan: plan.clone(),
                password: password.clone(),
            };
            let account: Account = client
                .patch(&format!("/v1/accounts/{}", segment(id)), &request)
                .await?;
            Output::one(&account, COLUMNS)
        }
        AccountsCommand::Delete { id } => {
            client
                .delete(&format!("/v1/accounts/{}", segment(id)))
                .await?;
            Output::one(&json!({"deleted": id}), &[("DELETED", "/deleted")])
        }
        AccountsCommand::Redeem { id, code } => {
            let request = Redeem { code: code.clone() };
            let account: Account = client
                .post(&format!("/v1/accounts/{}/redeem", segment(id)), &request)
                .await?;
            Output::one(&account, COLUMNS)
        }
    }
}
