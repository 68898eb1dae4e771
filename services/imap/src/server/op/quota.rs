//! GETQUOTA, GETQUOTAROOT and SETQUOTA (RFC 9208): one quota root, `""`, for the whole account,
//! set by the account's plan.

use imap_next::imap_types::core::{AString, Tag, Vec1};
use imap_next::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_next::imap_types::mailbox::Mailbox;
use imap_next::imap_types::response::{Data, Status};

use super::super::reply::{Handled, Out, code_other, ok, status_no, store_error};
use super::super::session::{Session, mailbox_name};

impl Session {
    pub(crate) async fn get_quota(&self, tag: &Tag<'static>, root: AString<'static>) -> Handled {
        if !root.as_ref().is_empty() {
            return Err(status_no(
                tag,
                Some(code_other("NONEXISTENT")),
                "no such quota root; the account's root is \"\"",
            ));
        }
        let quota = self.quota_data(tag).await?;
        Ok(vec![Out::Data(quota), ok(tag, None, "GETQUOTA completed")])
    }

    pub(crate) async fn get_quota_root(
        &self,
        tag: &Tag<'static>,
        mailbox: Mailbox<'static>,
    ) -> Handled {
        let name = mailbox_name(&mailbox);
        self.shared
            .store
            .status(self.account_id(), &name)
            .await
            .map_err(|e| store_error(tag, e, false))?;
        let quota = self.quota_data(tag).await?;
        Ok(vec![
            Out::Data(Data::QuotaRoot {
                mailbox,
                roots: vec![AString::try_from("").expect("valid")],
            }),
            Out::Data(quota),
            ok(tag, None, "GETQUOTAROOT completed"),
        ])
    }

    pub(crate) fn set_quota(&self, tag: &Tag<'static>) -> Status<'static> {
        status_no(
            tag,
            Some(code_other("NOPERM")),
            "quotas are set by the plan, not by the client",
        )
    }

    async fn quota_data(&self, tag: &Tag<'static>) -> Result<Data<'static>, Status<'static>> {
        let usage = self
            .shared
            .store
            .quota(self.account_id())
            .await
            .map_err(|e| store_error(tag, e, false))?;
        // RFC 9208 §5.1: STORAGE is in units of 1024 octets, rounded up.
        let quotas = vec![QuotaGet {
            resource: Resource::Storage,
            usage: usage.used_bytes.div_ceil(1024),
            limit: usage.limit_bytes / 1024,
        }];
        Ok(Data::Quota {
            root: AString::try_from("").expect("valid"),
            quotas: Vec1::try_from(quotas).expect("non-empty"),
        })
    }
}
