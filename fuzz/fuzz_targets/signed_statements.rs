//! Texts an identity signs about itself, as another carrier or a correspondent hands them
//! over: carrier lists (binary, from WKD or the Onionpost-Carriers header of mail) and carry
//! statements (armoured, pasted or sent by the identity). Each is read unchecked (`peek`, to
//! learn whose key to check it with) and verified against Bob's certificate.
//!
//! The whole input is tried as a signed carrier list, a signed carry statement, and a message
//! whose header may carry a list.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use onionpost_fuzz::BOB;
use onionpost_keys::{Address, carrier_list, carry};

static BOB_ADDRESS: LazyLock<Address> = LazyLock::new(|| {
    Address::parse("bob@mjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrgeytcmjrk3xyd.onion")
        .expect("Bob's address")
});

fuzz_target!(|data: &[u8]| {
    let _ = carrier_list::peek(data);
    let _ = carrier_list::verify(data, &BOB, &BOB_ADDRESS);
    let _ = carry::peek(data);
    let _ = carry::verify(data, &BOB);
    if let Some(signed) = carrier_list::from_message(data) {
        let _ = carrier_list::verify(&signed, &BOB, &BOB_ADDRESS);
    }
});
