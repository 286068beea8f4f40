//! SLO alerting, apart from the UI and the API: the evaluator keeps per-minute SLI counts in
//! the catalog and computes burn rates and alert states from them ([`SloEngine`]), records each
//! state change with its notifications in one transaction, and the notifier delivers the
//! outbox to Slack, Discord, signed webhooks and Alertmanager ([`Notifier`]).
//!
//! It depends on `tracelight-model` only (the query service, the SLO math and the store are
//! traits there), so the `alert` role runs without the web crate's routes, and the web crate
//! only reads the evaluator's state.

pub mod deliver;
pub mod engine;
pub mod error;
pub mod kinds;
pub mod payload;

pub use deliver::{Channel, Cidr, Notifier};
pub use engine::{REROLL_MINUTES, Route, SloEngine, alert_key};
pub use error::AlertError;
pub use kinds::{AlertState, Change, ChannelKind};
pub use payload::{Alert, payload};
