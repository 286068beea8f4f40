//! The closed sets of the alerting vocabulary: channel kinds, a rule's stored state, and the
//! change a notification announces.

use std::fmt;
use std::str::FromStr;

use crate::error::AlertError;

/// Where a notification goes and in which shape ([`crate::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelKind {
    /// A Slack incoming webhook.
    Slack,
    /// A Discord webhook.
    Discord,
    /// A signed Standard Webhooks event.
    Webhook,
    /// Alertmanager's `POST /api/v2/alerts`.
    Alertmanager,
}

impl ChannelKind {
    pub const ALL: [ChannelKind; 4] =
        [ChannelKind::Slack, ChannelKind::Discord, ChannelKind::Webhook, ChannelKind::Alertmanager];

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Discord => "discord",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Alertmanager => "alertmanager",
        }
    }
}

impl FromStr for ChannelKind {
    type Err = AlertError;

    fn from_str(s: &str) -> Result<ChannelKind, AlertError> {
        ChannelKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            AlertError::Config(format!("kind must be slack, discord, webhook or alertmanager, not {s:?}"))
        })
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule's state as the catalog keeps it between evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Ok,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Firing => "firing",
        }
    }

    /// A state read back from the catalog.
    pub fn parse(s: &str) -> Result<AlertState, AlertError> {
        match s {
            "ok" => Ok(AlertState::Ok),
            "firing" => Ok(AlertState::Firing),
            other => {
                Err(AlertError::Store(tracelight_model::slo::StoreError(format!("unknown alert state {other:?}"))))
            }
        }
    }
}

/// What a notification announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Firing,
    Resolved,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Firing => "firing",
            Change::Resolved => "resolved",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_round_trip_and_unknown_ones_are_refused() {
        for k in ChannelKind::ALL {
            assert_eq!(k.as_str().parse::<ChannelKind>().unwrap(), k);
        }
        assert!("teams".parse::<ChannelKind>().unwrap_err().to_string().contains("slack, discord"));
        for s in [AlertState::Ok, AlertState::Firing] {
            assert_eq!(AlertState::parse(s.as_str()).unwrap(), s);
        }
        assert!(AlertState::parse("resolved").is_err(), "a notification's change is not a stored state");
    }
}
