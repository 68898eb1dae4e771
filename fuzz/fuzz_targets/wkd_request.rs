//! The WKD directory an identity serves on its own onion (virtual port 80): the fuzzer's bytes
//! are an HTTP/1.1 client's side of the connection (hyper's request parser, axum's routing and
//! path extraction, our Host header check), against a directory holding Alice's key and
//! carrier list. Anyone who knows the onion can connect.
#![no_main]

use std::sync::LazyLock;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use libfuzzer_sys::fuzz_target;
use onionpost_fuzz::ALICE;
use onionpost_keys::wkd::{WkdDirectory, router};

static DIRECTORY: LazyLock<WkdDirectory> = LazyLock::new(|| {
    let directory = WkdDirectory::new();
    directory
        .publish(ALICE.address(), &ALICE.public_cert())
        .expect("Alice's key is bound to her address");
    directory.publish_carriers(ALICE.address(), Some(b"signed list".to_vec()));
    directory
});

fuzz_target!(|request: &[u8]| {
    let service = TowerToHyperService::new(router(DIRECTORY.clone()));
    onionpost_fuzz::block_on(onionpost_fuzz::converse(request, |stream| async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    }));
});
