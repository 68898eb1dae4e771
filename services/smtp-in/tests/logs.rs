//! No address or onion reaches the log at info or warn (design: logs name no correspondent).
//! Another service's error text may name one (keys: "no usable key for recipient …"), so the
//! session code logs such text at debug only; this test reads the source to keep it so.

use std::path::Path;

use onionpost_runtime::conformance::{loud_logs_naming_addresses, rust_files};

#[test]
fn session_logs_no_foreign_error_text_at_info_or_warn() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session");
    let offending = loud_logs_naming_addresses(&rust_files(&dir));
    assert!(offending.is_empty(), "{offending:#?}");
}
