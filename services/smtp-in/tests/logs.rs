//! No address or onion reaches the log at info or warn (design: logs name no correspondent).
//! Another service's error text may name one (keys: "no usable key for recipient …"), so the
//! session code logs such text at debug only; this test reads the source to keep it so.

use std::path::Path;

#[test]
fn session_logs_no_foreign_error_text_at_info_or_warn() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/session");
    let mut offending = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let source = std::fs::read_to_string(&path).unwrap();
        // Each logging call, from its macro name to the end of its arguments.
        for (start, _) in source.match_indices("tracing::") {
            let call = &source[start..];
            let Some(end) = call.find(");") else { continue };
            let call = &call[..end];
            let loud = ["info!", "warn!", "error!"]
                .iter()
                .any(|level| call["tracing::".len()..].starts_with(level));
            let names = ["%error", "address", "onion", "reverse_path", "from", "to ="]
                .iter()
                .any(|field| call.contains(field));
            if loud && names {
                offending.push(format!("{}: {call}", path.display()));
            }
        }
    }
    assert!(offending.is_empty(), "{offending:#?}");
}
