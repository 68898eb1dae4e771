//! What the server says about itself: the greeting (RFC 3501 §7.1.1), CAPABILITY, ID
//! (RFC 2971), NAMESPACE (RFC 2342) and ENABLE (RFC 5161).

use imap_next::imap_types::auth::AuthMechanism;
use imap_next::imap_types::core::{IString, Tag, Vec1};
use imap_next::imap_types::extensions::enable::CapabilityEnable;
use imap_next::imap_types::extensions::namespace::Namespace;
use imap_next::imap_types::extensions::quota::Resource;
use imap_next::imap_types::response::{Capability, Code, Data, Greeting, GreetingKind};

use super::super::reply::{Out, ok};
use super::super::session::Session;

impl Session {
    /// RFC 3501 §7.1.1: the greeting carries the capabilities so clients save a round trip.
    pub(crate) fn greeting(&self) -> Greeting<'static> {
        Greeting::new(
            GreetingKind::Ok,
            Some(Code::Capability(self.capabilities())),
            "onionpost IMAP4rev1 ready",
        )
        .expect("greeting is valid")
    }

    pub(crate) fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.account.is_none() {
            if self.info.starttls {
                caps.push(Capability::StartTls);
            }
            if self.login_disabled() {
                caps.push(Capability::LoginDisabled);
            } else {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            }
        }
        caps.extend([
            Capability::LiteralPlus,
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::Namespace,
            Capability::Enable,
            Capability::Unselect,
            Capability::Quota,
            Capability::QuotaRes(Resource::Storage),
            Capability::Id,
            other_capability("SPECIAL-USE"),
        ]);
        Vec1::try_from(caps).expect("non-empty")
    }

    /// RFC 3501 §6.1.1 CAPABILITY.
    pub(crate) fn capability(&self, tag: &Tag<'static>) -> Vec<Out> {
        let caps = Data::Capability(self.capabilities());
        vec![Out::Data(caps), ok(tag, None, "CAPABILITY completed")]
    }

    /// RFC 2971 ID: a server may answer NIL and reveal nothing about itself.
    pub(crate) fn id(&self, tag: &Tag<'static>) -> Vec<Out> {
        vec![
            Out::Data(Data::Id { parameters: None }),
            ok(tag, None, "ID completed"),
        ]
    }

    /// RFC 2342 NAMESPACE: one personal namespace, no prefix, "/" delimiter.
    pub(crate) fn namespace(&self, tag: &Tag<'static>) -> Vec<Out> {
        let personal = vec![Namespace {
            prefix: IString::try_from("").expect("valid"),
            delimiter: Some('/'.try_into().expect("valid")),
            extensions: Vec::new(),
        }];
        vec![
            Out::Data(Data::Namespace {
                personal,
                other: Vec::new(),
                shared: Vec::new(),
            }),
            ok(tag, None, "NAMESPACE completed"),
        ]
    }

    /// RFC 5161 §3.2 ENABLE: none of what we support needs enabling, so nothing is enabled
    /// whatever was asked for.
    pub(crate) fn enable(
        &self,
        tag: &Tag<'static>,
        capabilities: Vec1<CapabilityEnable<'static>>,
    ) -> Vec<Out> {
        drop(capabilities);
        vec![
            Out::Data(Data::Enabled {
                capabilities: Vec::new(),
            }),
            ok(tag, None, "ENABLE completed"),
        ]
    }
}

fn other_capability(name: &'static str) -> Capability<'static> {
    Capability::try_from(name).expect("valid capability")
}
