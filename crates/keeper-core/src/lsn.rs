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
    }
}
