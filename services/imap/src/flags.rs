//! IMAP flags in one place (RFC 3501 §2.3.2): their canonical spelling, how they are compared,
//! and how they convert to and from the protocol's types.
//!
//! Flags are compared case-insensitively; the store keeps system flags in the spelling RFC 3501
//! writes them, so [`canonical_flags`] runs before anything is stored. The stored text form
//! (space-separated in one column) is the store's business (`store::split_flags`).

use imap_next::imap_types::core::Atom;
use imap_next::imap_types::flag::{Flag as ImapFlag, FlagFetch};

use crate::mailstore::Flag;

/// The system flags a client may set, in canonical spelling (`\Recent` is the server's).
pub(crate) const SYSTEM_FLAGS: &[&str] =
    &["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];

/// Flags in canonical spelling (system flags as RFC 3501 writes them), without duplicates;
/// `\Recent` is the server's to set and is dropped.
pub(crate) fn canonical_flags(flags: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(flags.len());
    for flag in flags {
        let flag = flag.trim();
        if flag.eq_ignore_ascii_case("\\Recent") {
            continue;
        }
        let canonical = if flag.starts_with('\\') {
            SYSTEM_FLAGS
                .iter()
                .find(|system| system.eq_ignore_ascii_case(flag))
                .map(|system| (*system).to_owned())
                .ok_or_else(|| format!("{flag} is not a system flag"))?
        } else {
            let valid = !flag.is_empty()
                && flag.len() <= 128
                && flag
                    .bytes()
                    .all(|byte| byte.is_ascii_graphic() && !b"(){%*\"\\]".contains(&byte));
            if !valid {
                return Err("a keyword must be printable ASCII without specials".to_owned());
            }
            flag.to_owned()
        };
        if !out.iter().any(|have| have.eq_ignore_ascii_case(&canonical)) {
            out.push(canonical);
        }
    }
    Ok(out)
}

/// Whether `flags` holds `wanted`, compared case-insensitively.
pub(crate) fn has_flag(flags: &[Flag], wanted: &str) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case(wanted))
}

/// Whether two flag lists hold the same flags, whatever their order and case.
pub(crate) fn same_flags(a: &[Flag], b: &[Flag]) -> bool {
    a.len() == b.len() && a.iter().all(|flag| has_flag(b, flag))
}

/// The system flags as FLAGS and PERMANENTFLAGS list them (RFC 3501 §7.2.6, §7.1).
pub(crate) fn system_flags() -> Vec<ImapFlag<'static>> {
    vec![
        ImapFlag::Answered,
        ImapFlag::Flagged,
        ImapFlag::Deleted,
        ImapFlag::Seen,
        ImapFlag::Draft,
    ]
}

/// A flag from a command (STORE, APPEND) as the store names it.
pub(crate) fn flag_string(flag: &ImapFlag<'_>) -> Flag {
    match flag {
        ImapFlag::Answered => "\\Answered".to_owned(),
        ImapFlag::Deleted => "\\Deleted".to_owned(),
        ImapFlag::Draft => "\\Draft".to_owned(),
        ImapFlag::Flagged => "\\Flagged".to_owned(),
        ImapFlag::Seen => "\\Seen".to_owned(),
        other => other.to_string(),
    }
}

/// Stored flags as a FETCH FLAGS item shows them.
pub(crate) fn flag_fetch(flags: &[Flag]) -> Vec<FlagFetch<'static>> {
    flags
        .iter()
        .filter_map(|flag| imap_flag(flag))
        .map(FlagFetch::Flag)
        .collect()
}

pub(crate) fn imap_flag(flag: &str) -> Option<ImapFlag<'static>> {
    if let Some(system) = flag.strip_prefix('\\') {
        let atom = Atom::try_from(system.to_owned()).ok()?;
        let flag = ImapFlag::system(atom);
        // `\Recent` and unknown system flags are not stored flags.
        return match flag {
            ImapFlag::Extension(_) => None,
            flag => Some(flag),
        };
    }
    Atom::try_from(flag.to_owned()).ok().map(ImapFlag::Keyword)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spelling() {
        let flags = canonical_flags(&[
            "\\seen".to_owned(),
            "\\SEEN".to_owned(),
            "\\Recent".to_owned(),
            "$Forwarded".to_owned(),
        ])
        .unwrap();
        assert_eq!(flags, vec!["\\Seen".to_owned(), "$Forwarded".to_owned()]);
        assert!(canonical_flags(&["\\Bogus".to_owned()]).is_err());
        assert!(canonical_flags(&["a b".to_owned()]).is_err());
    }

    #[test]
    fn comparison_ignores_case_and_order() {
        let a = vec!["\\Seen".to_owned(), "Work".to_owned()];
        let b = vec!["work".to_owned(), "\\seen".to_owned()];
        assert!(has_flag(&a, "\\SEEN"));
        assert!(same_flags(&a, &b));
        assert!(!same_flags(&a, &b[..1]));
    }
}
