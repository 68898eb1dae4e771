//! The `onionpost.smtp_in.v1.SmtpIn` adapter: GetStatus from the counters and the policy.

use onionpost_proto::smtp_in::v1 as pb;
use onionpost_proto::smtp_in::v1::smtp_in_server::SmtpIn;
use onionpost_runtime::config::{PlaintextPolicy, SmtpInSettings};
use tonic::{Request, Response, Status};

use crate::Stats;

/// The gRPC face of smtp-in.
pub struct SmtpInGrpc {
    stats: Stats,
    settings: SmtpInSettings,
    started_at: prost_types::Timestamp,
}

impl SmtpInGrpc {
    pub fn new(stats: Stats, settings: SmtpInSettings) -> Self {
        let now = std::time::SystemTime::now();
        SmtpInGrpc {
            stats,
            settings,
            started_at: prost_types::Timestamp::from(now),
        }
    }
}

#[tonic::async_trait]
impl SmtpIn for SmtpInGrpc {
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::SmtpInStatus>, Status> {
        let snapshot = self.stats.snapshot();
        let plaintext = match self.settings.plaintext_policy {
            PlaintextPolicy::Refuse => pb::PlaintextPolicy::Refuse,
            PlaintextPolicy::Quarantine => pb::PlaintextPolicy::Quarantine,
            PlaintextPolicy::Accept => pb::PlaintextPolicy::Accept,
        };
        Ok(Response::new(pb::SmtpInStatus {
            policy: Some(pb::Policy {
                plaintext: plaintext as i32,
                max_message_bytes: self.settings.max_message_bytes,
                max_messages_per_hour_per_identity: self
                    .settings
                    .max_messages_per_hour_per_identity,
                max_messages_per_hour_per_account: self.settings.max_messages_per_hour_per_account,
                max_messages_per_hour_per_sender: self.settings.max_messages_per_hour_per_sender,
                pow_stamps_required: self.settings.stamp_bits > 0,
                pow_difficulty: self.settings.stamp_bits,
                pow_max_difficulty: self.settings.stamp_max_bits,
                pow_step_messages: self.settings.stamp_step_messages,
            }),
            listeners: vec![
                pb::ListenerCount {
                    kind: pb::ListenerKind::Mx as i32,
                    open: snapshot.mx_listeners,
                },
                pb::ListenerCount {
                    kind: pb::ListenerKind::OnionSubmission as i32,
                    open: snapshot.onion_submission_listeners,
                },
                pb::ListenerCount {
                    kind: pb::ListenerKind::Submission as i32,
                    open: snapshot.submission_listeners,
                },
            ],
            sessions_open: snapshot.sessions_open,
            started_at: Some(self.started_at),
            messages_accepted: snapshot.accepted,
            messages_refused: snapshot.refused,
            plaintext_refused: snapshot.plaintext_refused,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ListenerKind;

    #[tokio::test]
    async fn status_reports_policy_listeners_sessions_and_counters() {
        let stats = Stats::default();
        let settings = SmtpInSettings {
            max_message_bytes: 1234,
            plaintext_policy: PlaintextPolicy::Quarantine,
            max_messages_per_hour_per_account: 7,
            max_messages_per_hour_per_identity: 8,
            max_messages_per_hour_per_sender: 9,
            stamp_bits: 20,
            stamp_step_messages: 10,
            stamp_max_bits: 30,
            max_stamp_bits_paid: 28,
        };
        let grpc = SmtpInGrpc::new(stats.clone(), settings);
        stats.listener(ListenerKind::Mx, true);
        stats.listener(ListenerKind::Mx, true);
        stats.listener(ListenerKind::Submission, true);
        let _session = stats.session();
        stats.accepted();
        stats.refused();
        stats.plaintext_refused();

        let status = grpc
            .get_status(Request::new(pb::GetStatusRequest {}))
            .await
            .unwrap()
            .into_inner();
        let policy = status.policy.unwrap();
        assert_eq!(policy.plaintext, pb::PlaintextPolicy::Quarantine as i32);
        assert_eq!(policy.max_message_bytes, 1234);
        assert_eq!(policy.max_messages_per_hour_per_account, 7);
        let open = |kind: pb::ListenerKind| {
            status
                .listeners
                .iter()
                .find(|count| count.kind == kind as i32)
                .map(|count| count.open)
        };
        assert_eq!(open(pb::ListenerKind::Mx), Some(2));
        assert_eq!(open(pb::ListenerKind::OnionSubmission), Some(0));
        assert_eq!(open(pb::ListenerKind::Submission), Some(1));
        assert_eq!(status.sessions_open, 1);
        assert_eq!(status.messages_accepted, 1);
        assert_eq!(status.messages_refused, 2);
        assert_eq!(status.plaintext_refused, 1);
        assert!(status.started_at.is_some());
    }
}
