//! Time, injected: the runtime's clock (`onionpost_runtime::time`), so account states (active,
//! grace, expired) and back-off can be tested by moving a clock instead of waiting.

pub use onionpost_runtime::time::{Clock, ManualClock, SystemClock};
