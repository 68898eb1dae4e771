//! The SQL of [`super::QueueStore`], written once for both backends in the dialect of
//! [`onionpost_runtime::sql`]; `sqlite.rs` and `postgres.rs` expand it.

use onionpost_runtime::sql::{join_list, split_list};

use super::StoreError;
use super::vocabulary::Notify;

pub(super) fn join_notify(notify: &[Notify]) -> String {
    join_list(
        &notify
            .iter()
            .map(|value| value.as_str())
            .collect::<Vec<_>>(),
    )
}

pub(super) fn split_notify(text: &str) -> Result<Vec<Notify>, StoreError> {
    split_list(text)
        .iter()
        .map(|part| Notify::parse(part))
        .collect()
}

pub(super) const MESSAGE_COLUMNS: &str = "queue_id, idempotency_key, origin, account_id, \
     sender_identity_id, reverse_path, message_id, envelope_id, dsn_return, fan_out_immediately, \
     body_digest, size_bytes, held, enqueued_at_ms, expires_at_ms";

pub(super) const AGREEMENT_COLUMNS: &str = "agreement_id, address, fingerprint, created_at_ms, \
     expires_at_ms, revoked_at_ms, max_held_bytes, max_messages_per_day, carrier";

pub(super) const CARRY_REQUEST_COLUMNS: &str = "request_id, onion, statement, state, address, \
     fingerprint, kind, expires_at_ms, detail, attempts, received_at_ms, next_attempt_at_ms, \
     decided_at_ms, agreement_id";

pub(super) const RECIPIENT_COLUMNS: &str = "idx, address, state, notify, orcpt, attempts, \
     last_attempt_at_ms, next_attempt_at_ms, reply_code, reply_enhanced, reply_text, \
     handed_to_carriers, claimed_by, claimed_until_ms";

/// States that still wait for an attempt, as an SQL list.
pub(super) const UNFINISHED: &str = "('scheduled', 'temporary_failure')";

/// Implements [`super::QueueStore`] on the backend `$db` as the type `$store`. The claiming
/// subquery ends with the backend's row lock
/// ([`onionpost_runtime::sql::Dialect::skip_locked`]): PostgreSQL skips rows another worker is
/// claiming; SQLite has one writer at a time, so its single UPDATE statement is already atomic.
macro_rules! store_impl {
    ($store:ident, $db:ty) => {
        use async_trait::async_trait;
        use sqlx::Row as _;

        use onionpost_runtime::sql::{Dialect, split_list};

        use super::sql::{
            AGREEMENT_COLUMNS, CARRY_REQUEST_COLUMNS, MESSAGE_COLUMNS, RECIPIENT_COLUMNS,
            UNFINISHED, join_notify, split_notify,
        };
        use super::{
            AfterRecord, AgreementKey, AgreementRecord, CarryCap, CarryRequestRecord,
            CarryRequestState, Claim, DAY_MS, DsnReturn, HeldRecord,
            ListFilter, MessageRecord, NewMessage, Origin, PageAfter, QueueStore, RecipientRecord,
            RecipientState, RecipientUpdate, Reply, StatsRecord, StoreError, domain_of,
        };

        onionpost_runtime::sql_store!($store, $db);

        impl $store {

            fn message_from_row(
                row: &Row,
                recipients: Vec<RecipientRecord>,
            ) -> Result<MessageRecord, StoreError> {
                Ok(MessageRecord {
                    queue_id: row.try_get("queue_id")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    origin: Origin::parse(&row.try_get::<String, _>("origin")?)?,
                    account_id: row.try_get("account_id")?,
                    sender_identity_id: row.try_get("sender_identity_id")?,
                    reverse_path: row.try_get("reverse_path")?,
                    message_id: row.try_get("message_id")?,
                    envelope_id: row.try_get("envelope_id")?,
                    dsn_return: DsnReturn::parse(&row.try_get::<String, _>("dsn_return")?)?,
                    fan_out_immediately: row.try_get("fan_out_immediately")?,
                    body_digest: row.try_get("body_digest")?,
                    size_bytes: u64::try_from(row.try_get::<i64, _>("size_bytes")?)
                        .map_err(|_| StoreError::Corrupt("negative size".into()))?,
                    held: row.try_get("held")?,
                    enqueued_at_ms: row.try_get("enqueued_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                    recipients,
                })
            }

            fn agreement_from_row(row: &Row) -> Result<AgreementRecord, StoreError> {
                let count = |name: &str| -> Result<u64, StoreError> {
                    u64::try_from(row.try_get::<i64, _>(name)?)
                        .map_err(|_| StoreError::Corrupt(format!("negative {name}")))
                };
                Ok(AgreementRecord {
                    agreement_id: row.try_get("agreement_id")?,
                    address: row.try_get("address")?,
                    fingerprint: row.try_get("fingerprint")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                    revoked_at_ms: row.try_get("revoked_at_ms")?,
                    max_held_bytes: count("max_held_bytes")?,
                    max_messages_per_day: u32::try_from(
                        row.try_get::<i32, _>("max_messages_per_day")?,
                    )
                    .map_err(|_| StoreError::Corrupt("negative max_messages_per_day".into()))?,
                    carrier: row.try_get("carrier")?,
                })
            }

            fn carry_request_from_row(row: &Row) -> Result<CarryRequestRecord, StoreError> {
                Ok(CarryRequestRecord {
                    request_id: row.try_get("request_id")?,
                    onion: row.try_get("onion")?,
                    sealed_statement: row.try_get("statement")?,
                    state: CarryRequestState::parse(&row.try_get::<String, _>("state")?)?,
                    address: row.try_get("address")?,
                    fingerprint: row.try_get("fingerprint")?,
                    kind: row.try_get("kind")?,
                    expires_at_ms: row.try_get("expires_at_ms")?,
                    detail: row.try_get("detail")?,
                    attempts: u32::try_from(row.try_get::<i32, _>("attempts")?)
                        .map_err(|_| StoreError::Corrupt("negative attempts".into()))?,
                    received_at_ms: row.try_get("received_at_ms")?,
                    next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
                    decided_at_ms: row.try_get("decided_at_ms")?,
                    agreement_id: row.try_get("agreement_id")?,
                })
            }

            fn recipient_from_row(row: &Row) -> Result<RecipientRecord, StoreError> {
                let code: Option<i32> = row.try_get("reply_code")?;
                let last_reply = match code {
                    None => None,
                    Some(code) => Some(Reply {
                        code: u32::try_from(code)
                            .map_err(|_| StoreError::Corrupt("negative reply code".into()))?,
                        enhanced_status: row
                            .try_get::<Option<String>, _>("reply_enhanced")?
                            .unwrap_or_default(),
                        text: row
                            .try_get::<Option<String>, _>("reply_text")?
                            .unwrap_or_default(),
                    }),
                };
                Ok(RecipientRecord {
                    idx: row.try_get("idx")?,
                    address: row.try_get("address")?,
                    state: RecipientState::parse(&row.try_get::<String, _>("state")?)?,
                    notify: split_notify(&row.try_get::<String, _>("notify")?)?,
                    original_recipient: row.try_get("orcpt")?,
                    attempts: u32::try_from(row.try_get::<i32, _>("attempts")?)
                        .map_err(|_| StoreError::Corrupt("negative attempts".into()))?,
                    last_attempt_at_ms: row.try_get("last_attempt_at_ms")?,
                    next_attempt_at_ms: row.try_get("next_attempt_at_ms")?,
                    last_reply,
                    handed_to_carriers: split_list(
                        &row.try_get::<String, _>("handed_to_carriers")?,
                    ),
                    claimed_by: row.try_get("claimed_by")?,
                    claimed_until_ms: row.try_get("claimed_until_ms")?,
                })
            }

            async fn recipients_of(
                connection: &mut Connection,
                queue_id: &str,
            ) -> Result<Vec<RecipientRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {RECIPIENT_COLUMNS} FROM recipients WHERE queue_id = ? ORDER BY idx"
                ));
                sqlx::query(&sql)
                    .bind(queue_id)
                    .fetch_all(&mut *connection)
                    .await?
                    .iter()
                    .map(Self::recipient_from_row)
                    .collect()
            }

            async fn message_where(
                connection: &mut Connection,
                column: &str,
                value: &str,
            ) -> Result<Option<MessageRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE {column} = ?"
                ));
                let row = sqlx::query(&sql)
                    .bind(value)
                    .fetch_optional(&mut *connection)
                    .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                let queue_id: String = row.try_get("queue_id")?;
                let recipients = Self::recipients_of(connection, &queue_id).await?;
                Self::message_from_row(&row, recipients).map(Some)
            }

            /// Inserts a message and its recipients; false when the idempotency key is taken.
            async fn insert_message(
                connection: &mut Connection,
                message: &NewMessage,
            ) -> Result<bool, StoreError> {
                let size = i64::try_from(message.size_bytes)
                    .map_err(|_| StoreError::Corrupt("message too large".into()))?;
                let sql = Self::sql(&format!(
                    "INSERT INTO messages ({MESSAGE_COLUMNS}, body) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (idempotency_key) DO NOTHING"
                ));
                let inserted = sqlx::query(&sql)
                    .bind(&message.queue_id)
                    .bind(&message.idempotency_key)
                    .bind(message.origin.as_str())
                    .bind(&message.account_id)
                    .bind(&message.sender_identity_id)
                    .bind(&message.reverse_path)
                    .bind(&message.message_id)
                    .bind(&message.envelope_id)
                    .bind(message.dsn_return.as_str())
                    .bind(message.fan_out_immediately)
                    .bind(&message.body_digest)
                    .bind(size)
                    .bind(false)
                    .bind(message.enqueued_at_ms)
                    .bind(message.expires_at_ms)
                    .bind(&message.sealed_body)
                    .execute(&mut *connection)
                    .await?
                    .rows_affected()
                    == 1;
                if !inserted {
                    return Ok(false);
                }
                let sql = Self::sql(
                    "INSERT INTO recipients (queue_id, idx, address, domain, state, notify, orcpt, \
                     next_attempt_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                );
                for (idx, recipient) in message.recipients.iter().enumerate() {
                    let idx = i32::try_from(idx)
                        .map_err(|_| StoreError::Corrupt("too many recipients".into()))?;
                    sqlx::query(&sql)
                        .bind(&message.queue_id)
                        .bind(idx)
                        .bind(&recipient.address)
                        .bind(domain_of(&recipient.address))
                        .bind(RecipientState::Scheduled.as_str())
                        .bind(join_notify(&recipient.notify))
                        .bind(&recipient.original_recipient)
                        .bind(message.first_attempt_at_ms)
                        .execute(&mut *connection)
                        .await?;
                }
                if message.origin == Origin::Carry {
                    Self::count_intake(connection, message).await?;
                }
                Ok(true)
            }

            /// Counts a carried message against each recipient's daily cap, and forgets the
            /// days before yesterday.
            async fn count_intake(
                connection: &mut Connection,
                message: &NewMessage,
            ) -> Result<(), StoreError> {
                let day = message.enqueued_at_ms.div_euclid(DAY_MS);
                sqlx::query(&Self::sql("DELETE FROM carry_intake WHERE day < ?"))
                    .bind(day - 1)
                    .execute(&mut *connection)
                    .await?;
                let sql = Self::sql(
                    "INSERT INTO carry_intake (address, day, messages) VALUES (?, ?, 1) \
                     ON CONFLICT (address, day) DO UPDATE \
                     SET messages = carry_intake.messages + 1",
                );
                for recipient in &message.recipients {
                    sqlx::query(&sql)
                        .bind(&recipient.address)
                        .bind(day)
                        .execute(&mut *connection)
                        .await?;
                }
                Ok(())
            }

            /// What is held for `address` now and was accepted on `day`.
            async fn held_in(
                connection: &mut Connection,
                address: &str,
                day: i64,
            ) -> Result<HeldRecord, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT COUNT(CASE WHEN r.state IN {UNFINISHED} THEN 1 END) AS messages, \
                     CAST(COALESCE(SUM(CASE WHEN r.state IN {UNFINISHED} THEN m.size_bytes END), 0) \
                        AS BIGINT) AS bytes, \
                     CAST(COALESCE((SELECT messages FROM carry_intake \
                        WHERE address = ? AND day = ?), 0) AS BIGINT) AS recent \
                     FROM recipients r JOIN messages m ON m.queue_id = r.queue_id \
                     WHERE r.address = ? AND m.origin = 'carry'"
                )))
                .bind(address)
                .bind(day)
                .bind(address)
                .fetch_one(&mut *connection)
                .await?;
                let count = |name: &str| -> Result<u64, StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or_default())
                };
                Ok(HeldRecord {
                    messages: count("messages")?,
                    bytes: count("bytes")?,
                    accepted_on_day: count("recent")?,
                })
            }

            async fn delete_rows(
                connection: &mut Connection,
                queue_id: &str,
            ) -> Result<bool, StoreError> {
                sqlx::query(&Self::sql(
                    "DELETE FROM recipients WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .execute(&mut *connection)
                .await?;
                let deleted = sqlx::query(&Self::sql(
                    "DELETE FROM messages WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .execute(&mut *connection)
                .await?
                .rows_affected();
                Ok(deleted == 1)
            }
        }

        #[async_trait]
        impl QueueStore for $store {
            async fn enqueue_within(
                &self,
                message: &NewMessage,
                caps: &[CarryCap],
            ) -> Result<Option<(MessageRecord, bool)>, StoreError> {
                let mut tx = self.pool.begin().await?;
                // The insert counts the message against each recipient's day first: on
                // PostgreSQL that upsert locks the recipient's intake row until commit, so a
                // concurrent acceptance for the same recipient waits here and then sees this
                // one; on SQLite the transaction holds the write lock from its first insert.
                let created = Self::insert_message(&mut tx, message).await?;
                if created {
                    let day = message.enqueued_at_ms.div_euclid(DAY_MS);
                    for cap in caps {
                        let held = Self::held_in(&mut tx, &cap.address, day).await?;
                        if held.bytes > cap.max_held_bytes
                            || held.accepted_on_day > u64::from(cap.max_messages_per_day)
                        {
                            // Dropping the transaction rolls the insert back.
                            return Ok(None);
                        }
                    }
                }
                let stored =
                    Self::message_where(&mut tx, "idempotency_key", &message.idempotency_key)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("enqueued message vanished".into()))?;
                tx.commit().await?;
                Ok(Some((stored, created)))
            }

            async fn enqueue(
                &self,
                message: &NewMessage,
            ) -> Result<(MessageRecord, bool), StoreError> {
                let mut tx = self.pool.begin().await?;
                let created = Self::insert_message(&mut tx, message).await?;
                let stored =
                    Self::message_where(&mut tx, "idempotency_key", &message.idempotency_key)
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("enqueued message vanished".into()))?;
                tx.commit().await?;
                Ok((stored, created))
            }

            async fn get_message(
                &self,
                queue_id: &str,
            ) -> Result<Option<MessageRecord>, StoreError> {
                let mut connection = self.pool.acquire().await?;
                Self::message_where(&mut connection, "queue_id", queue_id).await
            }

            async fn load_body(&self, queue_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
                let row = sqlx::query(&Self::sql(
                    "SELECT body FROM messages WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match row {
                    Some(row) => Some(row.try_get("body")?),
                    None => None,
                })
            }

            async fn list_messages(
                &self,
                filter: &ListFilter,
                after: Option<&PageAfter>,
                limit: u32,
            ) -> Result<Vec<MessageRecord>, StoreError> {
                let sql = Self::sql(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages m WHERE \
                     (CAST(? AS TEXT) = '' OR EXISTS (SELECT 1 FROM recipients r \
                        WHERE r.queue_id = m.queue_id AND r.state = CAST(? AS TEXT))) \
                     AND (CAST(? AS BIGINT) = 0 OR m.held) \
                     AND (CAST(? AS TEXT) = '' OR EXISTS (SELECT 1 FROM recipients r \
                        WHERE r.queue_id = m.queue_id AND (LOWER(r.address) = LOWER(CAST(? AS TEXT)) \
                        OR r.domain = LOWER(CAST(? AS TEXT))))) \
                     AND (CAST(? AS TEXT) = '' OR m.account_id = CAST(? AS TEXT)) \
                     AND (CAST(? AS TEXT) = '' OR m.origin = CAST(? AS TEXT)) \
                     AND m.enqueued_at_ms < CAST(? AS BIGINT) \
                     AND (m.enqueued_at_ms > CAST(? AS BIGINT) \
                        OR (m.enqueued_at_ms = CAST(? AS BIGINT) AND m.queue_id > CAST(? AS TEXT))) \
                     ORDER BY m.enqueued_at_ms, m.queue_id LIMIT CAST(? AS BIGINT)"
                ));
                let state = filter.state.map_or("", RecipientState::as_str);
                let origin = filter.origin.map_or("", Origin::as_str);
                let (after_at, after_id) = after.map_or((i64::MIN, ""), |page| {
                    (page.enqueued_at_ms, page.queue_id.as_str())
                });
                let mut connection = self.pool.acquire().await?;
                let rows = sqlx::query(&sql)
                    .bind(state)
                    .bind(state)
                    .bind(i64::from(filter.held_only))
                    .bind(&filter.recipient)
                    .bind(&filter.recipient)
                    .bind(&filter.recipient)
                    .bind(&filter.account_id)
                    .bind(&filter.account_id)
                    .bind(origin)
                    .bind(origin)
                    .bind(filter.enqueued_before_ms.unwrap_or(i64::MAX))
                    .bind(after_at)
                    .bind(after_at)
                    .bind(after_id)
                    .bind(i64::from(limit))
                    .fetch_all(&mut *connection)
                    .await?;
                let mut messages = Vec::with_capacity(rows.len());
                for row in &rows {
                    let queue_id: String = row.try_get("queue_id")?;
                    let recipients = Self::recipients_of(&mut connection, &queue_id).await?;
                    messages.push(Self::message_from_row(row, recipients)?);
                }
                Ok(messages)
            }

            async fn retry_now(&self, queue_id: &str, now_ms: i64) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let exists = sqlx::query(&Self::sql(
                    "SELECT queue_id FROM messages WHERE queue_id = ?",
                ))
                .bind(queue_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
                sqlx::query(&Self::sql(&format!(
                    "UPDATE recipients SET next_attempt_at_ms = ? \
                     WHERE queue_id = ? AND state IN {UNFINISHED}"
                )))
                .bind(now_ms)
                .bind(queue_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(exists)
            }

            async fn set_held(&self, queue_id: &str, held: bool) -> Result<bool, StoreError> {
                let changed = sqlx::query(&Self::sql(
                    "UPDATE messages SET held = ? WHERE queue_id = ?",
                ))
                .bind(held)
                .bind(queue_id)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(changed == 1)
            }

            async fn delete_message(
                &self,
                queue_id: &str,
                dsn: Option<&NewMessage>,
            ) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await?;
                let deleted = Self::delete_rows(&mut tx, queue_id).await?;
                if deleted && let Some(dsn) = dsn {
                    Self::insert_message(&mut tx, dsn).await?;
                }
                tx.commit().await?;
                Ok(deleted)
            }

            async fn stats(
                &self,
                now_ms: i64,
                age_bounds_ms: &[i64],
            ) -> Result<StatsRecord, StoreError> {
                let mut connection = self.pool.acquire().await?;
                let mut stats = StatsRecord::default();
                let rows = sqlx::query(
                    "SELECT state, COUNT(*) AS recipients FROM recipients GROUP BY state",
                )
                .fetch_all(&mut *connection)
                .await?;
                for row in &rows {
                    let state = RecipientState::parse(&row.try_get::<String, _>("state")?)?;
                    let count = row.try_get::<i64, _>("recipients")?;
                    stats.by_state.push((state, u64::try_from(count).unwrap_or_default()));
                }
                let row = sqlx::query(
                    "SELECT COUNT(*) AS messages, COUNT(CASE WHEN held THEN 1 END) AS held, \
                     CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes, \
                     MIN(enqueued_at_ms) AS oldest FROM messages",
                )
                .fetch_one(&mut *connection)
                .await?;
                let count = |name: &str| -> Result<u64, StoreError> {
                    Ok(u64::try_from(row.try_get::<i64, _>(name)?).unwrap_or_default())
                };
                stats.messages = count("messages")?;
                stats.held_messages = count("held")?;
                stats.stored_bytes = count("bytes")?;
                stats.oldest_enqueued_at_ms = row.try_get("oldest")?;
                let sql = Self::sql("SELECT COUNT(*) AS n FROM messages WHERE enqueued_at_ms >= ?");
                for bound in age_bounds_ms {
                    let row = sqlx::query(&sql)
                        .bind(now_ms.saturating_sub(*bound))
                        .fetch_one(&mut *connection)
                        .await?;
                    stats
                        .enqueued_within
                        .push(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or_default());
                }
                stats.enqueued_within.push(stats.messages);
                Ok(stats)
            }

            async fn flush_domain(&self, domain: &str, now_ms: i64) -> Result<u64, StoreError> {
                Ok(sqlx::query(&Self::sql(&format!(
                    "UPDATE recipients SET next_attempt_at_ms = ? \
                     WHERE domain = ? AND state IN {UNFINISHED}"
                )))
                .bind(now_ms)
                .bind(domain.to_ascii_lowercase())
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn claim_due(
                &self,
                worker: &str,
                now_ms: i64,
                lease_until_ms: i64,
                limit: u32,
            ) -> Result<Vec<Claim>, StoreError> {
                // The CTE's columns are renamed so that neither backend finds `queue_id`
                // ambiguous between the CTE and the updated table.
                let sql = Self::sql(&format!(
                    "WITH due AS (SELECT r.queue_id AS due_queue_id, r.idx AS due_idx \
                        FROM recipients r JOIN messages m ON m.queue_id = r.queue_id \
                        WHERE r.state IN {UNFINISHED} AND r.next_attempt_at_ms <= ? \
                        AND NOT m.held \
                        AND (r.claimed_until_ms IS NULL OR r.claimed_until_ms <= ?) \
                        ORDER BY r.next_attempt_at_ms, r.queue_id, r.idx LIMIT ? {lock}) \
                     UPDATE recipients SET claimed_by = ?, claimed_until_ms = ? FROM due \
                     WHERE queue_id = due_queue_id AND idx = due_idx \
                     RETURNING queue_id, idx",
                    lock = <$db as Dialect>::skip_locked("r")
                ));
                let rows = sqlx::query(&sql)
                    .bind(now_ms)
                    .bind(now_ms)
                    .bind(i64::from(limit))
                    .bind(worker)
                    .bind(lease_until_ms)
                    .fetch_all(&self.pool)
                    .await?;
                let mut claims = rows
                    .iter()
                    .map(|row| {
                        Ok(Claim {
                            queue_id: row.try_get("queue_id")?,
                            idx: row.try_get("idx")?,
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()?;
                claims.sort();
                Ok(claims)
            }

            async fn renew_leases(
                &self,
                worker: &str,
                now_ms: i64,
                lease_until_ms: i64,
            ) -> Result<u64, StoreError> {
                Ok(sqlx::query(&Self::sql(
                    "UPDATE recipients SET claimed_until_ms = ? \
                     WHERE claimed_by = ? AND claimed_until_ms > ?",
                ))
                .bind(lease_until_ms)
                .bind(worker)
                .bind(now_ms)
                .execute(&self.pool)
                .await?
                .rows_affected())
            }

            async fn record(
                &self,
                worker: &str,
                queue_id: &str,
                updates: &[RecipientUpdate],
                dsn: Option<&NewMessage>,
            ) -> Result<AfterRecord, StoreError> {
                let mut tx = self.pool.begin().await?;
                let sql = Self::sql(
                    "UPDATE recipients SET state = ?, attempts = attempts + ?, \
                     last_attempt_at_ms = COALESCE(?, last_attempt_at_ms), \
                     next_attempt_at_ms = ?, \
                     reply_code = COALESCE(?, reply_code), \
                     reply_enhanced = COALESCE(?, reply_enhanced), \
                     reply_text = COALESCE(?, reply_text), \
                     claimed_by = NULL, claimed_until_ms = NULL \
                     WHERE queue_id = ? AND idx = ? AND claimed_by = ?",
                );
                for update in updates {
                    let reply = update.reply.as_ref();
                    sqlx::query(&sql)
                        .bind(update.state.as_str())
                        .bind(i32::from(update.attempted))
                        .bind(update.attempted.then_some(update.attempted_at_ms))
                        .bind(update.next_attempt_at_ms)
                        .bind(reply.map(|reply| i32::try_from(reply.code).unwrap_or(i32::MAX)))
                        .bind(reply.map(|reply| reply.enhanced_status.clone()))
                        .bind(reply.map(|reply| reply.text.clone()))
                        .bind(queue_id)
                        .bind(update.idx)
                        .bind(worker)
                        .execute(&mut *tx)
                        .await?;
                }
                if let Some(dsn) = dsn {
                    Self::insert_message(&mut tx, dsn).await?;
                }
                let unfinished: i64 = sqlx::query(&Self::sql(&format!(
                    "SELECT COUNT(*) AS n FROM recipients WHERE queue_id = ? AND state IN {UNFINISHED}"
                )))
                .bind(queue_id)
                .fetch_one(&mut *tx)
                .await?
                .try_get("n")?;
                let after = if unfinished == 0 {
                    Self::delete_rows(&mut tx, queue_id).await?;
                    AfterRecord::Finished
                } else {
                    AfterRecord::Pending
                };
                tx.commit().await?;
                Ok(after)
            }

            async fn next_wake(&self) -> Result<Option<i64>, StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT MIN(CASE WHEN r.claimed_until_ms IS NOT NULL \
                        AND r.claimed_until_ms > r.next_attempt_at_ms \
                        THEN r.claimed_until_ms ELSE r.next_attempt_at_ms END) AS wake \
                     FROM recipients r JOIN messages m ON m.queue_id = r.queue_id \
                     WHERE r.state IN {UNFINISHED} AND NOT m.held"
                ))
                .fetch_one(&self.pool)
                .await?;
                Ok(row.try_get("wake")?)
            }

            async fn note_handed(
                &self,
                queue_id: &str,
                idx: i32,
                carrier: &str,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(
                    "UPDATE recipients SET handed_to_carriers = CASE \
                        WHEN handed_to_carriers = '' THEN CAST(? AS TEXT) \
                        ELSE handed_to_carriers || ',' || CAST(? AS TEXT) END \
                     WHERE queue_id = ? AND idx = ?",
                ))
                .bind(carrier)
                .bind(carrier)
                .bind(queue_id)
                .bind(idx)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn add_agreement(&self, agreement: &AgreementRecord) -> Result<(), StoreError> {
                let cap = |value: u64| {
                    i64::try_from(value).map_err(|_| StoreError::Corrupt("cap too large".into()))
                };
                let mut tx = self.pool.begin().await?;
                sqlx::query(&Self::sql(
                    "UPDATE carry_agreements SET revoked_at_ms = ? \
                     WHERE address = ? AND revoked_at_ms IS NULL",
                ))
                .bind(agreement.created_at_ms)
                .bind(&agreement.address)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO carry_agreements ({AGREEMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )))
                .bind(&agreement.agreement_id)
                .bind(&agreement.address)
                .bind(&agreement.fingerprint)
                .bind(agreement.created_at_ms)
                .bind(agreement.expires_at_ms)
                .bind(agreement.revoked_at_ms)
                .bind(cap(agreement.max_held_bytes)?)
                .bind(i32::try_from(agreement.max_messages_per_day).unwrap_or(i32::MAX))
                .bind(&agreement.carrier)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn active_agreement(
                &self,
                address: &str,
                now_ms: i64,
            ) -> Result<Option<AgreementRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {AGREEMENT_COLUMNS} FROM carry_agreements \
                     WHERE address = ? AND revoked_at_ms IS NULL \
                     AND (expires_at_ms IS NULL OR expires_at_ms > ?) \
                     ORDER BY created_at_ms DESC, agreement_id DESC LIMIT 1"
                )))
                .bind(address)
                .bind(now_ms)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::agreement_from_row).transpose()
            }

            async fn list_agreements(
                &self,
                include_ended: bool,
                now_ms: i64,
                after: &str,
                limit: u32,
            ) -> Result<Vec<AgreementRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {AGREEMENT_COLUMNS} FROM carry_agreements \
                     WHERE agreement_id > ? AND (CAST(? AS BIGINT) = 1 OR \
                        (revoked_at_ms IS NULL AND (expires_at_ms IS NULL OR expires_at_ms > ?))) \
                     ORDER BY agreement_id LIMIT CAST(? AS BIGINT)"
                )))
                .bind(after)
                .bind(i64::from(include_ended))
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::agreement_from_row).collect()
            }

            async fn revoke_agreement(
                &self,
                key: &AgreementKey,
                now_ms: i64,
            ) -> Result<Vec<AgreementRecord>, StoreError> {
                let (column, value) = match key {
                    AgreementKey::Id(id) => ("agreement_id", id.as_str()),
                    AgreementKey::Address(address) => ("address", address.as_str()),
                };
                let mut tx = self.pool.begin().await?;
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {AGREEMENT_COLUMNS} FROM carry_agreements \
                     WHERE {column} = ? AND revoked_at_ms IS NULL"
                )))
                .bind(value)
                .fetch_all(&mut *tx)
                .await?;
                sqlx::query(&Self::sql(&format!(
                    "UPDATE carry_agreements SET revoked_at_ms = ? \
                     WHERE {column} = ? AND revoked_at_ms IS NULL"
                )))
                .bind(now_ms)
                .bind(value)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                let mut ended = Vec::with_capacity(rows.len());
                for row in &rows {
                    let mut agreement = Self::agreement_from_row(row)?;
                    agreement.revoked_at_ms = Some(now_ms);
                    ended.push(agreement);
                }
                Ok(ended)
            }

            async fn insert_carry_request(
                &self,
                request: &CarryRequestRecord,
            ) -> Result<(), StoreError> {
                sqlx::query(&Self::sql(&format!(
                    "INSERT INTO carry_requests ({CARRY_REQUEST_COLUMNS}) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                )))
                .bind(&request.request_id)
                .bind(&request.onion)
                .bind(&request.sealed_statement)
                .bind(request.state.as_str())
                .bind(&request.address)
                .bind(&request.fingerprint)
                .bind(&request.kind)
                .bind(request.expires_at_ms)
                .bind(&request.detail)
                .bind(i32::try_from(request.attempts).unwrap_or(i32::MAX))
                .bind(request.received_at_ms)
                .bind(request.next_attempt_at_ms)
                .bind(request.decided_at_ms)
                .bind(&request.agreement_id)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn carry_request(
                &self,
                request_id: &str,
            ) -> Result<Option<CarryRequestRecord>, StoreError> {
                let row = sqlx::query(&Self::sql(&format!(
                    "SELECT {CARRY_REQUEST_COLUMNS} FROM carry_requests WHERE request_id = ?"
                )))
                .bind(request_id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(Self::carry_request_from_row).transpose()
            }

            async fn due_carry_requests(
                &self,
                now_ms: i64,
                limit: u32,
            ) -> Result<Vec<CarryRequestRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {CARRY_REQUEST_COLUMNS} FROM carry_requests \
                     WHERE state = 'verifying' AND next_attempt_at_ms <= ? \
                     ORDER BY next_attempt_at_ms, request_id LIMIT CAST(? AS BIGINT)"
                )))
                .bind(now_ms)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::carry_request_from_row).collect()
            }

            async fn claim_carry_request(
                &self,
                request_id: &str,
                attempts: u32,
                lease_until_ms: i64,
            ) -> Result<bool, StoreError> {
                let taken = sqlx::query(&Self::sql(
                    "UPDATE carry_requests SET attempts = attempts + 1, next_attempt_at_ms = ? \
                     WHERE request_id = ? AND state = 'verifying' AND attempts = ?",
                ))
                .bind(lease_until_ms)
                .bind(request_id)
                .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(taken == 1)
            }

            async fn update_carry_request(
                &self,
                request: &CarryRequestRecord,
                only_in: Option<CarryRequestState>,
            ) -> Result<bool, StoreError> {
                let updated = sqlx::query(&Self::sql(
                    "UPDATE carry_requests SET state = ?, address = ?, fingerprint = ?, kind = ?, \
                     expires_at_ms = ?, detail = ?, next_attempt_at_ms = ?, decided_at_ms = ?, \
                     agreement_id = ? \
                     WHERE request_id = ? AND (CAST(? AS TEXT) = '' OR state = ?)",
                ))
                .bind(request.state.as_str())
                .bind(&request.address)
                .bind(&request.fingerprint)
                .bind(&request.kind)
                .bind(request.expires_at_ms)
                .bind(&request.detail)
                .bind(request.next_attempt_at_ms)
                .bind(request.decided_at_ms)
                .bind(&request.agreement_id)
                .bind(&request.request_id)
                .bind(only_in.map_or("", CarryRequestState::as_str))
                .bind(only_in.map_or("", CarryRequestState::as_str))
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(updated == 1)
            }

            async fn list_carry_requests(
                &self,
                state: Option<CarryRequestState>,
                after: &str,
                limit: u32,
            ) -> Result<Vec<CarryRequestRecord>, StoreError> {
                let rows = sqlx::query(&Self::sql(&format!(
                    "SELECT {CARRY_REQUEST_COLUMNS} FROM carry_requests \
                     WHERE request_id > ? AND (CAST(? AS TEXT) = '' OR state = ?) \
                     ORDER BY request_id LIMIT CAST(? AS BIGINT)"
                )))
                .bind(after)
                .bind(state.map_or("", CarryRequestState::as_str))
                .bind(state.map_or("", CarryRequestState::as_str))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(Self::carry_request_from_row).collect()
            }

            async fn held_for(&self, address: &str, day: i64) -> Result<HeldRecord, StoreError> {
                let mut connection = self.pool.acquire().await?;
                Self::held_in(&mut connection, address, day).await
            }
        }
    };
}

pub(super) use store_impl;
