//! Settings as the decisions see them, and the resolution of the seed's spelled-differently
//! aliases (`keepalives_time`, `keepalives_count`).

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Interval between polling rounds.
    pub keepalive_time: Duration,
    /// Consecutive failed rounds before acting.
    pub keepalive_count: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { keepalive_time: Duration::from_secs(5), keepalive_count: 1 }
    }
}

/// A setting that may be given under its documented name or under a deprecated alias.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aliased<T> {
    /// Value of the documented name, and whether it was set explicitly (not left at default).
    pub documented: (T, bool),
    /// Value of the alias when it was set explicitly.
    pub alias: Option<T>,
}

/// The value to use: the documented name wins when both are set; the alias is used when only
/// it is set. The bool says whether a deprecation warning is due (the alias was set at all).
pub fn resolve<T: Copy>(a: Aliased<T>) -> (T, bool) {
    match (a.documented, a.alias) {
        ((v, true), Some(_)) => (v, true),
        ((_, false), Some(alias)) => (alias, true),
        ((v, _), None) => (v, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_name_wins() {
        assert_eq!(resolve(Aliased { documented: (2.0, true), alias: Some(9.0) }), (2.0, true));
        assert_eq!(resolve(Aliased { documented: (5.0, false), alias: Some(9.0) }), (9.0, true));
        assert_eq!(resolve(Aliased { documented: (5.0, false), alias: None }), (5.0, false));
        assert_eq!(resolve(Aliased { documented: (3, true), alias: None }), (3, false));
    }
}
