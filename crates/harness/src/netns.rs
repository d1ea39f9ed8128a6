//! Network-namespace mode (`ClusterBuilder::netns(true)`): every node gets its
//! own network namespace and IPv4 address, and nftables rules inside those
//! namespaces simulate network partitions.
//!
//! Topology of one cluster with subnet number `X` (10.213.X.0/24):
//!
//! ```text
//!   ns pgk<X>n1 (node1)          ns pgk<X>sw ("switch")           ns pgk<X>n2 (node2)
//!   lo + pk<X>v1 10.213.X.1/24 <-veth-> pk<X>p1 --+            +-- pk<X>p2 <-veth-> pk<X>v2 10.213.X.2/24
//!                                                  bridge pk<X>br
//! ```
//!
//! * The bridge lives in the dedicated switch namespace and has no address;
//!   the root namespace gets no interface and no route at all, so traffic only
//!   ever flows between namespaces created here. Veth pairs are created
//!   directly inside their namespaces (`ip link add .. netns ..`), so they never
//!   show up in the root namespace either.
//! * Node i (node1 = 1) has address 10.213.X.i.
//! * Ownership: `/tmp/pgk-netns/pgk<X>` (a directory, created atomically = the
//!   lock on subnet X) holds a `pid` file with "<pid> <starttime>" of the
//!   creating process. [`cleanup_stale_netns`] removes everything of entries
//!   whose creator is gone.
//! * Partitions: each node namespace gets a table `inet pgk` (input + output
//!   chains, `drop` verdicts only, so peers see a black hole, never a RST/ICMP).
//!   The whole table is rebuilt atomically from an in-memory description every
//!   time it changes, which makes every operation idempotent.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{anyhow, bail, Context, Result};

use crate::{hlog, proc, run_checked};

/// Registry of subnets/namespaces claimed by harness processes.
const REGISTRY: &str = "/tmp/pgk-netns";
static NET_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Namespace name of node `i` (1-based) in cluster subnet `x`.
pub(crate) fn node_ns(x: u8, i: usize) -> String {
    format!("pgk{x}n{i}")
}
fn switch_ns(x: u8) -> String {
    format!("pgk{x}sw")
}
/// Address of node `i` (1-based) in subnet `x`.
pub(crate) fn node_addr(x: u8, i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, x, i as u8)
}

/// Run `ip <args>` and fail with its output on error.
fn ip(args: &[&str]) -> Result<String> {
    let mut c = Command::new("ip");
    c.args(args);
    run_checked(c, &format!("ip {}", args.join(" ")))
}

/// `ip <args>`, errors ignored (teardown paths).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Names listed by `ip netns list` (first word of each line).
fn list_netns() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// True if `ns` belongs to subnet `x` (`pgk<X>sw` or `pgk<X>n<digits>`).
fn ns_belongs_to(ns: &str, x: u8) -> bool {
    if ns == switch_ns(x) {
        return true;
    }
    let p = format!("pgk{x}n");
    ns.strip_prefix(&p).is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()))
}

/// Start time (field 22 of /proc/<pid>/stat) to protect against pid reuse.
fn starttime(pid: i32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    // after ')': field 3 (state) is index 0, so field 22 is index 19
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn owner_line() -> String {
    let pid = std::process::id() as i32;
    format!("{pid} {}\n", starttime(pid).unwrap_or(0))
}

/// True if the owner recorded in `<entry>/pid` is still running. A missing or
/// unreadable pid file counts as alive when the entry is younger than 60 s
/// (its creator may be about to write it).
fn owner_alive(entry: &Path) -> bool {
    match std::fs::read_to_string(entry.join("pid")) {
        Ok(s) => {
            let mut it = s.split_whitespace();
            let pid: i32 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let st: u64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            pid > 0 && proc::alive(pid) && (st == 0 || starttime(pid) == Some(st))
        }
        Err(_) => std::fs::metadata(entry)
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().map(|e| e.as_secs() < 60).unwrap_or(true))
            .unwrap_or(false),
    }
}

/// Kill every process still inside namespace `ns`, then delete it. Deleting
/// a namespace destroys its veth ends (and thus their peers) and bridges.
fn delete_ns(ns: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
            proc::signal(pid, libc::SIGCONT);
            proc::signal(pid, libc::SIGKILL);
        }
    }
    ip_quiet(&["netns", "del", ns]);
}

/// Remove all namespaces (and any stray root-namespace link named `pk<X>...`)
/// belonging to subnet `x`.
fn delete_all_of(x: u8) {
    for ns in list_netns().into_iter().filter(|n| ns_belongs_to(n, x)) {
        delete_ns(&ns);
    }
    // We never create links in the root namespace, but be thorough.
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let prefix = format!("pk{x}");
    for l in links.lines() {
        // "3: name@peer: <...>"
        if let Some(name) = l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) {
            if let Some(rest) = name.strip_prefix(&prefix) {
                if rest == "br" || rest.starts_with('v') || rest.starts_with('p') {
                    ip_quiet(&["link", "del", name]);
                }
            }
        }
    }
}

/// Delete leftover harness namespaces/interfaces (registry entries under
/// `/tmp/pgk-netns`) whose creating process is no longer alive. Safe to call
/// at any time; entries of live processes are left alone. Called at the start
/// of every netns-mode `build()`.
///
/// Note: a cluster kept with `Cluster::keep_running` in netns mode is removed
/// by this function once the process that built it has exited.
pub fn cleanup_stale_netns() {
    let Ok(rd) = std::fs::read_dir(REGISTRY) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(x) = name.strip_prefix("pgk").and_then(|s| s.parse::<u8>().ok()) else {
            continue;
        };
        if owner_alive(&e.path()) {
            continue;
        }
        hlog!("removing stale netns set pgk{x} (10.213.{x}.0/24)");
        delete_all_of(x);
        let _ = std::fs::remove_dir_all(e.path());
    }
}

/// All IPv4 networks `(addr, prefix_len)` configured on any interface in the
/// root namespace or in any named namespace.
fn used_v4_networks() -> Vec<(Ipv4Addr, u8)> {
    let mut outs = Vec::new();
    if let Ok(o) = Command::new("ip").args(["-o", "-4", "addr", "show"]).output() {
        outs.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    for ns in list_netns() {
        if let Ok(o) = Command::new("ip").args(["-n", &ns, "-o", "-4", "addr", "show"]).output() {
            outs.push(String::from_utf8_lossy(&o.stdout).into_owned());
        }
    }
    let mut v = Vec::new();
    for out in outs {
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inet" {
                if let Some((a, l)) = words.next().and_then(|c| c.split_once('/')) {
                    if let (Ok(a), Ok(l)) = (a.parse(), l.parse()) {
                        v.push((a, l));
                    }
                }
            }
        }
    }
    v
}

/// True if network `a/la` overlaps `b/lb`.
fn overlaps(a: Ipv4Addr, la: u8, b: Ipv4Addr, lb: u8) -> bool {
    let l = la.min(lb).min(32) as u32;
    let mask = if l == 0 { 0 } else { u32::MAX << (32 - l) };
    (u32::from(a) & mask) == (u32::from(b) & mask)
}

/// What one node namespace currently blocks (rebuilt into nftables rules).
#[derive(Debug, Default, Clone)]
pub(crate) struct Blocks {
    /// Drop everything except loopback.
    pub isolated: bool,
    /// Drop packets leaving this namespace to these addresses.
    pub out_to: BTreeSet<Ipv4Addr>,
    /// Drop packets arriving in this namespace from these addresses.
    pub in_from: BTreeSet<Ipv4Addr>,
}

impl Blocks {
    fn is_empty(&self) -> bool {
        !self.isolated && self.out_to.is_empty() && self.in_from.is_empty()
    }

    /// nft script replacing table `inet pgk` atomically ("add + delete" makes
    /// the delete succeed even when the table does not exist yet).
    fn nft_script(&self) -> String {
        let mut s = String::from("table inet pgk\ndelete table inet pgk\n");
        if self.is_empty() {
            return s;
        }
        let mut input = String::from("    iif \"lo\" accept\n");
        let mut output = String::from("    oif \"lo\" accept\n");
        if self.isolated {
            input += "    drop\n";
            output += "    drop\n";
        }
        for a in &self.in_from {
            input += &format!("    ip saddr {a} drop\n");
        }
        for a in &self.out_to {
            output += &format!("    ip daddr {a} drop\n");
        }
        s += &format!(
            "table inet pgk {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n{input}  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{output}  }}\n}}\n"
        );
        s
    }
}

/// Apply `blocks` in namespace `ns` (`ip netns exec <ns> nft -f -`).
pub(crate) fn apply_blocks(ns: &str, blocks: &Blocks) -> Result<()> {
    let script = blocks.nft_script();
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn nft")?;
    child.stdin.take().unwrap().write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {ns} failed: {}\n--- script ---\n{script}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The namespaces of one cluster. Owns the registry entry; [`NetSet::destroy`]
/// removes everything (also called from `Cluster::teardown`).
#[derive(Debug)]
pub(crate) struct NetSet {
    pub x: u8,
    registry: PathBuf,
    destroyed: bool,
}

impl NetSet {
    /// Claim a free subnet number X (registry dir created atomically, no
    /// interface anywhere on the machine using 10.213.X.0/24, no leftover
    /// namespaces named after X).
    pub fn claim() -> Result<NetSet> {
        if !crate::is_root() {
            bail!("netns mode requires root");
        }
        std::fs::create_dir_all(REGISTRY)?;
        let pid = std::process::id();
        let c = NET_COUNTER.fetch_add(1, Ordering::SeqCst);
        let start = pid.wrapping_mul(7).wrapping_add(c.wrapping_mul(13));
        let nets = used_v4_networks();
        let nss = list_netns();
        for k in 0..254u32 {
            let x = ((start.wrapping_add(k)) % 254 + 1) as u8; // 1..=254
            let base = Ipv4Addr::new(10, 213, x, 0);
            if nets.iter().any(|&(a, l)| overlaps(a, l, base, 24)) {
                continue;
            }
            if nss.iter().any(|n| ns_belongs_to(n, x)) {
                continue;
            }
            let registry = Path::new(REGISTRY).join(format!("pgk{x}"));
            match std::fs::create_dir(&registry) {
                Ok(()) => {
                    std::fs::write(registry.join("pid"), owner_line())?;
                    return Ok(NetSet { x, registry, destroyed: false });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(anyhow!("mkdir {}: {e}", registry.display())),
            }
        }
        bail!("no free 10.213.X.0/24 subnet")
    }

    /// Create the switch namespace with its bridge, and `n` node namespaces
    /// (lo up, veth with address 10.213.X.i/24, peer attached to the bridge).
    pub fn create(&self, n: usize) -> Result<()> {
        let x = self.x;
        let sw = switch_ns(x);
        let br = format!("pk{x}br");
        ip(&["netns", "add", &sw])?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", &br, "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", &br, "up"])?;
        for i in 1..=n {
            let ns = node_ns(x, i);
            let (v, p) = (format!("pk{x}v{i}"), format!("pk{x}p{i}"));
            let addr = format!("{}/24", node_addr(x, i));
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["link", "add", &v, "netns", &ns, "type", "veth", "peer", "name", &p, "netns", &sw])?;
            ip(&["-n", &sw, "link", "set", &p, "master", &br])?;
            ip(&["-n", &sw, "link", "set", &p, "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &v])?;
            ip(&["-n", &ns, "link", "set", &v, "up"])?;
        }
        hlog!("netns: created {sw} + {n} node namespaces on 10.213.{x}.0/24");
        Ok(())
    }

    /// Delete all namespaces of this set and the registry entry. Idempotent.
    pub fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        self.destroyed = true;
        delete_all_of(self.x);
        let _ = std::fs::remove_dir_all(&self.registry);
        hlog!("netns: removed namespaces of 10.213.{}.0/24", self.x);
    }

    /// Forget the set without deleting it (`Cluster::keep_running`).
    pub fn leak(&mut self) {
        self.destroyed = true;
    }
}

impl Drop for NetSet {
    fn drop(&mut self) {
        self.destroy();
    }
}
