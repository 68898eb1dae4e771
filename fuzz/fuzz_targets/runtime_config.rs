//! The configuration: the TOML file and the ONIONPOST_* environment, flattened, checked key by
//! key and validated into the runtime's types (addresses, ports and port ranges, durations,
//! sizes, policies). Operators write it, often by hand and from templates; a typo must give a
//! clear error, never a panic.
//!
//! Input up to the first NUL is the file; the rest, one `NAME=value` a line, the environment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onionpost_runtime::Config;
use onionpost_runtime::config::ConfigFile;

fuzz_target!(|data: &[u8]| {
    let (file, env) = onionpost_fuzz::split_at_nul(data);
    let Ok(text) = std::str::from_utf8(file) else {
        return;
    };
    let file = ConfigFile {
        path: "onionpost.toml".into(),
        text: text.to_owned(),
    };
    let env: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let _ = Config::load(Some(&file), env);
});
