//! Conninfo as libpq reads it.

use pq_sys as ffi;
use std::ffi::{CStr, CString};

/// The keywords `conninfo` sets, with their values, as libpq parses it (`PQconninfoParse`:
/// `key=value` pairs or a `postgresql://` URI, the last of a repeated keyword winning).
/// Err carries libpq's own message (e.g. `invalid connection option "foo"`). Nothing is
/// looked up: no environment variable, service file or password file is read.
pub fn parse(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let c = CString::new(conninfo).map_err(|_| "conninfo contains a zero byte".to_string())?;
    let mut err: *mut std::os::raw::c_char = std::ptr::null_mut();
    // SAFETY: `c` outlives the call; the returned array and message are freed below with
    // libpq's own functions, after copying what we keep.
    unsafe {
        let opts = ffi::PQconninfoParse(c.as_ptr(), &mut err);
        if opts.is_null() {
            let msg = if err.is_null() {
                "out of memory parsing conninfo".to_string()
            } else {
                let m = CStr::from_ptr(err).to_string_lossy().trim_end().to_string();
                ffi::PQfreemem(err.cast());
                m
            };
            return Err(msg);
        }
        let mut out = Vec::new();
        let mut p = opts;
        while !(*p).keyword.is_null() {
            if !(*p).val.is_null() {
                let k = CStr::from_ptr((*p).keyword).to_string_lossy().into_owned();
                let v = CStr::from_ptr((*p).val).to_string_lossy().into_owned();
                out.push((k, v));
            }
            p = p.add(1);
        }
        ffi::PQconninfoFree(opts);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(pairs: &'a [(String, String)], k: &str) -> Option<&'a str> {
        pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn libpq_forms() {
        let p = parse("host=10.0.0.1 port=5433 application_name='a b' sslmode=verify-full").unwrap();
        assert_eq!(get(&p, "host"), Some("10.0.0.1"));
        assert_eq!(get(&p, "application_name"), Some("a b"));
        assert_eq!(get(&p, "sslmode"), Some("verify-full"));
        let u = parse("postgresql://u@h1:5432,h2:5433/db?sslmode=require&service=x").unwrap();
        assert_eq!(get(&u, "host"), Some("h1,h2"));
        assert_eq!(get(&u, "port"), Some("5432,5433"));
        assert_eq!(get(&u, "service"), Some("x"));
        assert!(parse("host=h nosuch=1").unwrap_err().contains("invalid connection option \"nosuch\""));
        assert!(parse("host").unwrap_err().contains("missing \"=\""));
        assert!(parse("host='unterminated").unwrap_err().contains("unterminated quoted string"));
    }
}

/// `conninfo` as keeper-core's `ConnInfo` (node identity, `primary_conninfo`), parsed by
/// libpq; the message is libpq's.
pub fn node(conninfo: &str) -> Result<keeper_core::conninfo::ConnInfo, keeper_core::conninfo::ConninfoError> {
    let pairs = parse(conninfo).map_err(keeper_core::conninfo::ConninfoError)?;
    keeper_core::conninfo::ConnInfo::from_pairs(pairs)
}
