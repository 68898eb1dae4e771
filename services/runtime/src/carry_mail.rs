//! A carry statement sent in mail (paper §4.2): an identity asks a carrier to hold its mail,
//! or to stop, by sending its signed statement to `postmaster@<the carrier's onion>`, where the
//! carrier's smtp-in keeps it and its queue verifies it against the key the identity's own onion
//! serves. Shared by the two front ends that sign statements (admin API, account portal), so the
//! message reads the same from both.

use onionpost_proto::queue::v1 as queue;

/// The mailbox on every onion of a carrier that takes carry statements.
pub fn postmaster(carrier_onion: &str) -> String {
    format!("postmaster@{}", carrier_onion.trim().to_ascii_lowercase())
}

/// The queue request that sends `statement` (ASCII armour, as keys signed it) from the identity
/// to the carrier. The statement needs no encryption (it is signed and says only what the
/// carrier must know) and travels from onion to onion inside tor. A refusal comes back to the
/// identity's INBOX as a delivery-status notification.
pub fn statement_message(
    account_id: &str,
    identity_id: &str,
    identity_address: &str,
    carrier_onion: &str,
    statement: &str,
) -> queue::EnqueueRequest {
    let to = postmaster(carrier_onion);
    let onion = identity_address
        .rsplit_once('@')
        .map_or(identity_address, |(_, onion)| onion);
    let message_id = format!("<{}@{onion}>", hex::encode(rand::random::<[u8; 16]>()));
    let message = format!(
        "From: <{identity_address}>\r\nTo: <{to}>\r\nSubject: Carry statement\r\n\
         Date: {date}\r\nMessage-ID: {message_id}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n\
         {body}\r\n",
        date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S +0000"),
        body = statement
            .trim_end()
            .replace("\r\n", "\n")
            .replace('\n', "\r\n"),
    );
    queue::EnqueueRequest {
        idempotency_key: message_id.clone(),
        origin: queue::Origin::Submission as i32,
        account_id: account_id.to_owned(),
        sender_identity_id: identity_id.to_owned(),
        reverse_path: identity_address.to_owned(),
        recipients: vec![queue::RecipientRequest {
            address: to,
            ..Default::default()
        }],
        message: message.into_bytes(),
        message_id,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_goes_to_the_carriers_postmaster_from_the_identity() {
        let statement = "-----BEGIN PGP MESSAGE-----\n\nabc\n-----END PGP MESSAGE-----\n";
        let request = statement_message(
            "acct",
            "id-1",
            "carol@carolonion.onion",
            "Carrier.onion",
            statement,
        );
        assert_eq!(request.recipients[0].address, "postmaster@carrier.onion");
        assert_eq!(request.reverse_path, "carol@carolonion.onion");
        assert_eq!(request.sender_identity_id, "id-1");
        assert!(request.message_id.ends_with("@carolonion.onion>"));
        let text = String::from_utf8(request.message).unwrap();
        assert!(
            text.starts_with(
                "From: <carol@carolonion.onion>\r\nTo: <postmaster@carrier.onion>\r\n"
            )
        );
        assert!(text.contains(
            "\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nabc\r\n-----END PGP MESSAGE-----\r\n"
        ));
        assert!(!text.contains("\n\n"), "bare LF left: {text:?}");
    }
}
