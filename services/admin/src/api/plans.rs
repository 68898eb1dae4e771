//! Plans and vouchers (owned by the imap service).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use onionpost_proto::ServiceName;
use onionpost_proto::imap::v1 as imap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::timestamp;
use crate::AdminState;
use crate::error::{AdminError, Upstream as _};
use crate::extract::ApiJson;
use crate::validate;

/// An operator-defined plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub quota_bytes: u64,
    pub identities_allowed: u32,
    /// Whether accounts on the plan may use the clearnet gateway.
    pub gateway_allowed: bool,
    /// Clearnet messages per day; 0 means the gateway's default.
    pub gateway_daily_limit: u32,
}

impl Plan {
    fn from_proto(plan: imap::Plan) -> Self {
        Plan {
            id: plan.plan_id,
            name: plan.name,
            quota_bytes: plan.quota_bytes,
            identities_allowed: plan.identities_allowed,
            gateway_allowed: plan.gateway_allowed,
            gateway_daily_limit: plan.gateway_daily_limit,
        }
    }
}

/// Every plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<Plan>,
}

#[utoipa::path(
    get, path = "/v1/plans", tag = "plans",
    responses((status = 200, description = "Every plan", body = PlanList)),
)]
pub async fn list_plans(State(state): State<AdminState>) -> Result<Json<PlanList>, AdminError> {
    let plans = state
        .directory
        .imap()?
        .list_plans(imap::ListPlansRequest {})
        .await
        .upstream(ServiceName::Imap)?;
    Ok(Json(PlanList {
        plans: plans.plans.into_iter().map(Plan::from_proto).collect(),
    }))
}

/// A new plan.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlan {
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    pub quota_bytes: u64,
    pub identities_allowed: u32,
    #[serde(default)]
    pub gateway_allowed: bool,
    #[serde(default)]
    pub gateway_daily_limit: u32,
}

#[utoipa::path(
    post, path = "/v1/plans", tag = "plans",
    request_body = CreatePlan,
    responses((status = 201, description = "The plan was created", body = Plan)),
)]
pub async fn create_plan(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<CreatePlan>,
) -> Result<(StatusCode, Json<Plan>), AdminError> {
    validate::name("name", &request.name, validate::MAX_NAME_LEN, false)?;
    let plan = state
        .directory
        .imap()?
        .create_plan(imap::CreatePlanRequest {
            plan: Some(imap::Plan {
                plan_id: String::new(),
                name: request.name,
                quota_bytes: request.quota_bytes,
                identities_allowed: request.identities_allowed,
                gateway_allowed: request.gateway_allowed,
                gateway_daily_limit: request.gateway_daily_limit,
            }),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(plan_id = %plan.plan_id, "plan created");
    Ok((StatusCode::CREATED, Json(Plan::from_proto(plan))))
}

/// Changes to a plan; absent members stay as they are. Accounts on it see them at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePlan {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub name: Option<String>,
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    #[serde(default)]
    pub identities_allowed: Option<u32>,
    #[serde(default)]
    pub gateway_allowed: Option<bool>,
    #[serde(default)]
    pub gateway_daily_limit: Option<u32>,
}

#[utoipa::path(
    patch, path = "/v1/plans/{id}", tag = "plans",
    params(("id" = String, Path, description = "Plan id")),
    request_body = UpdatePlan,
    responses((status = 200, description = "The plan as changed", body = Plan)),
)]
pub async fn update_plan(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<UpdatePlan>,
) -> Result<Json<Plan>, AdminError> {
    let mut plan = imap::Plan {
        plan_id: id.clone(),
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(name) = request.name {
        validate::name("name", &name, validate::MAX_NAME_LEN, false)?;
        plan.name = name;
        paths.push("name".to_owned());
    }
    if let Some(quota) = request.quota_bytes {
        plan.quota_bytes = quota;
        paths.push("quota_bytes".to_owned());
    }
    if let Some(allowed) = request.identities_allowed {
        plan.identities_allowed = allowed;
        paths.push("identities_allowed".to_owned());
    }
    if let Some(allowed) = request.gateway_allowed {
        plan.gateway_allowed = allowed;
        paths.push("gateway_allowed".to_owned());
    }
    if let Some(limit) = request.gateway_daily_limit {
        plan.gateway_daily_limit = limit;
        paths.push("gateway_daily_limit".to_owned());
    }
    if paths.is_empty() {
        return Err(AdminError::invalid(
            "body",
            "name at least one member to change",
        ));
    }
    let plan = state
        .directory
        .imap()?
        .update_plan(imap::UpdatePlanRequest {
            plan: Some(plan),
            update_mask: Some(prost_types::FieldMask { paths }),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(plan_id = %id, "plan updated");
    Ok(Json(Plan::from_proto(plan)))
}

/// A batch of vouchers to mint.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintVouchers {
    /// The plan each voucher sets.
    #[schema(min_length = 1)]
    pub plan: String,
    /// Days of paid time each voucher adds (1 to 3660).
    #[schema(minimum = 1, maximum = 3660)]
    pub days: u32,
    /// How many codes (1 to 1000).
    #[schema(minimum = 1, maximum = 1000)]
    pub count: u32,
    /// When unredeemed codes stop working; absent means never.
    #[serde(default)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Freshly minted codes, shown only this once.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VoucherBatch {
    pub batch_id: String,
    pub codes: Vec<String>,
}

#[utoipa::path(
    post, path = "/v1/vouchers", tag = "plans",
    request_body = MintVouchers,
    responses((status = 201, description = "The codes; only their hashes are kept", body = VoucherBatch)),
)]
pub async fn mint_vouchers(
    State(state): State<AdminState>,
    ApiJson(request): ApiJson<MintVouchers>,
) -> Result<(StatusCode, Json<VoucherBatch>), AdminError> {
    if request.plan.trim().is_empty() {
        return Err(AdminError::invalid("plan", "must not be empty"));
    }
    if !(1..=3660).contains(&request.days) {
        return Err(AdminError::invalid("days", "must be between 1 and 3660"));
    }
    if !(1..=1000).contains(&request.count) {
        return Err(AdminError::invalid("count", "must be between 1 and 1000"));
    }
    let batch = state
        .directory
        .imap()?
        .mint_vouchers(imap::MintVouchersRequest {
            plan_id: request.plan,
            days: request.days,
            count: request.count,
            expires_at: request.expires_at.map(timestamp),
        })
        .await
        .upstream(ServiceName::Imap)?;
    tracing::info!(batch_id = %batch.batch_id, count = batch.codes.len(), "vouchers minted");
    Ok((
        StatusCode::CREATED,
        Json(VoucherBatch {
            batch_id: batch.batch_id,
            codes: batch.codes,
        }),
    ))
}
