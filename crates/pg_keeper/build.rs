//! Compiles `csrc/port.c` and `csrc/reply.c` against the headers of the PostgreSQL this build targets: the
//! pg_config that cargo-pgrx names (PGRX_PG_CONFIG_PATH), else the one ~/.pgrx/config.toml
//! registers for the enabled pgNN feature, else `pg_config` on the PATH.

use std::process::Command;

fn pg_config() -> String {
    if let Ok(p) = std::env::var("PGRX_PG_CONFIG_PATH") {
        return p;
    }
    let version = (13..=18).find(|v| std::env::var(format!("CARGO_FEATURE_PG{v}")).is_ok());
    let home = std::env::var("PGRX_HOME")
        .ok()
        .or_else(|| std::env::var("HOME").ok().map(|h| format!("{h}/.pgrx")))
        .unwrap_or_default();
    if let (Some(v), Ok(cfg)) = (version, std::fs::read_to_string(format!("{home}/config.toml"))) {
        let key = format!("pg{v}");
        for line in cfg.lines() {
            if let Some((k, val)) = line.split_once('=') {
                if k.trim() == key {
                    return val.trim().trim_matches('"').to_string();
                }
            }
        }
    }
    "pg_config".to_string()
}

fn main() {
    println!("cargo:rerun-if-changed=csrc/port.c");
    println!("cargo:rerun-if-changed=csrc/reply.c");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    let pg_config = pg_config();
    let out = Command::new(&pg_config)
        .arg("--includedir-server")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {pg_config}: {e}"));
    assert!(out.status.success(), "{pg_config} --includedir-server failed");
    let include = String::from_utf8(out.stdout).expect("utf-8 path").trim().to_string();
    cc::Build::new().file("csrc/port.c").file("csrc/reply.c").include(&include).warnings(false).compile("pgk_port");
}
