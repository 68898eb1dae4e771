//! The identities' onion services as the carrier sees them: the in-memory registry of every
//! live onion (its stored row, its state, its last error), the operations of the contract
//! (create, import, revoke, export, list, watch), and what happens when tor comes and goes.
//!
//! The store is the source of truth for which onions exist; tor holds them only while the
//! service's control connection lives (ADD_ONION without `Detach`). Whenever a connection is
//! (re-)established, [`Onions::on_connected`] adds every live onion again with its stored key,
//! so neither a tor restart nor a service restart needs an operator. States follow tor's
//! HS_DESC events: PUBLISHING once added, ONLINE at the first successful descriptor upload,
//! FAILED while tor is away or an upload has not succeeded for too long (tor keeps trying, and
//! so do we), REVOKED when the key is destroyed.
//!
//! A carrier may run a pool of tors (one tor carries a few hundred onions well; issue 24).
//! Each identity is *placed* on one tor, the least loaded with room (`tor.max_onions_per_tor`),
//! and the placement is stored. A tor away for longer than `tor.failover_secs` has its onions
//! published by the others (a *stand-in* each, again by load); when it returns they move back.
//! A move takes the onion off the old tor before adding it to the new one, so no onion is ever
//! published by two tors at once; and each onion moves at a moment drawn for it alone, like
//! every restore. At start, placements are rebalanced: rows from before pools, rows on a tor
//! no longer configured, and tors above their share give onions to tors below it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use onionpost_proto::onion::v1::{OnionService, OnionState, TorInstance, TorStatus};
use onionpost_runtime::backoff::random_within;
use onionpost_runtime::seal::Sealer;
use onionpost_runtime::time::now_ms;
use onionpost_runtime::time::timestamp as timestamp_ms;
use tokio::sync::{broadcast, watch};
use zeroize::Zeroizing;

use crate::control::{AddOnion, ControlConnection, ControlError, HsDescEvent, OnionKey};
use crate::error::OnionError;
use crate::ports::{PortPlan, Purpose};
use crate::store::{OnionStore, StoreError, StoredOnion};

/// How long an onion may stay PUBLISHING before it is reported FAILED. tor keeps uploading on
/// its own; the state only tells operators that peers cannot reach the identity yet.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(180);
/// Length of an expanded ED25519-V3 secret key (tor's key blob, decoded).
pub const SECRET_KEY_LEN: usize = 64;
/// Longest identity id accepted; ids are opaque to this service.
const MAX_IDENTITY_ID: usize = 128;
/// The first tor whose ADD_ONION takes `PoWDefensesEnabled` (tor commit 02c18044, 0.4.9.2-alpha).
pub const POW_ADD_ONION_SINCE: [u32; 4] = [0, 4, 9, 2];
/// The least time between two onions added to tor. Each new onion makes tor build about five
/// circuits at once (intro points, descriptor uploads); 200 added within a second overran
/// tor's 32 pending client circuits and its circuit-build-timeout learning on the test
/// network, and publication stalled for minutes. Spaced out, they publish in seconds, and a
/// single CreateOnion is not delayed at all.
const ADD_SPACING: Duration = Duration::from_millis(100);
/// Streams one rendezvous circuit may open to an identity's onion before tor closes the
/// circuit (issue 18: one circuit must not fill an identity's session limit, let alone the
/// carrier's). A mail client opens a handful; a carrier's smtp-out at most two per
/// destination.
const MAX_STREAMS_PER_CIRCUIT: u16 = 32;
/// Changes buffered per watcher before it falls behind and is sent a fresh snapshot.
const WATCH_BUFFER: usize = 4096;

/// One live onion in memory.
#[derive(Debug, Clone)]
struct Live {
    stored: StoredOnion,
    state: OnionState,
    last_error: String,
    state_changed_at: SystemTime,
    last_published_at: Option<SystemTime>,
    /// When it was last added to tor, while no upload has succeeded since; for the publish
    /// time metric and the publish timeout.
    publishing_since: Option<Instant>,
    /// Which tor of the pool holds it, on that tor's current connection.
    on: Option<usize>,
    /// The tor it is placed on (stored).
    home: usize,
    /// The tor that publishes it while its home has been away longer than the failover time.
    stand_in: Option<usize>,
    /// When it is to be added back to tor, drawn for this onion alone (`random_within`).
    restore_at: Option<Instant>,
    pow_defense: bool,
}

/// The live onions, by identity and by service id.
#[derive(Debug, Default)]
struct Registry {
    by_identity: BTreeMap<String, Live>,
    by_service: HashMap<String, String>,
}

/// One tor of the pool as seen through its control connection, for placement and
/// GetTorStatus.
#[derive(Debug, Default)]
struct TorView {
    control: Option<ControlConnection>,
    /// Since when it has been away; from load until its first connection too, so a tor that
    /// never comes fails over like one that died.
    away_since: Option<Instant>,
    connected_since: Option<SystemTime>,
    tor_version: String,
    bootstrap_percent: u32,
    pow_supported: bool,
    last_error: String,
    failed_attempts: u64,
    socks: Option<String>,
}

/// How identities are spread over the carrier's tors and brought back to them.
#[derive(Debug, Clone)]
pub struct Placement {
    /// One name per tor of the pool, in configured order (its control address, or `child N`).
    pub tors: Vec<String>,
    /// Onions one tor publishes at most (0: no limit).
    pub max_per_tor: u32,
    /// How long a tor may be away before its onions are published on the others.
    pub failover: Duration,
    /// Window within which each missing onion is added back, at a moment drawn for it alone.
    pub restore_spread: Duration,
}

impl Placement {
    /// One tor without a limit: every carrier before pools.
    pub fn single(name: &str, restore_spread: Duration) -> Placement {
        Placement {
            tors: vec![name.to_owned()],
            max_per_tor: 0,
            failover: Duration::from_secs(30),
            restore_spread,
        }
    }
}

/// Which tor should publish an onion now: its home while that tor is connected, else its
/// stand-in while that one is.
fn wanted(live: &Live, usable: &[bool]) -> Option<usize> {
    let up = |tor: usize| usable.get(tor).copied().unwrap_or(false);
    if up(live.home) {
        return Some(live.home);
    }
    live.stand_in.filter(|tor| up(*tor))
}

/// How many onions each tor publishes now or is about to.
fn loads<'a>(lives: impl Iterator<Item = &'a Live>, usable: &[bool]) -> Vec<u32> {
    let mut loads = vec![0; usable.len()];
    for live in lives {
        if let Some(tor) = wanted(live, usable).or(live.on) {
            loads[tor] += 1;
        }
    }
    loads
}

/// The connected tor with the fewest onions and room for one more (the first of equals).
fn least_loaded(loads: &[u32], usable: &[bool], max_per_tor: u32) -> Option<usize> {
    (0..loads.len())
        .filter(|tor| usable[*tor] && (max_per_tor == 0 || loads[*tor] < max_per_tor))
        .min_by_key(|tor| loads[*tor])
}

/// Placements at start, given each identity's stored tor (in identity order): identities
/// without one, or on a tor no longer configured, are placed; a tor above its share (the
/// limit, or an even split without one) gives its last identities to the tors below it.
/// Returns the identities whose tor changed, with the new one.
fn rebalance(stored: &[Option<u32>], tors: usize, max_per_tor: u32) -> Vec<(usize, usize)> {
    if tors == 0 {
        return Vec::new();
    }
    let share = if max_per_tor > 0 {
        max_per_tor as usize
    } else {
        stored.len().div_ceil(tors)
    };
    let mut counts = vec![0_usize; tors];
    let mut unplaced = Vec::new();
    for (row, tor) in stored.iter().enumerate() {
        match tor.map(|tor| tor as usize).filter(|tor| *tor < tors) {
            Some(tor) if counts[tor] < share => counts[tor] += 1,
            _ => unplaced.push(row),
        }
    }
    let mut changed = Vec::new();
    for row in unplaced {
        let tor = (0..tors).min_by_key(|tor| counts[*tor]).unwrap_or(0);
        counts[tor] += 1;
        if stored[row] != Some(tor as u32) {
            changed.push((row, tor));
        }
    }
    changed
}

impl TorView {
    /// Whether its control connection is up.
    fn is_connected(&self) -> bool {
        self.control
            .as_ref()
            .is_some_and(|control| !control.is_closed())
    }
}

/// The onion service's state and operations; shared by the gRPC adapter and the supervisor.
pub struct Onions {
    store: Arc<dyn OnionStore>,
    sealer: Sealer,
    plan: PortPlan,
    /// `tor.socks` when configured; it wins over what tor reports.
    configured_socks: Option<String>,
    registry: Mutex<Registry>,
    /// The pool, in configured order (one tor in most carriers).
    tors: Mutex<Vec<TorView>>,
    /// Each tor's name, in the same order.
    tor_names: Vec<String>,
    max_per_tor: u32,
    failover: Duration,
    /// Serialises create, import and revoke: slot allocation and the idempotency checks
    /// read the registry and write the store as one step.
    changing: tokio::sync::Mutex<()>,
    changes: broadcast::Sender<OnionService>,
    connected: watch::Sender<bool>,
    /// When the next ADD_ONION may go out to each tor (see [`ADD_SPACING`]).
    next_add: Vec<tokio::sync::Mutex<Instant>>,
    /// Window within which each missing onion is added back (`tor.restore_spread_secs`).
    restore_spread: Duration,
    /// How long a revoked identity's onion stays to serve its revocation
    /// (`tor.revocation_serve_secs`).
    revocation_serve: Duration,
    /// Wakes the retirement task when a retirement is scheduled.
    retirements: tokio::sync::Notify,
}

impl std::fmt::Debug for Onions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Onions").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

fn internal(what: &str) -> impl FnOnce(StoreError) -> OnionError + '_ {
    move |error| {
        tracing::error!(%error, "onion store: {what}");
        OnionError::Internal
    }
}

/// The tor a stored onion is placed on (rows are placed at load, so `None` does not stay).
fn stored_home(stored: &StoredOnion) -> usize {
    stored.tor.map_or(0, |tor| tor as usize)
}

/// Checks an identity id: opaque, but printable, without white space, and not too long.
fn check_identity_id(identity_id: &str) -> Result<(), OnionError> {
    let valid = !identity_id.is_empty()
        && identity_id.len() <= MAX_IDENTITY_ID
        && identity_id
            .chars()
            .all(|character| character.is_ascii_graphic());
    if valid {
        Ok(())
    } else {
        Err(OnionError::InvalidArgument(format!(
            "identity_id must be 1 to {MAX_IDENTITY_ID} printable ASCII characters without spaces"
        )))
    }
}

impl Onions {
    /// Loads every live onion from the store. Until tor is connected they are PUBLISHING.
    pub async fn load(
        store: Arc<dyn OnionStore>,
        sealer: Sealer,
        plan: PortPlan,
        configured_socks: Option<String>,
        placement: Placement,
        revocation_serve: Duration,
    ) -> Result<Arc<Onions>, StoreError> {
        let mut registry = Registry::default();
        let now = SystemTime::now();
        let mut rows = store.live().await?;
        let homes: Vec<Option<u32>> = rows.iter().map(|row| row.tor).collect();
        let changed = rebalance(&homes, placement.tors.len(), placement.max_per_tor);
        for (row, tor) in &changed {
            let tor = u32::try_from(*tor).unwrap_or(u32::MAX);
            store.place(&rows[*row].identity_id, tor).await?;
            rows[*row].tor = Some(tor);
        }
        if !changed.is_empty() {
            tracing::info!(
                placed = changed.len(),
                tors = placement.tors.len(),
                "onions placed on the tors of the pool"
            );
        }
        for stored in rows {
            registry
                .by_service
                .insert(stored.service_id.clone(), stored.identity_id.clone());
            registry.by_identity.insert(
                stored.identity_id.clone(),
                Live {
                    state: OnionState::Publishing,
                    last_error: String::new(),
                    state_changed_at: now,
                    last_published_at: None,
                    publishing_since: None,
                    on: None,
                    home: stored_home(&stored),
                    stand_in: None,
                    restore_at: None,
                    pow_defense: false,
                    stored,
                },
            );
        }
        tracing::info!(onions = registry.by_identity.len(), "onions loaded");
        let (changes, _) = broadcast::channel(WATCH_BUFFER);
        let (connected, _) = watch::channel(false);
        let onions = Arc::new(Onions {
            store,
            sealer,
            plan,
            configured_socks,
            registry: Mutex::new(registry),
            tors: Mutex::new(
                placement
                    .tors
                    .iter()
                    .map(|_| TorView {
                        away_since: Some(Instant::now()),
                        ..TorView::default()
                    })
                    .collect(),
            ),
            next_add: placement
                .tors
                .iter()
                .map(|_| tokio::sync::Mutex::new(Instant::now()))
                .collect(),
            tor_names: placement.tors,
            max_per_tor: placement.max_per_tor,
            failover: placement.failover,
            changing: tokio::sync::Mutex::new(()),
            changes,
            connected,
            restore_spread: placement.restore_spread,
            revocation_serve,
            retirements: tokio::sync::Notify::new(),
        });
        onions.record_state_metrics();
        Ok(onions)
    }

    /// Follows whether the control connection is up (for gRPC health).
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    fn describe(&self, live: &Live) -> OnionService {
        // A retiring onion is published like any other; to everyone else it is on its way out.
        let state = if live.stored.retire_at_ms.is_some() {
            OnionState::Retiring
        } else {
            live.state
        };
        OnionService {
            identity_id: live.stored.identity_id.clone(),
            onion_address: format!("{}.onion", live.stored.service_id),
            state: state as i32,
            retire_at: live.stored.retire_at_ms.map(timestamp_ms),
            ports: live
                .stored
                .slot
                .map(|slot| self.plan.mappings(slot, &live.stored.purposes))
                .unwrap_or_default(),
            pow_defense_enabled: live.pow_defense,
            created_at: Some(timestamp_ms(live.stored.created_at_ms)),
            state_changed_at: Some(timestamp(live.state_changed_at)),
            last_published_at: live.last_published_at.map(timestamp),
            last_error: live.last_error.clone(),
            tor: live
                .on
                .and_then(|tor| self.tor_names.get(tor).cloned())
                .unwrap_or_default(),
        }
    }

    fn describe_revoked(stored: &StoredOnion) -> OnionService {
        OnionService {
            identity_id: stored.identity_id.clone(),
            onion_address: format!("{}.onion", stored.service_id),
            state: OnionState::Revoked as i32,
            ports: Vec::new(),
            pow_defense_enabled: false,
            created_at: Some(timestamp_ms(stored.created_at_ms)),
            state_changed_at: stored.revoked_at_ms.map(timestamp_ms),
            last_published_at: None,
            last_error: String::new(),
            retire_at: None,
            tor: String::new(),
        }
    }

    /// Changes a live onion's state (and error) and tells watchers. Returns whether it changed.
    fn set_state(&self, live: &mut Live, state: OnionState, error: &str) -> bool {
        if live.state == state && live.last_error == error {
            return false;
        }
        if live.state != state {
            live.state_changed_at = SystemTime::now();
        }
        live.state = state;
        live.last_error = error.to_owned();
        let _ = self.changes.send(self.describe(live));
        true
    }

    fn record_state_metrics(&self) {
        let registry = lock(&self.registry);
        let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
        for state in [
            OnionState::Publishing,
            OnionState::Online,
            OnionState::Failed,
        ] {
            counts.insert(state.as_str_name(), 0);
        }
        for live in registry.by_identity.values() {
            *counts.entry(live.state.as_str_name()).or_default() += 1;
        }
        for (state, count) in counts {
            metrics::gauge!("onionpost_onion_identities", "state" => state).set(f64::from(count));
        }
    }

    /// Tor `tor`'s control connection while it is up.
    fn control_of(&self, tor: usize) -> Option<ControlConnection> {
        lock(&self.tors)
            .get(tor)
            .and_then(|view| view.control.clone())
            .filter(|control| !control.is_closed())
    }

    /// Which tors of the pool are connected now.
    fn usable(&self) -> Vec<bool> {
        lock(&self.tors)
            .iter()
            .map(|view| view.is_connected())
            .collect()
    }

    /// Why no tor can take a request: the first tor's error that has one.
    fn unavailable(&self) -> OnionError {
        let tors = lock(&self.tors);
        let reason = tors
            .iter()
            .zip(&self.tor_names)
            .find(|(view, _)| !view.last_error.is_empty())
            .map(|(view, name)| match self.tor_names.len() {
                1 => view.last_error.clone(),
                _ => format!("{name}: {}", view.last_error),
            });
        OnionError::TorUnavailable(
            reason.unwrap_or_else(|| "not connected to tor's control port yet".to_owned()),
        )
    }

    /// The tor a new identity goes to: the connected one with the fewest onions and room.
    fn place_new(&self) -> Result<(usize, ControlConnection), OnionError> {
        let usable = self.usable();
        if !usable.contains(&true) {
            return Err(self.unavailable());
        }
        let loads = loads(lock(&self.registry).by_identity.values(), &usable);
        let tor = least_loaded(&loads, &usable, self.max_per_tor)
            .ok_or(OnionError::PoolFull(self.max_per_tor))?;
        let control = self.control_of(tor).ok_or_else(|| self.unavailable())?;
        Ok((tor, control))
    }

    fn pow_supported(&self, tor: usize) -> bool {
        lock(&self.tors)
            .get(tor)
            .is_some_and(|view| view.pow_supported)
    }

    /// How a state message names a tor: by name only in a pool.
    fn tor_label(&self, tor: usize) -> String {
        match (self.tor_names.len(), self.tor_names.get(tor)) {
            (2.., Some(name)) => format!("tor {name}"),
            _ => "tor".to_owned(),
        }
    }

    /// Adds an onion to tor, with the PoW defence where this tor takes it. A tor that refuses
    /// the PoW keyword (older than 0.4.9.2, or built without the `pow` module) gets the onion
    /// without it, and is remembered as lacking it.
    async fn add_to_tor(
        &self,
        tor: usize,
        control: &ControlConnection,
        key: OnionKey<'_>,
        ports: Vec<(u16, String)>,
    ) -> Result<(crate::control::AddedOnion, bool), ControlError> {
        if let Some(next_add) = self.next_add.get(tor) {
            let mut next_add = next_add.lock().await;
            tokio::time::sleep_until((*next_add).into()).await;
            *next_add = Instant::now() + ADD_SPACING;
        }
        let with_pow = self.pow_supported(tor);
        let request = AddOnion {
            key,
            ports,
            pow_defense: with_pow,
            max_streams: MAX_STREAMS_PER_CIRCUIT,
        };
        match control.add_onion(&request).await {
            Ok(added) => Ok((added, with_pow)),
            Err(ControlError::Refused { code, text, .. })
                if with_pow && (code == 512 || code == 513 || text.contains("PoW")) =>
            {
                tracing::warn!(
                    code,
                    reply = %text,
                    "tor refused the onion proof-of-work defence; onions run without it"
                );
                if let Some(view) = lock(&self.tors).get_mut(tor) {
                    view.pow_supported = false;
                }
                let without = AddOnion {
                    pow_defense: false,
                    ..request
                };
                Ok((control.add_onion(&without).await?, false))
            }
            Err(error) => Err(error),
        }
    }

    fn tor_refusal(error: ControlError) -> OnionError {
        match error {
            ControlError::Refused { .. } => OnionError::TorRefused(error.to_string()),
            other => OnionError::TorUnavailable(other.to_string()),
        }
    }

    fn free_slot(&self) -> Option<u32> {
        let registry = lock(&self.registry);
        let mut taken: Vec<u32> = registry
            .by_identity
            .values()
            .filter_map(|live| live.stored.slot)
            .collect();
        taken.sort_unstable();
        let mut candidate = 0;
        for slot in taken {
            if slot == candidate {
                candidate += 1;
            } else if slot > candidate {
                break;
            }
        }
        (candidate < self.plan.slots).then_some(candidate)
    }

    /// CreateOnion: a fresh ED25519-V3 key generated by tor. Idempotent on the identity id.
    pub async fn create(
        &self,
        identity_id: &str,
        purposes: Vec<Purpose>,
    ) -> Result<OnionService, OnionError> {
        check_identity_id(identity_id)?;
        let _changing = self.changing.lock().await;
        if let Some(existing) = self.get_live(identity_id) {
            return Ok(existing);
        }
        self.refuse_revoked(identity_id).await?;
        self.add_new(identity_id, purposes, None).await
    }

    /// ImportOnion: an existing expanded secret key, so an identity keeps its address.
    pub async fn import(
        &self,
        identity_id: &str,
        secret_key: &[u8],
        purposes: Vec<Purpose>,
    ) -> Result<OnionService, OnionError> {
        check_identity_id(identity_id)?;
        if secret_key.len() != SECRET_KEY_LEN {
            return Err(OnionError::InvalidArgument(format!(
                "secret_key must be the {SECRET_KEY_LEN}-byte expanded ED25519-V3 key"
            )));
        }
        let blob = Zeroizing::new(BASE64.encode(secret_key));
        let _changing = self.changing.lock().await;
        if let Some(live) = self.live_entry(identity_id) {
            let same_key = self.open_key(&live.stored).is_ok_and(|key| *key == *blob);
            return if same_key {
                Ok(self.describe(&live))
            } else {
                Err(OnionError::AlreadyExists(
                    "this identity already has a different onion key".to_owned(),
                ))
            };
        }
        self.refuse_revoked(identity_id).await?;
        self.add_new(identity_id, purposes, Some(blob)).await
    }

    /// A revoked identity never gets an onion again.
    async fn refuse_revoked(&self, identity_id: &str) -> Result<(), OnionError> {
        let stored = self
            .store
            .get(identity_id)
            .await
            .map_err(internal("reading an onion"))?;
        if stored.is_some_and(|stored| stored.revoked_at_ms.is_some()) {
            return Err(OnionError::Revoked);
        }
        Ok(())
    }

    /// Adds a new onion to tor (fresh key, or `blob`), stores it sealed, registers it.
    async fn add_new(
        &self,
        identity_id: &str,
        purposes: Vec<Purpose>,
        blob: Option<Zeroizing<String>>,
    ) -> Result<OnionService, OnionError> {
        let slot = self.free_slot().ok_or(OnionError::NoFreeSlot)?;
        let (tor, control) = self.place_new()?;
        let ports = self.plan.add_onion_ports(slot, &purposes);
        let key = match &blob {
            Some(blob) => OnionKey::Existing(blob.as_str()),
            None => OnionKey::New,
        };
        let added_at = Instant::now();
        let (added, pow_defense) = match self.add_to_tor(tor, &control, key, ports).await {
            Ok(added) => added,
            // 550: tor already hosts this address (another identity here, or a detached copy).
            Err(ControlError::Refused { code: 550, .. }) => {
                return Err(OnionError::AlreadyExists(
                    "this onion address is already hosted on this tor".to_owned(),
                ));
            }
            Err(error) => return Err(Self::tor_refusal(error)),
        };
        let key_blob = match (blob, added.private_key) {
            (Some(blob), _) => blob,
            (None, Some(generated)) => match generated.strip_prefix("ED25519-V3:") {
                Some(rest) => Zeroizing::new(rest.to_owned()),
                None => {
                    tracing::error!("tor answered ADD_ONION NEW with a key of another type");
                    let _ = control.del_onion(&added.service_id).await;
                    return Err(OnionError::Internal);
                }
            },
            (None, None) => {
                tracing::error!("tor answered ADD_ONION NEW without the key");
                let _ = control.del_onion(&added.service_id).await;
                return Err(OnionError::Internal);
            }
        };
        let known = self.store.service_id_known(&added.service_id).await;
        if !matches!(known, Ok(false)) {
            let _ = control.del_onion(&added.service_id).await;
            return match known {
                Ok(_) => Err(OnionError::AlreadyExists(
                    "this onion address belongs, or belonged, to another identity; a revoked address never comes back".to_owned(),
                )),
                Err(error) => Err(internal("checking an address")(error)),
            };
        }
        let stored = StoredOnion {
            identity_id: identity_id.to_owned(),
            service_id: added.service_id.clone(),
            sealed_key: Some(
                self.sealer
                    .seal(key_blob.as_bytes(), identity_id.as_bytes()),
            ),
            slot: Some(slot),
            purposes,
            created_at_ms: now_ms(),
            revoked_at_ms: None,
            retire_at_ms: None,
            tor: Some(u32::try_from(tor).unwrap_or(u32::MAX)),
        };
        if let Err(error) = self.store.insert(&stored).await {
            // Not stored, so it must not stay on tor either.
            let _ = control.del_onion(&added.service_id).await;
            return Err(match error {
                StoreError::Duplicate => {
                    OnionError::AlreadyExists("this identity or address exists already".to_owned())
                }
                other => internal("storing an onion")(other),
            });
        }
        let live = Live {
            stored,
            state: OnionState::Publishing,
            last_error: String::new(),
            state_changed_at: SystemTime::now(),
            last_published_at: None,
            publishing_since: Some(added_at),
            on: Some(tor),
            home: tor,
            stand_in: None,
            restore_at: None,
            pow_defense,
        };
        let described = self.describe(&live);
        {
            let mut registry = lock(&self.registry);
            registry
                .by_service
                .insert(added.service_id.clone(), identity_id.to_owned());
            registry.by_identity.insert(identity_id.to_owned(), live);
        }
        let _ = self.changes.send(described.clone());
        self.record_state_metrics();
        tracing::info!(pow_defense, tor, "onion service added");
        Ok(described)
    }

    fn live_entry(&self, identity_id: &str) -> Option<Live> {
        lock(&self.registry).by_identity.get(identity_id).cloned()
    }

    fn get_live(&self, identity_id: &str) -> Option<OnionService> {
        self.live_entry(identity_id)
            .map(|live| self.describe(&live))
    }

    /// The key blob (base64 after `ED25519-V3:`) of a stored onion.
    fn open_key(&self, stored: &StoredOnion) -> Result<Zeroizing<String>, OnionError> {
        let sealed = stored.sealed_key.as_ref().ok_or(OnionError::Revoked)?;
        let opened = self
            .sealer
            .open(sealed, stored.identity_id.as_bytes())
            .map_err(|error| {
                tracing::error!(%error, "cannot open a sealed onion key");
                OnionError::Internal
            })?;
        String::from_utf8(opened.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| {
                tracing::error!("a sealed onion key is not a key blob");
                OnionError::Internal
            })
    }

    /// GetOnion.
    pub async fn get(&self, identity_id: &str) -> Result<OnionService, OnionError> {
        if let Some(live) = self.get_live(identity_id) {
            return Ok(live);
        }
        match self
            .store
            .get(identity_id)
            .await
            .map_err(internal("reading an onion"))?
        {
            Some(stored) if stored.revoked_at_ms.is_some() => Ok(Self::describe_revoked(&stored)),
            _ => Err(OnionError::NotFound),
        }
    }

    /// ListOnions: one page in identity id order. The page token is the last id of the page.
    pub async fn list(
        &self,
        state: OnionState,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<OnionService>, String), OnionError> {
        let size = page_size.clamp(1, 1000);
        let after = if page_token.is_empty() {
            String::new()
        } else {
            hex::decode(page_token)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| OnionError::InvalidArgument("invalid page_token".to_owned()))?
        };
        let onions: Vec<OnionService> = if state == OnionState::Revoked {
            self.store
                .revoked(&after, size)
                .await
                .map_err(internal("listing revoked onions"))?
                .iter()
                .map(Self::describe_revoked)
                .collect()
        } else {
            let registry = lock(&self.registry);
            registry
                .by_identity
                .range::<str, _>((
                    std::ops::Bound::Excluded(after.as_str()),
                    std::ops::Bound::Unbounded,
                ))
                .map(|(_, live)| live)
                .filter(|live| {
                    state == OnionState::Unspecified
                        || (state == OnionState::Retiring && live.stored.retire_at_ms.is_some())
                        || (live.state == state && live.stored.retire_at_ms.is_none())
                })
                .take(size as usize)
                .map(|live| self.describe(live))
                .collect()
        };
        let next = if onions.len() == size as usize {
            onions
                .last()
                .map(|last| hex::encode(&last.identity_id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((onions, next))
    }

    /// RevokeOnion: the key is destroyed in the store first, so a crash half-way can never
    /// bring the address back; then tor drops the service. Idempotent.
    pub async fn revoke(&self, identity_id: &str) -> Result<OnionService, OnionError> {
        let _changing = self.changing.lock().await;
        let Some(live) = self.live_entry(identity_id) else {
            return self.get(identity_id).await;
        };
        let revoked_at = now_ms();
        self.store
            .revoke(identity_id, revoked_at)
            .await
            .map_err(internal("revoking an onion"))?;
        {
            let mut registry = lock(&self.registry);
            registry.by_identity.remove(identity_id);
            registry.by_service.remove(&live.stored.service_id);
        }
        if let Some(control) = live.on.and_then(|tor| self.control_of(tor)) {
            match control.del_onion(&live.stored.service_id).await {
                Ok(_) => {}
                // The connection is then lost, and the onion with it: tor removes onions of a
                // closed control connection.
                Err(error) => tracing::warn!(%error, "DEL_ONION of a revoked onion failed"),
            }
        }
        let described = Self::describe_revoked(&StoredOnion {
            sealed_key: None,
            slot: None,
            revoked_at_ms: Some(revoked_at),
            ..live.stored
        });
        let _ = self.changes.send(described.clone());
        self.record_state_metrics();
        tracing::info!("onion service revoked");
        Ok(described)
    }

    /// RevokeOnion with `serve_revocation`: the onion stays published for
    /// `tor.revocation_serve_secs` (its WKD path serves the identity's revocation to peers
    /// that ask), then [`Self::retire_when_due`] revokes it. The time is stored, so a restart
    /// neither forgets nor restarts it; asking again keeps the first time.
    pub async fn retire_later(&self, identity_id: &str) -> Result<OnionService, OnionError> {
        if self.revocation_serve.is_zero() {
            return self.revoke(identity_id).await;
        }
        let _changing = self.changing.lock().await;
        let Some(live) = self.live_entry(identity_id) else {
            return self.get(identity_id).await;
        };
        if live.stored.retire_at_ms.is_none() {
            let keep_ms = i64::try_from(self.revocation_serve.as_millis()).unwrap_or(i64::MAX);
            let at = now_ms().saturating_add(keep_ms);
            self.store
                .schedule_retirement(identity_id, at)
                .await
                .map_err(internal("scheduling an onion's retirement"))?;
            if let Some(entry) = lock(&self.registry).by_identity.get_mut(identity_id) {
                entry.stored.retire_at_ms = Some(at);
            }
            self.retirements.notify_one();
            tracing::info!(
                keep_secs = self.revocation_serve.as_secs(),
                "onion kept to serve its identity's revocation"
            );
        }
        self.get(identity_id).await
    }

    /// Revokes each onion whose retirement is due, sleeping until the next one (or a new
    /// schedule) in between; runs until `shutdown`.
    pub async fn retire_when_due(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            let now = now_ms();
            let (due, next): (Vec<String>, Option<i64>) = {
                let registry = lock(&self.registry);
                let scheduled = registry.by_identity.values().filter_map(|live| {
                    Some((live.stored.identity_id.clone(), live.stored.retire_at_ms?))
                });
                let (due, later): (Vec<_>, Vec<_>) = scheduled.partition(|(_, at)| *at <= now);
                (
                    due.into_iter().map(|(id, _)| id).collect(),
                    later.into_iter().map(|(_, at)| at).min(),
                )
            };
            for identity_id in due {
                if let Err(error) = self.revoke(&identity_id).await {
                    tracing::warn!(%error, "retiring an onion failed; trying again later");
                }
            }
            // A minute at most between looks, so a failed revocation is tried again.
            let wait = next.map_or(Duration::from_secs(60), |at| {
                Duration::from_millis(u64::try_from(at - now).unwrap_or(0))
                    .min(Duration::from_secs(60))
            });
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.retirements.notified() => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// ExportOnionKey: the 64-byte expanded secret key.
    pub async fn export_key(
        &self,
        identity_id: &str,
    ) -> Result<(String, Zeroizing<Vec<u8>>), OnionError> {
        let Some(live) = self.live_entry(identity_id) else {
            return match self.get(identity_id).await {
                Ok(_) => Err(OnionError::Revoked),
                Err(error) => Err(error),
            };
        };
        let blob = self.open_key(&live.stored)?;
        let key = BASE64.decode(blob.as_bytes()).map_err(|_| {
            tracing::error!("a stored onion key is not base64");
            OnionError::Internal
        })?;
        Ok((
            format!("{}.onion", live.stored.service_id),
            Zeroizing::new(key),
        ))
    }

    /// WatchOnions: the receiver of changes (subscribed first, so nothing falls between) and
    /// the snapshot of the watched onions.
    pub fn watch(
        &self,
        identity_ids: &[String],
    ) -> (broadcast::Receiver<OnionService>, Vec<OnionService>) {
        let changes = self.changes.subscribe();
        (changes, self.snapshot(identity_ids))
    }

    /// The live onions among `identity_ids` (all when empty).
    pub fn snapshot(&self, identity_ids: &[String]) -> Vec<OnionService> {
        let registry = lock(&self.registry);
        registry
            .by_identity
            .values()
            .filter(|live| {
                identity_ids.is_empty() || identity_ids.contains(&live.stored.identity_id)
            })
            .map(|live| self.describe(live))
            .collect()
    }

    /// GetSocksEndpoint's address, when known: `tor.socks`, else the first connected tor's.
    pub fn socks_endpoint(&self) -> Result<String, OnionError> {
        if let Some(socks) = &self.configured_socks {
            return Ok(socks.clone());
        }
        let tors = lock(&self.tors);
        let connected = tors.iter().filter(|view| view.is_connected());
        connected
            .chain(tors.iter())
            .find_map(|view| view.socks.clone())
            .ok_or_else(|| {
                OnionError::TorUnavailable(
                    "tor's SOCKS port is not known yet (set tor.socks, or wait for the control connection)"
                        .to_owned(),
                )
            })
    }

    /// GetTorStatus: each tor of the pool, and the sum.
    pub fn tor_status(&self) -> TorStatus {
        let count_tors = self.tor_names.len();
        let (publishing, online, failed, held, placed) = {
            let registry = lock(&self.registry);
            let count = |state: OnionState| {
                u32::try_from(
                    registry
                        .by_identity
                        .values()
                        .filter(|live| live.state == state)
                        .count(),
                )
                .unwrap_or(u32::MAX)
            };
            let mut held = vec![0_u32; count_tors];
            let mut placed = vec![0_u32; count_tors];
            for live in registry.by_identity.values() {
                if let Some(tor) = live.on {
                    held[tor] += 1;
                }
                if let Some(home) = placed.get_mut(live.home) {
                    *home += 1;
                }
            }
            (
                count(OnionState::Publishing),
                count(OnionState::Online),
                count(OnionState::Failed),
                held,
                placed,
            )
        };
        let tors = lock(&self.tors);
        let instances: Vec<TorInstance> = tors
            .iter()
            .enumerate()
            .map(|(index, view)| {
                let connected = view.is_connected();
                TorInstance {
                    name: self.tor_names[index].clone(),
                    control_connected: connected,
                    connected_since: view.connected_since.filter(|_| connected).map(timestamp),
                    tor_version: if connected {
                        view.tor_version.clone()
                    } else {
                        String::new()
                    },
                    bootstrap_percent: if connected { view.bootstrap_percent } else { 0 },
                    last_error: view.last_error.clone(),
                    failed_connect_attempts: view.failed_attempts,
                    onions: held[index],
                    onions_placed: placed[index],
                }
            })
            .collect();
        let first_connected = instances.iter().position(|tor| tor.control_connected);
        let summary = first_connected.map(|index| (&instances[index], &tors[index]));
        TorStatus {
            control_connected: summary.is_some(),
            connected_since: summary.and_then(|(tor, _)| tor.connected_since),
            tor_version: summary
                .map(|(tor, _)| tor.tor_version.clone())
                .unwrap_or_default(),
            bootstrap_percent: summary.map_or(0, |(tor, _)| tor.bootstrap_percent),
            pow_defense_supported: summary.is_some_and(|(_, view)| view.pow_supported),
            last_error: instances
                .iter()
                .find(|tor| !tor.last_error.is_empty())
                .map(|tor| match count_tors {
                    1 => tor.last_error.clone(),
                    _ => format!("{}: {}", tor.name, tor.last_error),
                })
                .unwrap_or_default(),
            onions_publishing: publishing,
            onions_online: online,
            onions_failed: failed,
            failed_connect_attempts: instances
                .iter()
                .map(|tor| tor.failed_connect_attempts)
                .max()
                .unwrap_or(0),
            tors: instances,
        }
    }

    // --- what the supervisors report ------------------------------------------------------

    /// A connection attempt to tor `tor` failed: reported, counted, and every onion waiting
    /// for that tor alone is FAILED with the reason until it is back (or a stand-in takes it).
    pub(crate) fn on_connect_failed(&self, tor: usize, error: &ControlError) {
        let message = error.to_string();
        let attempts = {
            let mut tors = lock(&self.tors);
            let Some(view) = tors.get_mut(tor) else {
                return;
            };
            view.failed_attempts += 1;
            view.last_error = message.clone();
            view.failed_attempts
        };
        metrics::counter!("onionpost_onion_tor_connect_failures_total").increment(1);
        // The first failure and then every tenth, so a long outage does not flood the log.
        if attempts == 1 || attempts % 10 == 0 {
            tracing::warn!(error = %message, attempts, tor, "cannot use tor's control port; retrying");
        }
        let usable = self.usable();
        let reason = format!("{} is unreachable: {message}", self.tor_label(tor));
        {
            let mut registry = lock(&self.registry);
            for live in registry.by_identity.values_mut() {
                if live.on.is_none() && live.home == tor && wanted(live, &usable).is_none() {
                    live.restore_at = None;
                    live.publishing_since = None;
                    self.set_state(live, OnionState::Failed, &reason);
                }
            }
        }
        self.record_state_metrics();
    }

    /// Tor `tor`'s connection ended: its onions are gone from it (tor removes the onions of a
    /// closed control connection) and FAILED until it or a stand-in publishes them again.
    pub(crate) fn on_disconnected(&self, tor: usize, error: &ControlError) {
        let message = error.to_string();
        let any_left = {
            let mut tors = lock(&self.tors);
            if let Some(view) = tors.get_mut(tor) {
                view.control = None;
                view.connected_since = None;
                view.away_since = Some(Instant::now());
                view.last_error = message.clone();
            }
            tors.iter().any(|view| view.is_connected())
        };
        let _ = self.connected.send(any_left);
        metrics::gauge!("onionpost_onion_tor_control_connected").set(if any_left {
            1.0
        } else {
            0.0
        });
        tracing::warn!(error = %message, tor, "lost tor's control connection; reconnecting");
        let reason = format!("{} is unreachable: {message}", self.tor_label(tor));
        {
            let mut registry = lock(&self.registry);
            for live in registry.by_identity.values_mut() {
                if live.on == Some(tor) {
                    live.on = None;
                    live.publishing_since = None;
                    self.set_state(live, OnionState::Failed, &reason);
                }
                // Moments drawn for this tor are drawn again when it (or a stand-in) is there.
                if live.on.is_none() {
                    live.restore_at = None;
                }
            }
        }
        self.record_state_metrics();
    }

    /// Tor `tor` is connected: record it, then add back the onions it is to publish, each at
    /// its own moment (its own, and those that moved to a stand-in while it was away).
    pub(crate) async fn on_connected(
        &self,
        tor: usize,
        control: ControlConnection,
        tor_version: String,
        bootstrap_percent: u32,
        socks: Option<String>,
    ) {
        let pow_supported = crate::control::version_at_least(&tor_version, POW_ADD_ONION_SINCE);
        {
            let mut tors = lock(&self.tors);
            let Some(view) = tors.get_mut(tor) else {
                return;
            };
            view.control = Some(control.clone());
            view.connected_since = Some(SystemTime::now());
            view.away_since = None;
            view.tor_version = tor_version.clone();
            view.bootstrap_percent = bootstrap_percent;
            view.pow_supported = pow_supported;
            view.last_error.clear();
            view.failed_attempts = 0;
            view.socks = socks;
        }
        let _ = self.connected.send(true);
        metrics::gauge!("onionpost_onion_tor_control_connected").set(1.0);
        tracing::info!(tor_version = %tor_version, bootstrap_percent, pow_supported, tor, "connected to tor");
        let restored = self.restore_missing(tor, &control).await;
        let waiting = self.missing_on(tor);
        if restored > 0 || waiting > 0 {
            tracing::info!(
                restored,
                waiting,
                tor,
                spread = ?self.restore_spread,
                "onion services are added to tor, each at its own moment"
            );
        }
    }

    /// How many onions tor `tor` is to publish and does not yet.
    fn missing_on(&self, tor: usize) -> usize {
        let usable = self.usable();
        lock(&self.registry)
            .by_identity
            .values()
            .filter(|live| wanted(live, &usable) == Some(tor) && live.on != Some(tor))
            .count()
    }

    /// Gives each onion whose tor has been away longer than `tor.failover_secs` a stand-in:
    /// the connected tor with the fewest onions and room. It is added there at its own moment
    /// (see [`Self::restore_missing`]). Onions for which no tor has room stay FAILED.
    pub(crate) fn fail_over(&self) {
        let (usable, gone): (Vec<bool>, Vec<bool>) = {
            let tors = lock(&self.tors);
            tors.iter()
                .map(|view| {
                    let up = view.is_connected();
                    let gone = !up
                        && view
                            .away_since
                            .is_some_and(|since| since.elapsed() >= self.failover);
                    (up, gone)
                })
                .unzip()
        };
        if !gone.contains(&true) || !usable.contains(&true) {
            return;
        }
        let mut registry = lock(&self.registry);
        let mut loads = loads(registry.by_identity.values(), &usable);
        let (mut moved, mut stuck) = (0_u32, 0_u32);
        for live in registry.by_identity.values_mut() {
            let orphaned = gone.get(live.home).copied().unwrap_or(false)
                && live.on.is_none()
                && wanted(live, &usable).is_none();
            if !orphaned {
                continue;
            }
            match least_loaded(&loads, &usable, self.max_per_tor) {
                Some(tor) => {
                    loads[tor] += 1;
                    live.stand_in = Some(tor);
                    live.restore_at = None;
                    moved += 1;
                }
                None => stuck += 1,
            }
        }
        if moved > 0 || stuck > 0 {
            tracing::warn!(
                moved,
                without_room = stuck,
                "a tor of the pool is away: its onions go to the others"
            );
        }
    }

    /// When the next onion is due to be added to tor `tor`, if one is scheduled.
    pub(crate) fn next_restore(&self, tor: usize) -> Option<Instant> {
        let usable = self.usable();
        lock(&self.registry)
            .by_identity
            .values()
            .filter(|live| wanted(live, &usable) == Some(tor) && live.on != Some(tor))
            .filter_map(|live| live.restore_at)
            .min()
    }

    /// Adds to tor `tor` every onion it is to publish and does not whose moment has come;
    /// returns how many were added. An onion without a moment is given one first: after a
    /// restart, a failover or a tor's return, every identity comes at a time drawn for it
    /// alone, so peers cannot tell co-hosted identities by their onions reappearing together
    /// (issue 18, 6). An onion another tor still publishes (a stand-in, when its home is back)
    /// is taken off that tor first: never on two at once. Failures leave the onion FAILED, to be
    /// given a new moment on the next tick.
    pub(crate) async fn restore_missing(&self, tor: usize, control: &ControlConnection) -> usize {
        let now = Instant::now();
        let usable = self.usable();
        let missing: Vec<(StoredOnion, Option<usize>)> = {
            let mut registry = lock(&self.registry);
            let mut due = Vec::new();
            for live in registry
                .by_identity
                .values_mut()
                .filter(|live| wanted(live, &usable) == Some(tor) && live.on != Some(tor))
            {
                let at = *live
                    .restore_at
                    .get_or_insert_with(|| now + random_within(self.restore_spread));
                if at <= now {
                    live.restore_at = None;
                    due.push((live.stored.clone(), live.on));
                }
            }
            due
        };
        let mut restored = 0;
        for (stored, from) in missing {
            let Some(slot) = stored.slot else { continue };
            if let Some(from) = from
                && !self.take_off(from, &stored).await
            {
                continue;
            }
            let outcome = match self.open_key(&stored) {
                Ok(blob) => {
                    let ports = self.plan.add_onion_ports(slot, &stored.purposes);
                    let mut outcome = self
                        .add_to_tor(
                            tor,
                            control,
                            OnionKey::Existing(blob.as_str()),
                            ports.clone(),
                        )
                        .await;
                    if let Err(ControlError::Refused { code: 550, .. }) = outcome {
                        // A copy from an earlier connection that tor kept (detached by someone
                        // else): replace it with ours.
                        let _ = control.del_onion(&stored.service_id).await;
                        outcome = self
                            .add_to_tor(tor, control, OnionKey::Existing(blob.as_str()), ports)
                            .await;
                    }
                    outcome.map_err(|error| error.to_string())
                }
                Err(error) => Err(error.to_string()),
            };
            let added_at = Instant::now();
            let revoked_meanwhile = {
                let mut registry = lock(&self.registry);
                match registry.by_identity.get_mut(&stored.identity_id) {
                    None => true,
                    Some(live) => {
                        self.record_restore(tor, live, outcome, added_at, &mut restored);
                        false
                    }
                }
            };
            if revoked_meanwhile {
                let _ = control.del_onion(&stored.service_id).await;
            }
        }
        self.record_state_metrics();
        restored
    }

    /// Takes an onion off tor `from` before another tor publishes it; whether it is off. A tor
    /// that is not connected holds nothing of ours (tor drops a closed connection's onions); a
    /// DEL_ONION that fails on a live connection leaves the onion where it is for now.
    async fn take_off(&self, from: usize, stored: &StoredOnion) -> bool {
        let off = match self.control_of(from) {
            None => true,
            Some(other) => match other.del_onion(&stored.service_id).await {
                Ok(_) | Err(ControlError::Refused { .. }) => true,
                Err(_) if other.is_closed() => true,
                Err(error) => {
                    tracing::warn!(%error, tor = from, "cannot take an onion off a tor; it stays there for now");
                    false
                }
            },
        };
        if off
            && let Some(live) = lock(&self.registry)
                .by_identity
                .get_mut(&stored.identity_id)
            && live.on == Some(from)
        {
            live.on = None;
        }
        off
    }

    fn record_restore(
        &self,
        tor: usize,
        live: &mut Live,
        outcome: Result<(crate::control::AddedOnion, bool), String>,
        added_at: Instant,
        restored: &mut usize,
    ) {
        match outcome {
            Ok((_, pow_defense)) => {
                live.on = Some(tor);
                if tor == live.home {
                    live.stand_in = None;
                }
                live.pow_defense = pow_defense;
                live.publishing_since = Some(added_at);
                self.set_state(live, OnionState::Publishing, "");
                *restored += 1;
            }
            Err(message) => {
                tracing::warn!(error = %message, tor, "cannot add an onion service to tor");
                self.set_state(
                    live,
                    OnionState::Failed,
                    &format!("adding the onion to tor failed: {message}"),
                );
            }
        }
    }

    /// An HS_DESC event from tor `tor` about one of the onions it publishes.
    pub(crate) fn on_hs_desc(&self, tor: usize, event: HsDescEvent) {
        let changed = {
            let mut registry = lock(&self.registry);
            let service_id = match &event {
                HsDescEvent::Uploaded { service_id } | HsDescEvent::Failed { service_id, .. } => {
                    service_id
                }
            };
            let Some(identity_id) = registry.by_service.get(service_id).cloned() else {
                return;
            };
            let Some(live) = registry.by_identity.get_mut(&identity_id) else {
                return;
            };
            // A late event from a tor the onion has left says nothing about it now.
            if live.on != Some(tor) {
                return;
            }
            match event {
                HsDescEvent::Uploaded { .. } => {
                    live.last_published_at = Some(SystemTime::now());
                    if let Some(since) = live.publishing_since.take() {
                        metrics::histogram!("onionpost_onion_publish_seconds")
                            .record(since.elapsed().as_secs_f64());
                    }
                    self.set_state(live, OnionState::Online, "")
                }
                HsDescEvent::Failed { reason, .. } => {
                    // One HSDir of several refusing is routine; it is worth showing only while
                    // no upload has succeeded.
                    if live.state == OnionState::Online {
                        false
                    } else {
                        let state = live.state;
                        self.set_state(
                            live,
                            state,
                            &format!("descriptor upload failed ({reason}); tor retries"),
                        )
                    }
                }
            }
        };
        if changed {
            self.record_state_metrics();
        }
    }

    /// Bootstrap progress of tor `tor` from a STATUS_CLIENT event.
    pub(crate) fn on_bootstrap(&self, tor: usize, percent: u32) {
        if let Some(view) = lock(&self.tors).get_mut(tor) {
            view.bootstrap_percent = percent;
        }
    }

    /// Periodic check: onions PUBLISHING for too long are FAILED (tor keeps trying).
    pub(crate) fn check_publish_timeouts(&self) {
        let mut changed = false;
        {
            let mut registry = lock(&self.registry);
            for live in registry.by_identity.values_mut() {
                let overdue = live.state == OnionState::Publishing
                    && live
                        .publishing_since
                        .is_some_and(|since| since.elapsed() >= PUBLISH_TIMEOUT);
                if overdue {
                    changed |= self.set_state(
                        live,
                        OnionState::Failed,
                        &format!(
                            "no descriptor upload succeeded within {} s; tor keeps trying",
                            PUBLISH_TIMEOUT.as_secs()
                        ),
                    );
                }
            }
        }
        if changed {
            self.record_state_metrics();
        }
    }

    /// Whether tor `tor` is to publish an onion it does not (to be added on the next tick).
    pub(crate) fn any_missing(&self, tor: usize) -> bool {
        self.missing_on(tor) > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_places_unplaced_rows_and_evens_out_the_pool() {
        // Rows from before pools (no tor) on a pool of two: half each.
        assert_eq!(
            rebalance(&[None, None, None, None], 2, 0),
            vec![(0, 0), (1, 1), (2, 0), (3, 1)]
        );
        // A carrier that grew from one tor to two: the first tor gives its last two away.
        assert_eq!(
            rebalance(&[Some(0), Some(0), Some(0), Some(0)], 2, 0),
            vec![(2, 1), (3, 1)]
        );
        // Balanced, or within the limit: nothing moves.
        assert!(rebalance(&[Some(0), Some(1), Some(0)], 2, 0).is_empty());
        assert!(rebalance(&[Some(0), Some(0), Some(1)], 2, 5).is_empty());
        // A tor no longer configured: its rows go to the others.
        assert_eq!(rebalance(&[Some(0), Some(4)], 2, 0), vec![(1, 1)]);
        // Above the limit: the excess goes where there is room.
        assert_eq!(rebalance(&[Some(0), Some(0), Some(0)], 3, 2), vec![(2, 1)]);
    }

    #[test]
    fn the_least_loaded_connected_tor_with_room_takes_a_new_onion() {
        assert_eq!(least_loaded(&[3, 1, 0], &[true, true, false], 0), Some(1));
        assert_eq!(least_loaded(&[2, 2], &[true, true], 0), Some(0));
        assert_eq!(least_loaded(&[2, 2], &[true, true], 2), None);
        assert_eq!(least_loaded(&[0, 0], &[false, false], 0), None);
    }
}
