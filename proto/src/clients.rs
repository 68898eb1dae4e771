//! One constructor per contract's client, so every client a service builds carries the same
//! message-size limit ([`MAX_GRPC_MESSAGE_BYTES`], both directions) instead of each call site
//! remembering to raise tonic's 4 MiB default.
//!
//! `clients::keys(transport)` works over any transport a generated client takes: the runtime's
//! `Transport` (local or remote alike) or a tonic `Channel`.

use tonic::codegen::{Body, Bytes, StdError};

use crate::MAX_GRPC_MESSAGE_BYTES;
use crate::admin::v1::admin_client::AdminClient;
use crate::gateway::v1::gateway_client::GatewayClient;
use crate::imap::v1::imap_client::ImapClient;
use crate::keys::v1::keys_client::KeysClient;
use crate::onion::v1::onion_client::OnionClient;
use crate::portal::v1::portal_client::PortalClient;
use crate::queue::v1::queue_client::QueueClient;
use crate::smtp_in::v1::smtp_in_client::SmtpInClient;
use crate::smtp_out::v1::smtp_out_client::SmtpOutClient;

macro_rules! client {
    ($(#[$doc:meta])* $name:ident => $client:ident) => {
        $(#[$doc])*
        pub fn $name<T>(transport: T) -> $client<T>
        where
            T: tonic::client::GrpcService<tonic::body::Body>,
            T::Error: Into<StdError>,
            T::ResponseBody: Body<Data = Bytes> + Send + 'static,
            <T::ResponseBody as Body>::Error: Into<StdError> + Send,
        {
            $client::new(transport)
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        }
    };
}

client!(
    /// A client of the onion service.
    onion => OnionClient
);
client!(
    /// A client of the keys service.
    keys => KeysClient
);
client!(
    /// A client of the smtp-in service.
    smtp_in => SmtpInClient
);
client!(
    /// A client of the queue service.
    queue => QueueClient
);
client!(
    /// A client of the smtp-out service.
    smtp_out => SmtpOutClient
);
client!(
    /// A client of the imap service.
    imap => ImapClient
);
client!(
    /// A client of the gateway service.
    gateway => GatewayClient
);
client!(
    /// A client of the admin service.
    admin => AdminClient
);
client!(
    /// A client of the portal service.
    portal => PortalClient
);
