//! The SQL of [`super::GatewayStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it.

use super::StoreError;

pub(super) fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt("negative count".into()))
}

pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) const ALIAS_COLUMNS: &str = "local_part, identity_id, account_id, correspondent, \
     correspondent_sealed, created_at_ms, last_used_at_ms, revoked_at_ms";

/// Implements [`super::GatewayStore`] on the backend `$db` as the type `$store`.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use onionpost_runtime::seal::Sealer;
        use onionpost_runtime::sql::Dialect;

        use super::sql::{ALIAS_COLUMNS, to_i64, to_u64};
        use super::{
            AliasFilter, AliasRecord, Counter, GatewayStore, StoreError, correspondent_key,
            open_correspondent, seal_correspondent,
        };

        onionpost_runtime::sql_store!($store, $db, { sealer: Sealer });

        impl $store {
            fn alias_from_row(&self, row: &Row) -> Result<AliasRecord, StoreError> {
                let local_part: String = row.try_get("local_part")?;
                let sealed: Option<Vec<u8>> = row.try_get("correspondent_sealed")?;
                let correspondent = match sealed {
                    Some(sealed) => open_correspondent(&self.sealer, &local_part, &sealed)?,
                    // A row of an earlier version, until the start that seals it.
                    None => row.try_get("correspondent")?,
                };
                Ok(AliasRecord {
                    local_part,
                    identity_id: row.try_get("identity_id")?,
                    account_id: row.try_get("account_id")?,
                    correspondent,
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
                    .bind(correspondent_key(&self.sealer, identity_id, correspondent))
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map(|row| self.alias_from_row(row)).transpose()
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
                    "INSERT INTO aliases ({ALIAS_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)"
                ));
                let inserted = sqlx::query(&sql)
                    .bind(new_local_part)
                    .bind(identity_id)
                    .bind(account_id)
                    .bind(correspondent_key(&self.sealer, identity_id, correspondent))
                    .bind(seal_correspondent(&self.sealer, new_local_part, correspondent))
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
                row.as_ref().map(|row| self.alias_from_row(row)).transpose()
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
                rows.iter().map(|row| self.alias_from_row(row)).collect()
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

            async fn seal_clear_aliases(&self) -> Result<usize, StoreError> {
                let rows = sqlx::query(
                    "SELECT local_part, identity_id, correspondent FROM aliases \
                     WHERE correspondent_sealed IS NULL ORDER BY local_part",
                )
                .fetch_all(&self.pool)
                .await?;
                let sql = Self::sql(
                    "UPDATE aliases SET correspondent = ?, correspondent_sealed = ? \
                     WHERE local_part = ? AND correspondent_sealed IS NULL",
                );
                for row in &rows {
                    let local_part: String = row.try_get("local_part")?;
                    let identity_id: String = row.try_get("identity_id")?;
                    let correspondent: String = row.try_get("correspondent")?;
                    let statement = sqlx::query(&sql)
                        .bind(correspondent_key(&self.sealer, &identity_id, &correspondent))
                        .bind(seal_correspondent(&self.sealer, &local_part, &correspondent))
                        .bind(local_part);
                    <$db as Dialect>::execute_erasing(&self.pool, statement).await?;
                }
                Ok(rows.len())
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

            async fn reserve_sent(
                &self,
                account_id: &str,
                day: &str,
                recipients: u64,
                cap: u64,
            ) -> Result<bool, StoreError> {
                // The first reservation of the day inserts (when it fits at all); later ones
                // add only while the sum stays within the cap. The row lock of the upsert
                // (PostgreSQL) or the write lock (SQLite) makes the check and the count one step.
                let sql = Self::sql(
                    "INSERT INTO account_days (account_id, day, recipients) \
                     SELECT ?, ?, ? WHERE ? <= ? \
                     ON CONFLICT (account_id, day) \
                     DO UPDATE SET recipients = account_days.recipients + excluded.recipients \
                     WHERE account_days.recipients + excluded.recipients <= ?",
                );
                let (recipients, cap) = (to_i64(recipients), to_i64(cap));
                let counted = sqlx::query(&sql)
                    .bind(account_id)
                    .bind(day)
                    .bind(recipients)
                    .bind(recipients)
                    .bind(cap)
                    .bind(cap)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(counted == 1)
            }

            async fn release_sent(
                &self,
                account_id: &str,
                day: &str,
                recipients: u64,
            ) -> Result<(), StoreError> {
                let sql = Self::sql(
                    "UPDATE account_days SET recipients = \
                     CASE WHEN recipients > ? THEN recipients - ? ELSE 0 END \
                     WHERE account_id = ? AND day = ?",
                );
                let recipients = to_i64(recipients);
                sqlx::query(&sql)
                    .bind(recipients)
                    .bind(recipients)
                    .bind(account_id)
                    .bind(day)
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

pub(super) use store_impl;
