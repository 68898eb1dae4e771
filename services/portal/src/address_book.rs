//! The account's address book (held by keys): its contacts, added by address, by a scanned
//! `openpgp4fpr:` URI or by a contact card; who introduced each (provenance); the carriers
//! trusted with a contact's mail; and the key changes held for the account's decision.
//!
//! keys keeps one address book per account and checks every call against the account id the
//! portal gives it, which is always the session's: a contact of another account is "no such
//! contact", exactly like one that does not exist.

use onionpost_proto::ServiceName;
use onionpost_proto::keys::v1 as keys;
use onionpost_runtime::address_book::{
    Contact, ContactRequestAnswer, ContactRequestAnswered, unreachable_contact,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::PortalState;
use crate::error::{PortalError, Upstream as _};

/// Longest contact card the portal passes on (a card with an Ed25519 key is about 1 KiB).
pub const MAX_CARD_BYTES: usize = 32 * 1024;
/// Longest address, URI, name or search the portal passes on.
const MAX_TEXT_BYTES: usize = 1024;
/// Contacts per page.
const PAGE_SIZE: u32 = 100;
/// Most designated carriers per contact.
const MAX_CARRIERS: usize = 16;

/// One page of the address book.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    /// Asks for the next page; absent on the last.
    pub next_page_token: Option<String>,
}

/// A contact to add: one of `address`, `openpgp4fpr` or `vcard`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewContact {
    /// `local@<56 base32>.onion`: its key is fetched over its own onion.
    #[serde(default)]
    pub address: Option<String>,
    /// A scanned `openpgp4fpr:<FINGERPRINT>#a=<address>`: the key fetched over the onion must
    /// have that fingerprint, and the contact counts as verified.
    #[serde(default)]
    pub openpgp4fpr: Option<String>,
    /// A contact card (vCard 4.0) with EMAIL and KEY: address and key are taken from it.
    #[serde(default)]
    pub vcard: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
}

/// Changes to a contact; absent members stay as they are.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactChange {
    #[serde(default)]
    pub display_name: Option<String>,
    /// Whether the fingerprint was checked out of band.
    #[serde(default)]
    pub verified: Option<bool>,
    /// Replaces the carrier onions (`<56 base32>.onion`) trusted with this contact's mail.
    #[serde(default)]
    pub designated_carriers: Option<Vec<String>>,
}

/// The account's decision on a held key change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyChangeDecision {
    /// The held key's fingerprint, so the decision never applies to another key.
    pub fingerprint: String,
    /// True pins the new key; false keeps the old one.
    pub accept: bool,
}

fn within(field: &str, value: &str, limit: usize) -> Result<(), PortalError> {
    if value.len() > limit {
        return Err(PortalError::invalid(field, "is too long"));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\r' && c != '\n' && c != '\t')
    {
        return Err(PortalError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn no_such_contact() -> PortalError {
    PortalError::NotFound("no such contact".to_owned())
}

/// keys' answer about one contact named by id: anything "not found" or unreadable in the id is
/// "no such contact"; a refusal of a value names `field`.
fn about_contact(error: PortalError, field: &str) -> PortalError {
    match error {
        PortalError::NotFound(_) => no_such_contact(),
        PortalError::Rejected(detail) => PortalError::invalid(field, detail),
        other => other,
    }
}

fn checked_id(contact_id: &str) -> Result<(), PortalError> {
    if contact_id.is_empty() || contact_id.len() > MAX_TEXT_BYTES {
        return Err(no_such_contact());
    }
    Ok(())
}

/// One page of the address book: all contacts, those matching `query` (address or name), or
/// only those with a key change waiting.
pub async fn contacts(
    state: &PortalState,
    account_id: &str,
    query: &str,
    held_only: bool,
    page_token: &str,
) -> Result<ContactPage, PortalError> {
    within("q", query, MAX_TEXT_BYTES)?;
    within("page_token", page_token, MAX_TEXT_BYTES)?;
    let page = state
        .directory
        .keys()?
        .list_contacts(keys::ListContactsRequest {
            account_id: account_id.to_owned(),
            query: query.trim().to_owned(),
            only_held_key_changes: held_only,
            only_requests: false,
            page_size: PAGE_SIZE,
            page_token: page_token.to_owned(),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| match error {
            PortalError::Rejected(detail) => PortalError::invalid("page_token", detail),
            other => other,
        })?;
    Ok(ContactPage {
        contacts: page.contacts.into_iter().map(Contact::from_proto).collect(),
        next_page_token: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    })
}

/// How the account's address book takes introductions that arrive in mail.
pub async fn policy(
    state: &PortalState,
    account_id: &str,
) -> Result<onionpost_runtime::address_book::AddressBookPolicy, PortalError> {
    let policy = state
        .directory
        .keys()?
        .get_address_book_policy(keys::GetAddressBookPolicyRequest {
            account_id: account_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Keys)?;
    Ok(onionpost_runtime::address_book::AddressBookPolicy {
        confirm_introductions: policy.confirm_introductions,
    })
}

/// Sets whether introduced contacts wait for the account's confirmation.
pub async fn set_policy(
    state: &PortalState,
    account_id: &str,
    wanted: onionpost_runtime::address_book::AddressBookPolicy,
) -> Result<onionpost_runtime::address_book::AddressBookPolicy, PortalError> {
    let policy = state
        .directory
        .keys()?
        .set_address_book_policy(keys::SetAddressBookPolicyRequest {
            account_id: account_id.to_owned(),
            policy: Some(keys::AddressBookPolicy {
                confirm_introductions: wanted.confirm_introductions,
            }),
        })
        .await
        .upstream(ServiceName::Keys)?;
    tracing::info!(account_id, "address-book policy set in the portal");
    Ok(onionpost_runtime::address_book::AddressBookPolicy {
        confirm_introductions: policy.confirm_introductions,
    })
}

/// Adds a contact from one of an address, a scanned URI or a contact card.
pub async fn add_contact(
    state: &PortalState,
    account_id: &str,
    new: NewContact,
) -> Result<Contact, PortalError> {
    let text = |value: &Option<String>| value.as_deref().unwrap_or("").trim().to_owned();
    let (address, uri, card, name) = (
        text(&new.address),
        text(&new.openpgp4fpr),
        text(&new.vcard),
        text(&new.display_name),
    );
    within("address", &address, MAX_TEXT_BYTES)?;
    within("openpgp4fpr", &uri, MAX_TEXT_BYTES)?;
    within("vcard", &card, MAX_CARD_BYTES)?;
    within("display_name", &name, MAX_TEXT_BYTES)?;
    if name.chars().count() > 128 {
        return Err(PortalError::invalid("display_name", "is too long"));
    }
    let field = match (!address.is_empty(), !uri.is_empty(), !card.is_empty()) {
        (true, false, false) => "address",
        (false, true, false) => "openpgp4fpr",
        (false, false, true) => "vcard",
        (false, false, false) => {
            return Err(PortalError::invalid(
                "address",
                "give an address, an openpgp4fpr: link or a contact card",
            ));
        }
        _ => {
            return Err(PortalError::invalid(
                "address",
                "give only one of an address, an openpgp4fpr: link or a contact card",
            ));
        }
    };
    let added = state
        .directory
        .keys()?
        .add_contact(keys::AddContactRequest {
            account_id: account_id.to_owned(),
            address,
            display_name: name,
            source: keys::KeySource::Manual as i32,
            vcard: card,
            openpgp4fpr_uri: uri,
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| match unreachable_contact(&status) {
            Some(why) => PortalError::invalid(field, why),
            None => match PortalError::from_status(ServiceName::Keys, status) {
                PortalError::Rejected(detail) => PortalError::invalid(field, detail),
                other => other,
            },
        })?;
    tracing::info!(account_id, contact_id = %added.contact_id, "contact added in the portal");
    Ok(Contact::from_proto(added))
}

/// One contact of the account.
pub async fn contact(
    state: &PortalState,
    account_id: &str,
    contact_id: &str,
) -> Result<Contact, PortalError> {
    checked_id(contact_id)?;
    let found = state
        .directory
        .keys()?
        .get_contact(keys::GetContactRequest {
            account_id: account_id.to_owned(),
            contact: Some(keys::get_contact_request::Contact::ContactId(
                contact_id.to_owned(),
            )),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| about_contact(error, "id"))?;
    Ok(Contact::from_proto(found))
}

/// Changes a contact's name, verification or designated carriers.
pub async fn update_contact(
    state: &PortalState,
    account_id: &str,
    contact_id: &str,
    change: ContactChange,
) -> Result<Contact, PortalError> {
    checked_id(contact_id)?;
    let mut paths = Vec::new();
    let mut record = keys::Contact {
        contact_id: contact_id.to_owned(),
        account_id: account_id.to_owned(),
        ..Default::default()
    };
    if let Some(name) = change.display_name {
        within("display_name", &name, MAX_TEXT_BYTES)?;
        if name.chars().count() > 128 || name.contains(['\r', '\n']) {
            return Err(PortalError::invalid(
                "display_name",
                "must be one line of at most 128 characters",
            ));
        }
        paths.push("display_name".to_owned());
        record.display_name = name.trim().to_owned();
    }
    if let Some(verified) = change.verified {
        paths.push("verified".to_owned());
        record.verified = verified;
    }
    if let Some(carriers) = change.designated_carriers {
        if carriers.len() > MAX_CARRIERS {
            return Err(PortalError::invalid(
                "designated_carriers",
                format!("at most {MAX_CARRIERS} carriers"),
            ));
        }
        for carrier in &carriers {
            within("designated_carriers", carrier, MAX_TEXT_BYTES)?;
        }
        paths.push("designated_carriers".to_owned());
        record.designated_carriers = carriers.iter().map(|c| c.trim().to_owned()).collect();
    }
    if paths.is_empty() {
        return contact(state, account_id, contact_id).await;
    }
    let field = if paths.len() == 1 {
        paths[0].clone()
    } else {
        "contact".to_owned()
    };
    let updated = state
        .directory
        .keys()?
        .update_contact(keys::UpdateContactRequest {
            account_id: account_id.to_owned(),
            contact: Some(record),
            update_mask: Some(prost_types::FieldMask { paths }),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| about_contact(error, &field))?;
    Ok(Contact::from_proto(updated))
}

/// Removes a contact and its pinned key.
pub async fn delete_contact(
    state: &PortalState,
    account_id: &str,
    contact_id: &str,
) -> Result<(), PortalError> {
    checked_id(contact_id)?;
    state
        .directory
        .keys()?
        .delete_contact(keys::DeleteContactRequest {
            account_id: account_id.to_owned(),
            contact_id: contact_id.to_owned(),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| about_contact(error, "id"))?;
    Ok(())
}

/// Answers a contact request: accepted, the contact corresponds with the identities it asked
/// and its messages move from Requests to the INBOX; refused, its mail is refused from now and
/// its messages move to Trash.
pub async fn answer_contact_request(
    state: &PortalState,
    account_id: &str,
    contact_id: &str,
    answer: ContactRequestAnswer,
) -> Result<ContactRequestAnswered, PortalError> {
    checked_id(contact_id)?;
    let identity_id = answer.identity_id.unwrap_or_default();
    if !identity_id.is_empty() {
        checked_id(&identity_id)?;
    }
    let answered = state
        .directory
        .imap()?
        .answer_contact_request(keys::AnswerContactRequestRequest {
            account_id: account_id.to_owned(),
            contact_id: contact_id.to_owned(),
            accept: answer.accept,
            identity_id,
        })
        .await
        .upstream(ServiceName::Imap)
        .map_err(|error| about_contact(error, "id"))?;
    tracing::info!(
        account_id,
        contact_id,
        accept = answer.accept,
        moved = answered.messages_moved,
        "contact request answered in the portal"
    );
    Ok(ContactRequestAnswered::from_proto(answered))
}

/// Pins a held key (`accept`) or discards it and keeps the old one.
pub async fn decide_key_change(
    state: &PortalState,
    account_id: &str,
    contact_id: &str,
    decision: KeyChangeDecision,
) -> Result<Contact, PortalError> {
    checked_id(contact_id)?;
    within("fingerprint", &decision.fingerprint, MAX_TEXT_BYTES)?;
    let decided = state
        .directory
        .keys()?
        .confirm_key_change(keys::ConfirmKeyChangeRequest {
            account_id: account_id.to_owned(),
            contact_id: contact_id.to_owned(),
            fingerprint: decision.fingerprint.trim().to_owned(),
            accept: decision.accept,
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| about_contact(error, "fingerprint"))?;
    tracing::info!(
        account_id,
        contact_id,
        accept = decision.accept,
        "key change decided in the portal"
    );
    Ok(Contact::from_proto(decided))
}

/// An introduction to send: this contact, to another of the account's contacts, from one of the
/// account's identities (which signs it).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Introduce {
    /// The contact who receives the introduction (a contact id).
    pub to: String,
    /// The identity it comes from (an identity id); the recipient's carrier takes it only from
    /// a sender it has pinned.
    pub from_identity: String,
}

/// An introduction on its way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IntroductionSent {
    /// The Message-ID of the mail that carries it.
    pub message_id: String,
}

/// Sends `contact_id` to the contact `to` as a signed vCard introduction (paper §6), inside an
/// ordinary message from one of the account's identities, signed and encrypted like any mail
/// and queued for delivery over tor. The recipient's carrier adds the contact with its
/// provenance when the message verifies as that identity's.
pub async fn introduce(
    state: &PortalState,
    account_id: &str,
    contact_id: &str,
    request: Introduce,
) -> Result<IntroductionSent, PortalError> {
    let introduced = contact(state, account_id, contact_id).await?;
    let recipient = contact(state, account_id, &request.to)
        .await
        .map_err(|error| match error {
            PortalError::NotFound(_) => PortalError::invalid("to", "no such contact"),
            other => other,
        })?;
    if recipient.id == introduced.id {
        return Err(PortalError::invalid(
            "to",
            "a contact is not introduced to itself",
        ));
    }
    let identity = crate::account::own_record(state, account_id, &request.from_identity)
        .await
        .map_err(|error| match error {
            PortalError::NotFound(_) => PortalError::invalid("from_identity", "no such identity"),
            other => other,
        })?;
    let mail = state
        .directory
        .keys()?
        .seal_introduction(keys::SealIntroductionRequest {
            introducer_identity_id: identity.identity_id.clone(),
            contact_id: introduced.id.clone(),
            to_contact_id: recipient.id.clone(),
        })
        .await
        .upstream(ServiceName::Keys)
        .map_err(|error| match error {
            PortalError::Conflict(detail) | PortalError::Rejected(detail)
                if detail.contains("no usable key") =>
            {
                PortalError::invalid("to", detail)
            }
            other => about_contact(other, "id"),
        })?;
    let message_id = mail.message_id.clone();
    state
        .directory
        .queue()?
        .enqueue(onionpost_runtime::address_book::enqueue_sealed(
            account_id,
            &identity.identity_id,
            &identity.address,
            mail,
            true,
        ))
        .await
        .upstream(ServiceName::Queue)?;
    tracing::info!(account_id, "introduction sent from the portal");
    Ok(IntroductionSent { message_id })
}
