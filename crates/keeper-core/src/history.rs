//! The cluster's history: what happened, when, in which term, to which nodes, and why.
//! Each node appends what it sees to its own log (outside WAL, so a fenced or deposed
//! master keeps its events through a rejoin); the master copies its log into the
//! replicated table `pgkeeper.history`, so every node can read the failovers.

/// One kind of event. The names are the table's `event` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A standby won an election because the master failed.
    Failover,
    /// A standby won an election the master asked for (planned).
    Switchover,
    /// The election this node stood in: won (with term and votes) or not.
    ElectionWon,
    ElectionLost,
    /// Synchronous replication switched to asynchronous, and back.
    Degraded,
    Restored,
    /// The master's gate closed (no lease) and opened again.
    Fenced,
    Unfenced,
    /// A master saw a newer term: its gate stays closed until it rejoins.
    Deposed,
    /// A master stepped down for a switchover.
    SteppedDown,
    /// A node rejoined as a standby of the master (pgkeeper rejoin).
    Rejoined,
    /// This standby follows a new master (primary_conninfo re-pointed).
    Followed,
    /// Cluster-wide maintenance mode on and off.
    Paused,
    Resumed,
    /// An operator forced a failover (`pgkeeper failover --force`).
    ForcedFailover,
}

pub const ALL: [Kind; 15] = [
    Kind::Failover,
    Kind::Switchover,
    Kind::ElectionWon,
    Kind::ElectionLost,
    Kind::Degraded,
    Kind::Restored,
    Kind::Fenced,
    Kind::Unfenced,
    Kind::Deposed,
    Kind::SteppedDown,
    Kind::Rejoined,
    Kind::Followed,
    Kind::Paused,
    Kind::Resumed,
    Kind::ForcedFailover,
];

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Failover => "failover",
            Kind::Switchover => "switchover",
            Kind::ElectionWon => "election won",
            Kind::ElectionLost => "election lost",
            Kind::Degraded => "degraded",
            Kind::Restored => "restored",
            Kind::Fenced => "fenced",
            Kind::Unfenced => "unfenced",
            Kind::Deposed => "deposed",
            Kind::SteppedDown => "stepped down",
            Kind::Rejoined => "rejoined",
            Kind::Followed => "followed",
            Kind::Paused => "paused",
            Kind::Resumed => "resumed",
            Kind::ForcedFailover => "forced failover",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One event, as a node's log holds it: one line each, fields separated by tabs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, ... per node: (node, seq) names an event in every copy of it.
    pub seq: u64,
    /// Unix time in milliseconds (the node's wall clock).
    pub at_ms: i64,
    pub node: String,
    pub kind: Kind,
    pub term: u64,
    /// The nodes it concerns (the old and the new master, the voters...).
    pub nodes: Vec<String>,
    pub reason: String,
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

impl Event {
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.seq,
            self.at_ms,
            escape(&self.node),
            self.kind.as_str(),
            self.term,
            self.nodes.iter().map(|n| escape(n).replace(',', "\\,")).collect::<Vec<_>>().join(","),
            escape(&self.reason)
        )
    }

    /// One line of a log (a torn last line, from a crash while appending, is an error the
    /// reader skips).
    pub fn parse_line(line: &str) -> Result<Event, String> {
        let f: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
        let [seq, at, node, kind, term, nodes, reason] = f[..] else {
            return Err(format!("expected 7 fields, found {}", f.len()));
        };
        let num = |s: &str, what: &str| s.parse::<u64>().map_err(|_| format!("bad {what} {s:?}"));
        Ok(Event {
            seq: num(seq, "seq")?,
            at_ms: at.parse().map_err(|_| format!("bad time {at:?}"))?,
            node: unescape(node),
            kind: Kind::parse(kind).ok_or_else(|| format!("unknown event {kind:?}"))?,
            term: num(term, "term")?,
            nodes: split_nodes(nodes),
            reason: unescape(reason),
        })
    }
}

fn split_nodes(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ',' => out.push(unescape(&std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(unescape(&cur));
    }
    out
}

/// A log's events, skipping lines that do not parse; the next seq to use.
pub fn parse_log(text: &str) -> (Vec<Event>, u64) {
    let events: Vec<Event> = text.lines().filter_map(|l| Event::parse_line(l).ok()).collect();
    let next = events.iter().map(|e| e.seq).max().unwrap_or(0) + 1;
    (events, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
    }

    #[test]
    fn lines_round_trip() {
        let e = Event {
            seq: 7,
            at_ms: 1_700_000_000_123,
            node: "n\t1".into(),
            kind: Kind::ElectionWon,
            term: 3,
            nodes: vec!["a,b".into(), "c\\".into(), "".into()],
            reason: "line\nbreak \\ tab\t".into(),
        };
        let line = e.to_line();
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(Event::parse_line(&line), Ok(e.clone()));
        let none = Event { nodes: vec![], ..e.clone() };
        assert_eq!(Event::parse_line(&none.to_line()), Ok(none));
        let (evs, next) = parse_log(&format!("{}{}garbage\n1\t2", e.to_line(), e.to_line()));
        assert_eq!(evs.len(), 2);
        assert_eq!(next, 8);
    }
}
