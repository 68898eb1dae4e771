//! Outbound mail on its way to the clearnet: the header rewriting that leaves no onion address
//! or client trace (From to the alias, To and Cc without onion recipients, message ids, the
//! allow-list of fields, RFC 2047 encoded words), the body's onion-address filter
//! (quoted-printable and encoded words decoded) and the address-list splitter. A submitting
//! client writes every byte of these messages; the gateway must hold whatever it sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_gateway::rewrite;

const ALIAS: &str = "x7q2m@gateway.example";

fuzz_target!(|message: &[u8]| {
    let rewritten = rewrite::for_clearnet(message, ALIAS, "gateway.example");
    let (fields, body) = rewrite::split(message);
    let _ = rewrite::names_onion_address(body);
    for field in &fields {
        for entry in rewrite::split_address_list(&field.value) {
            let _ = rewrite::address_of(&entry);
        }
    }
    // Whatever came in, the copy that leaves comes from the alias.
    let (out_fields, _) = rewrite::split(&rewritten);
    let from = rewrite::header(&out_fields, "From").expect("a From field");
    assert!(from.ends_with(&format!("<{ALIAS}>")), "From: {from}");
});
