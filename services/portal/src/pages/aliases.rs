//! The account's clearnet aliases: which correspondent each was made for, when it was last used,
//! and a button to revoke it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;

use super::{OrPage as _, PageError, Posted, layout, notice_markup, page, signed_in};
use crate::PortalState;
use crate::gateway;
use crate::session::BrowserSession;

fn day(time: Option<DateTime<Utc>>) -> String {
    time.map_or_else(
        || "—".to_owned(),
        |time| time.format("%Y-%m-%d").to_string(),
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    all: Option<String>,
    #[serde(default)]
    page_token: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

pub async fn list_page(
    State(state): State<PortalState>,
    BrowserSession(session): BrowserSession,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let session = signed_in(session)?;
    let all = query.all.as_deref() == Some("yes");
    let aliases = gateway::aliases(
        &state,
        &session.account_id,
        all,
        query.page_token.as_deref().unwrap_or(""),
    )
    .await
    .or_page(&session, "/account")?;
    let token = session.form_token();
    let markup = layout(
        "Clearnet aliases",
        Some(&session),
        html! {
            (notice_markup(query.done.as_deref()))
            @if !aliases.gateway_offered {
                p { "This carrier offers no clearnet mail." }
            } @else {
                p.muted { "Mail to an ordinary (clearnet) address goes out through the carrier's gateway under an alias made for that one correspondent, so no two correspondents see the same address. Revoke an alias and its correspondent's mail is refused as if it never existed." }
                p { @if all { a href="/aliases" { "Only live aliases" } } @else { a href="/aliases?all=yes" { "Also revoked aliases" } } }
                @if aliases.aliases.is_empty() {
                    p { "No alias yet." }
                } @else {
                    table {
                        tr { th { "Alias" } th { "Correspondent" } th { "Last used" } th {} }
                        @for alias in &aliases.aliases {
                            tr {
                                td.mono { (alias.address) }
                                td.mono { (alias.correspondent) }
                                td { (day(alias.last_used_at)) }
                                td {
                                    @if alias.revoked_at.is_some() {
                                        span.state-failed { "revoked" }
                                    } @else {
                                        form.inline method="post" action=(format!("/aliases/{}/revoke", alias.address)) {
                                            input type="hidden" name="form_token" value=(token);
                                            button type="submit" { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if let Some(next) = &aliases.next_page_token {
                        p { a href=(format!("/aliases?all={}&page_token={}", if all { "yes" } else { "" }, form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>())) { "More" } }
                    }
                }
            }
        },
    );
    Ok(page(StatusCode::OK, markup))
}

pub async fn revoke(
    State(state): State<PortalState>,
    Path(address): Path<String>,
    Posted { session, form: _ }: Posted<serde::de::IgnoredAny>,
) -> Result<Redirect, PageError> {
    gateway::revoke_alias(&state, &session.account_id, &address)
        .await
        .or_page(&session, "/aliases")?;
    Ok(Redirect::to("/aliases?done=alias-revoked"))
}
