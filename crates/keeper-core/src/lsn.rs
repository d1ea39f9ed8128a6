//! WAL positions ("16/B374D848") and the rule for following a new timeline.

/// Parse PostgreSQL's textual LSN.
pub fn parse(s: &str) -> Option<u64> {
    let (hi, lo) = s.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

pub fn format(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// The switch point of the newest timeline in a timeline history file
/// ("1\t0/3000148\tno recovery target specified" per line).
pub fn fork_point(history: &str) -> Option<u64> {
    history
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1).and_then(parse))
        .next_back()
}

/// The newest timeline switch in a history file: the parent timeline and where it forked.
pub fn last_switch(history: &str) -> Option<(u32, u64)> {
    history
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.parse().ok()?, parse(f.next()?)?))
        })
        .next_back()
}

/// A WAL position with its timeline, ordered timeline first (Raft's "last log term, then
/// index"): WAL of an old timeline past a fork point is history nobody acknowledged under the
/// newer timeline's master, so a node holding it is less advanced than any node on the newer
/// timeline, however far its LSN went; on one timeline the LSN decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub tli: u32,
    pub lsn: u64,
}

impl Position {
    pub fn new(tli: u32, lsn: u64) -> Position {
        Position { tli, lsn }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on timeline {}", format(self.lsn), self.tli)
    }
}

/// A standby can stream from a newly promoted node only if it holds no WAL past the point
/// where the new timeline forked off; otherwise it must be rewound (pg_rewind) or rebuilt.
pub fn can_follow(my_lsn: u64, fork: u64) -> bool {
    my_lsn <= fork
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(parse("0/3000148"), Some(0x3000148));
        assert_eq!(parse("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(format(parse("16/B374D848").unwrap()), "16/B374D848");
        assert_eq!(parse("nope"), None);
        assert_eq!(parse("1/zz"), None);
    }

    #[test]
    fn history_fork_point_is_last_line() {
        let h = "1\t0/3000148\tno recovery target specified\n2\t0/5000000\tno recovery target specified\n";
        assert_eq!(fork_point(h), Some(0x5000000));
        assert_eq!(fork_point(""), None);
        assert!(can_follow(0x5000000, 0x5000000));
        assert!(!can_follow(0x5000001, 0x5000000));
        assert_eq!(last_switch(h), Some((2, 0x5000000)));
        assert_eq!(last_switch(""), None);
    }

    #[test]
    fn positions_order_timeline_first() {
        // WAL of timeline 1 past the fork of timeline 2 is not "more advanced".
        assert!(Position::new(1, 0x9000000) < Position::new(2, 0x5000010));
        assert!(Position::new(2, 0x5000000) < Position::new(2, 0x5000010));
        assert_eq!(Position::new(2, 5).max(Position::new(1, 9)), Position::new(2, 5));
    }
}
