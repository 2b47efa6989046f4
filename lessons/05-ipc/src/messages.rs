//! The lesson's own message types, one enum per direction.
//!
//! The supervisor carries any JSON; these enums give it a type on each side,
//! the way a TypeScript discriminated union would in Node. serde checks every
//! message on arrival: a message of the wrong shape is an error value at the
//! receiver, never a crash and never a half-read object.

use serde::{Deserialize, Serialize};

// ANCHOR: types
/// What the primary tells workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromPrimary {
    /// A new configuration: every worker applies it and acknowledges.
    Config { version: u32, greeting: String },
}

/// What workers tell the primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    /// "I now run configuration `version`."
    ConfigApplied { version: u32 },
}
// ANCHOR_END: types

/// The answer to the primary's stats question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub pid: u32,
    pub requests: u64,
    pub config_version: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json() -> Result<(), serde_json::Error> {
        let config = FromPrimary::Config {
            version: 2,
            greeting: "hi".into(),
        };
        let json = serde_json::to_value(&config)?;
        assert_eq!(
            json,
            serde_json::json!({"type": "config", "version": 2, "greeting": "hi"})
        );
        assert_eq!(serde_json::from_value::<FromPrimary>(json)?, config);
        Ok(())
    }

    #[test]
    fn a_message_of_the_wrong_shape_is_an_error_not_a_crash() {
        let wrong = serde_json::json!({"type": "config", "version": "two"});
        assert!(serde_json::from_value::<FromPrimary>(wrong).is_err());
    }
}
