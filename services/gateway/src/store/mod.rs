//! Where the gateway keeps aliases, each account's daily clearnet sends and its traffic
//! counters.
//!
//! An alias row maps a random local part back to the identity and the correspondent it was made
//! for; at most one live alias exists per (identity, correspondent) (a partial unique index), and
//! a revoked row stays so the same local part is never handed out again. Both backends share one
//! implementation (`store_impl!` below) written with `?` placeholders; the suite in `tests` runs
//! it against SQLite and PostgreSQL.

mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use onionpost_runtime::{Database, Migrations};

pub use onionpost_runtime::db::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The migrations of both backends.
pub const MIGRATIONS: Migrations = Migrations {
    sqlite: &sqlx::migrate!("migrations/sqlite"),
    postgres: &sqlx::migrate!("migrations/postgres"),
};

/// The store of an open database.
pub fn for_database(database: Database) -> Arc<dyn GatewayStore> {
    match database {
        Database::Sqlite(pool) => Arc::new(SqliteStore::new(pool)),
        Database::Postgres(pool) => Arc::new(PostgresStore::new(pool)),
    }
}

/// One alias as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasRecord {
    /// The local part alone; the address adds the gateway domain.
    pub local_part: String,
    pub identity_id: String,
    pub account_id: String,
    /// The clearnet address the alias was made for, normalised to lower case.
    pub correspondent: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

impl AliasRecord {
    pub fn is_live(&self) -> bool {
        self.revoked_at_ms.is_none()
    }
}

/// Which aliases a listing covers.
#[derive(Debug, Clone, Default)]
pub struct AliasFilter {
    pub account_id: Option<String>,
    pub identity_id: Option<String>,
    pub include_revoked: bool,
    /// Only local parts after this one (the page token).
    pub after: Option<String>,
    pub limit: u32,
}

/// A traffic counter of `GatewayStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    OutboundDelivered,
    OutboundFailed,
    InboundAccepted,
    InboundRefused,
    InboundDmarcFailed,
}

impl Counter {
    pub const ALL: [Counter; 5] = [
        Counter::OutboundDelivered,
        Counter::OutboundFailed,
        Counter::InboundAccepted,
        Counter::InboundRefused,
        Counter::InboundDmarcFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Counter::OutboundDelivered => "outbound_delivered",
            Counter::OutboundFailed => "outbound_failed",
            Counter::InboundAccepted => "inbound_accepted",
            Counter::InboundRefused => "inbound_refused",
            Counter::InboundDmarcFailed => "inbound_dmarc_failed",
        }
    }
}

/// The gateway's storage.
#[async_trait]
pub trait GatewayStore: Send + Sync + 'static {
    /// The live alias of `identity_id` for `correspondent`; when there is none, `new_local_part`
    /// is recorded as one and returned.
    async fn alias_for(
        &self,
        identity_id: &str,
        account_id: &str,
        correspondent: &str,
        new_local_part: &str,
        now_ms: i64,
    ) -> Result<AliasRecord, StoreError>;

    /// The alias with this local part, live or revoked.
    async fn alias(&self, local_part: &str) -> Result<Option<AliasRecord>, StoreError>;

    /// Aliases by local part, within the filter.
    async fn list_aliases(&self, filter: &AliasFilter) -> Result<Vec<AliasRecord>, StoreError>;

    /// Revokes an alias (a second revocation keeps the first time); None when there is none.
    async fn revoke_alias(
        &self,
        local_part: &str,
        now_ms: i64,
    ) -> Result<Option<AliasRecord>, StoreError>;

    /// Records that mail went out through or came in for an alias.
    async fn touch_alias(&self, local_part: &str, now_ms: i64) -> Result<(), StoreError>;

    /// Live aliases, for statistics.
    async fn live_aliases(&self) -> Result<u64, StoreError>;

    /// Clearnet recipients `account_id` sent to on `day` (`YYYY-MM-DD`, UTC).
    async fn sent_on(&self, account_id: &str, day: &str) -> Result<u64, StoreError>;

    /// Adds to the recipients `account_id` sent to on `day`.
    async fn add_sent(
        &self,
        account_id: &str,
        day: &str,
        recipients: u64,
    ) -> Result<(), StoreError>;

    /// Adds to a traffic counter of `day`.
    async fn count(&self, day: &str, counter: Counter, by: u64) -> Result<(), StoreError>;

    /// A traffic counter of `day`.
    async fn counter(&self, day: &str, counter: Counter) -> Result<u64, StoreError>;
}

fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 1;
    for c in sql.chars() {
        if c == '?' {
            out.push_str(&format!("${next}"));
            next += 1;
        } else {
            out.push(c);
        }
    }
    out
}

fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("negative count".into()))
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

const ALIAS_COLUMNS: &str = "local_part, identity_id, account_id, correspondent, created_at_ms, \
                             last_used_at_ms, revoked_at_ms";

/// The store for one sqlx backend; `$sql` turns `?` placeholders into the backend's own.
macro_rules! store_impl {
    ($store:ident, $db:ty, $row:ty, $sql:expr) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use super::{
            ALIAS_COLUMNS, AliasFilter, AliasRecord, Counter, GatewayStore, StoreError, to_i64,
            to_u64,
        };

        /// The gateway store on this backend.
        #[derive(Clone, Debug)]
        pub struct $store {
            pool: sqlx::Pool<$db>,
        }

        impl $store {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { pool }
            }

            fn sql(text: &str) -> String {
                ($sql)(text)
            }

            fn alias_from_row(row: &$row) -> Result<AliasRecord, StoreError> {
                Ok(AliasRecord {
                    local_part: row.try_get("local_part")?,
                    identity_id: row.try_get("identity_id")?,
                    account_id: row.try_get("account_id")?,
                    correspondent: row.try_get("correspondent")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    last_used_at_ms: row.try_get("last_used_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                })
            }

            async fn live_alias(
                &self,
                identity_id: &str,
                correspondent: &str,
            ) -> Result<Option<AliasRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {ALIAS_COLUMNS} FROM aliases WHERE identity_id = ? AND correspondent = ? \
                     AND revoked_at_ms IS NULL"
                ));
                let row = sqlx::query(&sql)
                    .bind(identity_id)
                    .bind(correspondent)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::alias_from_row).transpose()
            }
        }

        #[async_trait]
        impl GatewayStore for $store {
            async fn alias_for(
                &self,
                identity_id: &str,
                account_id: &str,
                correspondent: &str,
                new_local_part: &str,
                now_ms: i64,
            ) -> Result<AliasRecord, StoreError> {
                if let Some(alias) = self.live_alias(identity_id, correspondent).await? {
                    return Ok(alias);
                }
                let sql = Self::sql(&format!(
                    "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES (?, ?, ?, ?, ?, NULL, NULL)"
                ));
                let inserted = sqlx::query(&sql)
                    .bind(new_local_part)
                    .bind(identity_id)
                    .bind(account_id)
                    .bind(correspondent)
                    .bind(now_ms)
                    .execute(&self.pool)
                    .await;
                match inserted.map_err(StoreError::from) {
                    Ok(_) => {}
                    // Another send made the live alias first: use that one.
                    Err(StoreError::Duplicate) => {}
                    Err(error) => return Err(error),
                }
                self.live_alias(identity_id, correspondent)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("alias vanished after insert".into()))
            }

            async fn alias(&self, local_part: &str) -> Result<Option<AliasRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {ALIAS_COLUMNS} FROM aliases WHERE local_part = ?"
                ));
                let row = sqlx::query(&sql)
                    .bind(local_part)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(Self::alias_from_row).transpose()
            }

            async fn list_aliases(
                &self,
                filter: &AliasFilter,
            ) -> Result<Vec<AliasRecord>, StoreError> {
                let mut sql = format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE 1 = 1");
                let mut binds: Vec<String> = Vec::new();
                if let Some(account_id) = &filter.account_id {
                    sql.push_str(" AND account_id = ?");
                    binds.push(account_id.clone());
                }
                if let Some(identity_id) = &filter.identity_id {
                    sql.push_str(" AND identity_id = ?");
                    binds.push(identity_id.clone());
                }
                if !filter.include_revoked {
                    sql.push_str(" AND revoked_at_ms IS NULL");
                }
                if let Some(after) = &filter.after {
                    sql.push_str(" AND local_part > ?");
                    binds.push(after.clone());
                }
                sql.push_str(&format!(" ORDER BY local_part LIMIT {}", filter.limit.max(1)));
                let sql = Self::sql(&sql);
                let mut query = sqlx::query(&sql);
                for bind in binds {
                    query = query.bind(bind);
                }
                let rows = query.fetch_all(&self.pool).await?;
                rows.iter().map(Self::alias_from_row).collect()
            }

            async fn revoke_alias(
                &self,
                local_part: &str,
                now_ms: i64,
            ) -> Result<Option<AliasRecord>, StoreError> {
                let sql = Self::sql(
                    "UPDATE aliases SET revoked_at_ms = ? WHERE local_part = ? AND revoked_at_ms IS NULL",
                );
                sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(local_part)
                    .execute(&self.pool)
                    .await?;
                self.alias(local_part).await
            }

            async fn touch_alias(&self, local_part: &str, now_ms: i64) -> Result<(), StoreError> {
                let sql = Self::sql("UPDATE aliases SET last_used_at_ms = ? WHERE local_part = ?");
                sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(local_part)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn live_aliases(&self) -> Result<u64, StoreError> {
                let row = sqlx::query(
                    "SELECT COUNT(*) AS live FROM aliases WHERE revoked_at_ms IS NULL",
                )
                .fetch_one(&self.pool)
                .await?;
                to_u64(row.try_get("live")?)
            }

            async fn sent_on(&self, account_id: &str, day: &str) -> Result<u64, StoreError> {
                let sql =
                    Self::sql("SELECT recipients FROM account_days WHERE account_id = ? AND day = ?");
                let row = sqlx::query(&sql)
                    .bind(account_id)
                    .bind(day)
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some(row) => to_u64(row.try_get("recipients")?),
                    None => Ok(0),
                }
            }

            async fn add_sent(
                &self,
                account_id: &str,
                day: &str,
                recipients: u64,
            ) -> Result<(), StoreError> {
                let sql = Self::sql(
                    "INSERT INTO account_days (account_id, day, recipients) VALUES (?, ?, ?) \
                     ON CONFLICT (account_id, day) \
                     DO UPDATE SET recipients = account_days.recipients + excluded.recipients",
                );
                sqlx::query(&sql)
                    .bind(account_id)
                    .bind(day)
                    .bind(to_i64(recipients))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn count(&self, day: &str, counter: Counter, by: u64) -> Result<(), StoreError> {
                let sql = Self::sql(
                    "INSERT INTO counters (day, name, value) VALUES (?, ?, ?) \
                     ON CONFLICT (day, name) DO UPDATE SET value = counters.value + excluded.value",
                );
                sqlx::query(&sql)
                    .bind(day)
                    .bind(counter.as_str())
                    .bind(to_i64(by))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn counter(&self, day: &str, counter: Counter) -> Result<u64, StoreError> {
                let sql = Self::sql("SELECT value FROM counters WHERE day = ? AND name = ?");
                let row = sqlx::query(&sql)
                    .bind(day)
                    .bind(counter.as_str())
                    .fetch_optional(&self.pool)
                    .await?;
                match row {
                    Some(row) => to_u64(row.try_get("value")?),
                    None => Ok(0),
                }
            }
        }
    };
}

pub(crate) use store_impl;
