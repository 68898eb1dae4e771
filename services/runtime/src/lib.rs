//! The plumbing every onionpost service shares, and nothing of any one service's domain.
//!
//! - [`config`]: one TOML file, every key overridable by `ONIONPOST_…` environment variables,
//!   validated into types with one clear error naming the bad key.
//! - [`telemetry`]: logs (pretty or JSON), OpenTelemetry span export over OTLP, trace context
//!   across gRPC, Prometheus metrics.
//! - [`grpc`]: the one client transport for local and remote services, and the tracing layers;
//!   [`status`]: what a gRPC status from another service means to the caller.
//! - [`service`]: services as modules started in dependency order, gRPC serving with health and
//!   reflection, graceful shutdown with a drain timeout.
//! - [`onions`]: following identities' onions (WatchOnions) and keeping a listener on each
//!   onion's target port; [`backoff`]: retry pauses with jitter.
//! - [`time`]: milliseconds, protobuf timestamps and the injected [`time::Clock`].
//! - [`db`]: SQLite (one file per service) or PostgreSQL (one schema per service) with
//!   migrations; [`conformance`] runs one store test suite against both.
//! - [`files`]: files created once on first start, atomically (the secret, a DKIM key).
//! - [`http_api`]: what the HTTP APIs share (problem documents, bodies read so that a refusal
//!   names the field).
//! - [`sql`]: the one SQL dialect stores are written in (placeholders, row locks, erasing a
//!   secret) and the one shape of a store ([`sql_store!`]).
//! - [`address_book`]: address-book entries as the admin API and the account portal show them.
//! - [`stamp`]: the proof-of-work stamps strangers pay with: minted by smtp-out, checked by
//!   smtp-in.

pub mod address_book;
pub mod backoff;
pub mod carry_mail;
pub mod config;
pub mod conformance;
pub mod db;
pub mod files;
pub mod grpc;
pub mod grpc_tls;
pub mod http_api;
pub mod onions;
pub mod rate;
pub mod seal;
pub mod service;
pub mod sql;
pub mod stamp;
pub mod status;
pub mod telemetry;
pub mod time;
pub mod tls;

pub use config::Config;
pub use db::{Database, Migrations};
pub use grpc::{Directory, Transport};
pub use service::{Module, ServiceContext, Started};
