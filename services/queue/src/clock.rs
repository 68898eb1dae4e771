//! Time as the queue sees it: the runtime's injected clock (`onionpost_runtime::time`), so
//! tests can move it (retry schedules span days).

pub use onionpost_runtime::time::{Clock, ManualClock, SystemClock};
