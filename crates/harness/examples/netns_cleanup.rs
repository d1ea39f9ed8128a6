//! Remove leftover namespaces of crashed harness processes:
//! `cargo run -p keeper-harness --example netns_cleanup` (as root).
fn main() {
    keeper_harness::cleanup_stale_netns();
}
