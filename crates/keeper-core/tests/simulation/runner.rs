//! Running schedules: seeds, replay, failure reports, and the unsafe-rules check.

use super::*;

// ---------------------------------------------------------------------------------------------
// Driver.

pub(super) fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| {
        let v = v.trim();
        match v.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok(),
            None => v.parse().ok(),
        }
    })
}

pub(super) fn seed_of(base: u64, i: u64) -> u64 {
    let mut r = Rng::new(base.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    r.next()
}

pub(super) fn report_failure(
    test: &str,
    shape: Shape,
    faults: Faults,
    seed: u64,
    rules: Rules,
    liveness: bool,
    out: &Outcome,
) -> String {
    let (_, trace) = simulate(shape, faults, seed, rules, true, liveness);
    let trace = trace.unwrap_or_default();
    let all = std::env::var("PGK_SIM_TRACE").map(|v| v == "all").unwrap_or(false);
    let from = if all { 0 } else { trace.len().saturating_sub(120) };
    format!(
        "simulation failure: {}\n  seed {seed} ({} nodes: {} data + {} witness)\n  schedule: {}\n  replay: \
         PGK_SIM_SEED={seed} cargo test -p keeper-core --test simulation {test} -- --nocapture\n  trace (last {} of {} \
         lines):\n{}",
        out.violation.as_deref().unwrap_or("?"),
        shape.data + shape.witnesses,
        shape.data,
        shape.witnesses,
        out.desc,
        trace.len() - from,
        trace.len(),
        trace[from..].join("\n")
    )
}

pub(super) fn simulate(
    shape: Shape,
    faults: Faults,
    seed: u64,
    rules: Rules,
    trace: bool,
    assert_liveness: bool,
) -> (Outcome, Option<Vec<String>>) {
    let mut sim = Sim::new(shape, seed, rules, faults, trace);
    sim.assert_liveness = assert_liveness;
    sim.run()
}

pub(super) fn is_liveness(violation: &str) -> bool {
    violation.contains(": liveness:")
}

/// Runs `count` schedules (or the one in PGK_SIM_SEED) on every core, panics with the first
/// failure (in schedule order, so the report does not depend on the thread count).
pub(super) fn run_many(test: &str, shape: Shape, base: u64, count: u64, rules: Rules) {
    run_many_with(test, shape, base, count, rules, true)
}

/// `liveness`: assert liveness (else count its failures and check safety only).
pub(super) fn run_many_with(test: &str, shape: Shape, base: u64, count: u64, rules: Rules, liveness: bool) {
    run_scenario(test, shape, Faults::default(), base, count, rules, liveness);
}

/// Runs `count` schedules of `shape` with the extra `faults`.
pub(super) fn run_scenario(
    test: &str,
    shape: Shape,
    faults: Faults,
    base: u64,
    count: u64,
    rules: Rules,
    liveness: bool,
) -> Stats {
    let started = Instant::now();
    let rules = rules_from_env(rules);
    if let Some(seed) = env_u64("PGK_SIM_SEED") {
        let (out, trace) = simulate(shape, faults, seed, rules, true, liveness);
        if out.violation.is_some() {
            panic!("{}", report_failure(test, shape, faults, seed, rules, liveness, &out));
        }
        let trace = trace.unwrap_or_default();
        let all = std::env::var("PGK_SIM_TRACE").map(|v| v == "all").unwrap_or(false);
        let from = if all { 0 } else { trace.len().saturating_sub(120) };
        println!("seed {seed}: no violation ({})\n{}", out.desc, trace[from..].join("\n"));
        if let Some((category, s)) = &out.stats.stuck {
            println!("no master after the heal, none promised ({category}): {s}");
        }
        return out.stats;
    }
    let count = env_u64("PGK_SIM_SCHEDULES").unwrap_or(count);
    let keep_going = std::env::var("PGK_SIM_KEEP_GOING").is_ok();
    let threads = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1).clamp(1, count.max(1));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut results: Vec<(u64, u64, Outcome)> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let stop = &stop;
                sc.spawn(move || {
                    let mut v = Vec::new();
                    let mut i = t;
                    while i < count && (keep_going || !stop.load(std::sync::atomic::Ordering::Relaxed)) {
                        let seed = seed_of(base, i);
                        let (out, _) = simulate(shape, faults, seed, rules, false, liveness);
                        if out.violation.is_some() {
                            stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        v.push((i, seed, out));
                        i += threads;
                    }
                    v
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("simulation thread")).collect()
    });
    results.sort_by_key(|r| r.0);
    if !keep_going {
        if let Some((_, seed, out)) = results.iter().find(|r| r.2.violation.is_some()) {
            panic!("{}", report_failure(test, shape, faults, *seed, rules, liveness, out));
        }
    }
    let mut totals = Stats::default();
    let mut checked = 0u64;
    let mut stuck: Vec<(&'static str, u64, u64, String)> = Vec::new();
    let mut failures: Vec<(u64, String)> = Vec::new();
    let mut unlive: Vec<(u64, String)> = Vec::new();
    for (_, seed, out) in results {
        if let Some(l) = &out.stats.liveness_failure {
            unlive.push((seed, l.clone()));
        }
        if let Some(v) = out.violation {
            failures.push((seed, v));
            continue;
        }
        totals.wins += out.stats.wins;
        totals.writes += out.stats.writes;
        totals.events += out.stats.events;
        totals.acks += out.stats.acks;
        totals.withheld += out.stats.withheld;
        totals.hand_promotions += out.stats.hand_promotions;
        totals.hand_votes += out.stats.hand_votes;
        totals.hand_votes_healed += out.stats.hand_votes_healed;
        totals.freezes += out.stats.freezes;
        totals.switchovers += out.stats.switchovers;
        totals.member_changes += out.stats.member_changes;
        totals.member_refused += out.stats.member_refused;
        totals.sync_wins_checked += out.stats.sync_wins_checked;
        checked += out.stats.liveness_checked as u64;
        if let Some((category, s)) = out.stats.stuck {
            match stuck.iter_mut().find(|x| x.0 == category) {
                Some(x) => x.1 += 1,
                None => stuck.push((category, 1, seed, s)),
            }
        }
    }
    println!(
        "{test}: {count} schedules in {:.1}s ({} events), {} promotions, {} writes; liveness checked in {checked}; \
         healed clusters without a master where the rules promise none: {}",
        started.elapsed().as_secs_f64(),
        totals.events,
        totals.wins,
        totals.writes,
        stuck.iter().map(|x| x.1).sum::<u64>()
    );
    if faults.commits
        || faults.hand_promotions > 0
        || faults.freezes
        || faults.switchovers
        || faults.membership.is_some()
    {
        println!(
            "  {} commits acknowledged, {} withheld by the post-commit check; {} hand promotions, {} elections won \
             with a hand-promoted node's vote ({} after the heal); {} freezes; {} switchovers; {} membership changes \
             ({} refused: the previous one not acknowledged)",
            totals.acks,
            totals.withheld,
            totals.hand_promotions,
            totals.hand_votes,
            totals.hand_votes_healed,
            totals.freezes,
            totals.switchovers,
            totals.member_changes,
            totals.member_refused
        );
    }
    if faults.synchronous {
        println!(
            "  synchronous replication: {} elections won, each checked against every commit acknowledged before",
            totals.sync_wins_checked
        );
    }
    if !unlive.is_empty() {
        println!(
            "  {} schedules broke liveness (not asserted here), e.g. seed {}: {}",
            unlive.len(),
            unlive[0].0,
            unlive[0].1.chars().take(300).collect::<String>()
        );
    }
    for (category, n, seed, sample) in &stuck {
        println!("  {n} × {category}\n      e.g. seed {seed}: {}", sample.chars().take(400).collect::<String>());
    }
    if !failures.is_empty() {
        let safety = failures.iter().filter(|(_, v)| !is_liveness(v)).count();
        println!("{test}: {} failures ({safety} safety, {} liveness)", failures.len(), failures.len() - safety);
        for (seed, v) in failures.iter().take(6) {
            println!("  seed {seed}: {}", v.chars().take(300).collect::<String>());
        }
        panic!("{test}: {} of {count} schedules failed", failures.len());
    }
    totals
}
