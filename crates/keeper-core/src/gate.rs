//! The commit gate: whether this server's commits may be acknowledged (checked in every
//! backend before and after each commit, crates/pg_keeper/src/fence.rs).
//!
//! What the worker and the SQL functions set is a [`Setting`]; what a commit sees is the
//! [`Gate`] that setting gives at an instant ([`Setting::gate`]). Two settings are for good
//! until the server restarts ([`Setting::then`]): deposed (a newer term elected another
//! node) and stepped down (a planned switchover): a round in flight, begun before, must not
//! reopen what they closed.

/// What was decided about the gate. Stored in shared memory as [`Setting::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// Nothing decided since the server started: whether it is a cluster member is read at
    /// the first commit or worker round.
    Unknown,
    /// Not in a cluster that can fail over without this node: commits pass.
    Open,
    /// Commits pass while the lease runs.
    Lease,
    /// Another node was elected in a newer term: refused until rejoined.
    Deposed,
    /// `step_down()` for a planned switchover: refused until restarted.
    SteppedDown,
}

impl Setting {
    pub fn code(self) -> u8 {
        match self {
            Setting::Open => 0,
            Setting::Lease => 1,
            Setting::Deposed => 2,
            Setting::SteppedDown => 3,
            Setting::Unknown => 4,
        }
    }

    pub fn from_code(c: u8) -> Setting {
        match c {
            0 => Setting::Open,
            1 => Setting::Lease,
            2 => Setting::Deposed,
            3 => Setting::SteppedDown,
            _ => Setting::Unknown,
        }
    }

    /// Closed for good (until a restart).
    pub fn is_final(self) -> bool {
        matches!(self, Setting::Deposed | Setting::SteppedDown)
    }

    /// The setting after someone sets `new`: deposed and stepped down are never undone.
    pub fn then(self, new: Setting) -> Setting {
        if self.is_final() {
            self
        } else {
            new
        }
    }

    /// What a commit sees at `now_ms` (the clock `lease_until_ms` is on). `why`: why a lease
    /// is missing (what the worker last saw); `deposed`: by whom, in which term.
    pub fn gate(self, now_ms: i64, lease_until_ms: i64, why: &str, deposed: (&str, u64)) -> Gate {
        match self {
            Setting::Open => Gate::Open,
            Setting::Deposed => Gate::Deposed { by: deposed.0.to_string(), term: deposed.1 },
            Setting::SteppedDown => Gate::SteppedDown,
            Setting::Lease | Setting::Unknown if now_ms < lease_until_ms => Gate::Open,
            Setting::Lease | Setting::Unknown => Gate::Fenced { why: why.to_string() },
        }
    }
}

/// The gate of a server that node_info does not list (or whose database has no pgkeeper):
/// a server in no cluster is open, so that it is never fenced, even when its worker cannot
/// run; one that was a member (its vote record exists: written at its first registered
/// round) and is missing now was deleted, or its pg_keeper.database changed: written to like
/// that, it could take commits beside the real master, so it waits for a lease (and gets none).
pub fn unregistered(was_member: bool) -> Setting {
    if was_member {
        Setting::Lease
    } else {
        Setting::Open
    }
}

/// Whether the gate may open without a lease (two data nodes, no witness), given the
/// membership version the deciding round read and the one a membership change since has
/// raised it to (`add_node` / `del_node` raise it before their commit and close such a gate,
/// so that a round in flight with the old node_info cannot reopen it). Else: why not.
pub fn without_lease(read: crate::membership::Version, needed: crate::membership::Version) -> Result<(), &'static str> {
    if read >= needed {
        Ok(())
    } else {
        Err("a membership change is being made")
    }
}

/// What the commit gate says right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// No lease: commits wait (a lease may come back). `why`: what the worker last saw.
    Fenced {
        why: String,
    },
    /// Another node was elected master in a newer term: commits fail until rejoined.
    Deposed {
        by: String,
        term: u64,
    },
    /// Stepped down for a planned switchover: commits fail until restarted.
    SteppedDown,
}

impl Gate {
    pub fn kind(&self) -> GateKind {
        match self {
            Gate::Open => GateKind::Open,
            Gate::Fenced { .. } => GateKind::Fenced,
            Gate::Deposed { .. } => GateKind::Deposed,
            Gate::SteppedDown => GateKind::SteppedDown,
        }
    }

    /// For people (status's `commits` column, the process title).
    pub fn describe(&self) -> String {
        match self {
            Gate::Open => "open".into(),
            Gate::Fenced { .. } => "fenced".into(),
            Gate::Deposed { by, term } => format!("deposed by {by} (term {term})"),
            Gate::SteppedDown => "stepped down (switchover)".into(),
        }
    }
}

/// The gate as `pgkeeper.status()`'s `gate` column (SQL enum `pgkeeper.gate`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    Open,
    Fenced,
    Deposed,
    SteppedDown,
}

impl GateKind {
    pub const ALL: [GateKind; 4] = [GateKind::Open, GateKind::Fenced, GateKind::Deposed, GateKind::SteppedDown];

    pub fn as_str(self) -> &'static str {
        match self {
            GateKind::Open => "open",
            GateKind::Fenced => "fenced",
            GateKind::Deposed => "deposed",
            GateKind::SteppedDown => "stepped_down",
        }
    }

    pub fn parse(s: &str) -> Option<GateKind> {
        GateKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What needs an operator (or automatic rejoin), as `pgkeeper.status()`'s `attention`
/// column (SQL enum `pgkeeper.attention`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attention {
    #[default]
    None,
    /// This node cannot follow the master as it is (an old master, WAL past the new
    /// timeline's fork point): pg_rewind or a new base backup (`pgkeeper rejoin`).
    NeedsRejoin,
    /// More than one node accepts writes.
    Conflict,
}

impl Attention {
    pub const ALL: [Attention; 3] = [Attention::None, Attention::NeedsRejoin, Attention::Conflict];

    pub fn as_str(self) -> &'static str {
        match self {
            Attention::None => "none",
            Attention::NeedsRejoin => "needs_rejoin",
            Attention::Conflict => "conflict",
        }
    }

    pub fn parse(s: &str) -> Option<Attention> {
        Attention::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Attention {
        Attention::ALL.get(c as usize).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposed_and_stepped_down_are_for_good() {
        for s in [Setting::Deposed, Setting::SteppedDown] {
            for new in [Setting::Open, Setting::Lease, Setting::Unknown, Setting::Deposed, Setting::SteppedDown] {
                assert_eq!(s.then(new), s);
            }
        }
        assert_eq!(Setting::Lease.then(Setting::Open), Setting::Open);
        assert_eq!(Setting::Open.then(Setting::Deposed), Setting::Deposed);
    }

    #[test]
    fn the_lease_opens_the_gate_until_it_ends() {
        let g = |now| Setting::Lease.gate(now, 1000, "no majority", ("", 0));
        assert_eq!(g(999), Gate::Open);
        assert_eq!(g(1000), Gate::Fenced { why: "no majority".into() });
        assert_eq!(
            Setting::Deposed.gate(0, 1000, "", ("node2", 3)).describe(),
            "deposed by node2 (term 3)".to_string()
        );
    }

    #[test]
    fn codes_and_names_round_trip() {
        for s in [Setting::Unknown, Setting::Open, Setting::Lease, Setting::Deposed, Setting::SteppedDown] {
            assert_eq!(Setting::from_code(s.code()), s);
        }
        for k in GateKind::ALL {
            assert_eq!(GateKind::parse(k.as_str()), Some(k));
        }
        for a in Attention::ALL {
            assert_eq!(Attention::parse(a.as_str()), Some(a));
            assert_eq!(Attention::from_code(a.code()), a);
        }
    }
}
