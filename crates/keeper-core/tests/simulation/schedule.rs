//! The schedule of a run: base faults and the extra ones, drawn up front from the seed.

use super::*;

impl Sim {
    pub(super) fn generate(&mut self) {
        let n = self.n;
        let dur = self.rng.range(30_000_000, 60_000_000);
        let mut t = self.rng.range(300_000, 3_000_000);
        while t < dur {
            let d = if self.rng.chance(1, 5) {
                self.rng.range(5_000_000, 15_000_000)
            } else {
                self.rng.range(200_000, 5_000_000)
            };
            let ev = match self.rng.below(100) {
                0..=11 => Ev::Crash { target: Target::Master, down_for: d },
                12..=17 => Ev::Crash { target: Target::Node(1), down_for: d },
                18..=27 => Ev::Crash { target: Target::Random, down_for: d },
                28..=42 => {
                    let group = (1 + self.rng.below((1 << n) - 2)) as u32;
                    Ev::Net { action: NetAction::Partition { group }, dur: d }
                }
                43..=57 => {
                    let target = if self.rng.chance(1, 2) { Target::Master } else { Target::Random };
                    Ev::Net { action: NetAction::Isolate { target, dir: self.rng.below(3) as u8 }, dur: d }
                }
                58..=69 => {
                    let (a, b) = self.pair();
                    Ev::Net { action: NetAction::Cut { a, b, both: self.rng.chance(1, 2) }, dur: d }
                }
                70..=82 => {
                    let (a, b) = self.pair();
                    let period = self.rng.range(50_000, 600_000);
                    Ev::Flap { a, b, both: self.rng.chance(1, 2), period, until: t + d, down: false }
                }
                _ => {
                    let target = if self.rng.chance(1, 2) { Target::Master } else { Target::Random };
                    Ev::Net { action: NetAction::SlowNode { target }, dur: d }
                }
            };
            self.push(t, ev);
            // Sometimes several faults at once.
            let gap =
                if self.rng.chance(1, 4) { self.rng.range(0, 300_000) } else { self.rng.range(300_000, 4_000_000) };
            t += if self.faults.calm { 4 * gap } else { gap };
        }
        self.heal_at = dur;
        self.generate_faults(dur);
        self.live_bound = (self.cfg.keepalive_count as u64 + n as u64 + 6) * self.k;
        self.end_at = dur + self.live_bound + 12 * self.k;
        self.push(dur, Ev::Heal);
        self.push(self.end_at, Ev::End);
        self.push(0, Ev::WriteTick);
        for i in 0..n {
            if !self.nodes[i].witness {
                let first = if i == 0 { 0 } else { self.rng.range(0, self.k) };
                self.push(first, Ev::Tick { n: i, gen: 0 });
            }
        }
    }

    /// The faults of `self.faults`, over [0, dur), from the second random stream.
    pub(super) fn generate_faults(&mut self, dur: u64) {
        let f = self.faults;
        for _ in 0..f.hand_promotions {
            let t = self.rng2.range(1_000_000, dur.saturating_sub(5_000_000).max(1_000_000));
            self.push(t, Ev::HandPromote);
        }
        if f.freezes {
            let mut t = self.rng2.range(500_000, 5_000_000);
            while t < dur {
                let d = match self.rng2.below(4) {
                    0 => self.rng2.range(20_000, 500_000),
                    1 | 2 => self.rng2.range(500_000, 6_000_000),
                    _ => self.rng2.range(6_000_000, 15_000_000),
                }
                .min(dur - t);
                let target = if self.rng2.chance(4, 5) { Target::Master } else { Target::Random };
                self.push(t, Ev::Freeze { target, dur: d });
                t += d + self.rng2.range(1_000_000, 8_000_000);
            }
        }
        if f.switchovers {
            let mut t = self.rng2.range(2_000_000, 10_000_000);
            while t < dur {
                let race = self.rng2.chance(1, 2);
                self.push(t, Ev::Switchover { race });
                t += self.rng2.range(5_000_000, 20_000_000);
            }
        }
        if f.membership.is_some() {
            let mut t = self.rng2.range(300_000, 3_000_000);
            while t < dur {
                // Often two changes in a row (the second waits for the first, rule 6).
                let burst = if self.rng2.chance(1, 2) { 2 } else { 1 };
                let mut u = t;
                for _ in 0..burst {
                    let add = self.rng2.chance(1, 2);
                    self.push(u, Ev::Member { add, until: u + 3 * self.k + 2_000_000 });
                    u += self.rng2.range(0, 300_000);
                }
                if self.rng2.chance(2, 3) {
                    let at = t.saturating_sub(self.rng2.range(0, 2_000_000));
                    let d = self.rng2.range(500_000, 15_000_000);
                    self.push(at, Ev::ReplayPause { target: Target::Random, dur: d });
                }
                t += self.rng2.range(500_000, 5_000_000);
            }
        }
    }

    pub(super) fn pair(&mut self) -> (usize, usize) {
        let a = self.rng.below(self.n as u64) as usize;
        let b = (a + 1 + self.rng.below(self.n as u64 - 1) as usize) % self.n;
        (a, b)
    }

    pub(super) fn resolve(&mut self, t: Target) -> usize {
        match t {
            Target::Node(i) => i.min(self.n - 1),
            Target::Master => {
                let m = (0..self.n)
                    .filter(|&i| self.nodes[i].alive && self.entitled(i))
                    .max_by_key(|&i| self.nodes[i].master_term);
                match m {
                    Some(m) => m,
                    None => self.rng.below(self.n as u64) as usize,
                }
            }
            Target::Random => self.rng.below(self.n as u64) as usize,
        }
    }
}
