//! No address or onion reaches the log at info or warn (issue 18, item 11): the gateway logs
//! other services' error text, which may name an identity's or a correspondent's address, at
//! debug only; this test reads the source to keep it so.

use std::path::Path;

use onionpost_runtime::conformance::loud_logs_naming_addresses;

#[test]
fn gateway_logs_no_foreign_error_text_at_info_or_warn() {
    // The code that calls other services (keys, imap) and the outside MTAs.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let offending = loud_logs_naming_addresses(&[src.join("inbound.rs"), src.join("outbound.rs")]);
    assert!(offending.is_empty(), "{offending:#?}");
}
