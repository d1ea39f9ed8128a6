//! A libpq connection string parser (`key=value ...` and `postgresql://` URIs), so that
//! pg_keeper can refuse malformed conninfo with a clear message, recognise two entries that
//! name the same server, and derive `primary_conninfo` for a standby from a node's conninfo.

use std::fmt;

/// Keywords libpq (PostgreSQL 15) accepts. Anything else is refused, as libpq does.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "channel_binding",
    "connect_timeout",
    "client_encoding",
    "options",
    "application_name",
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "replication",
    "gssencmode",
    "sslmode",
    "requiressl",
    "sslcompression",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "krbsrvname",
    "gsslib",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "require_auth",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pairs: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConninfoError(pub String);

impl fmt::Display for ConninfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid conninfo: {}", self.0)
    }
}

impl std::error::Error for ConninfoError {}

fn err<T>(m: impl Into<String>) -> Result<T, ConninfoError> {
    Err(ConninfoError(m.into()))
}

impl ConnInfo {
    pub fn parse(s: &str) -> Result<ConnInfo, ConninfoError> {
        let t = s.trim();
        if t.is_empty() {
            return err("empty conninfo (give at least host and port, e.g. 'host=10.0.0.1 port=5432')");
        }
        let pairs =
            if t.starts_with("postgresql://") || t.starts_with("postgres://") { parse_uri(t)? } else { parse_kv(t)? };
        for (k, _) in &pairs {
            if !KEYWORDS.contains(&k.as_str()) {
                return err(format!("unknown keyword \"{k}\""));
            }
        }
        let ci = ConnInfo { pairs };
        if let Some(p) = ci.get("port") {
            for part in p.split(',') {
                if part.parse::<u16>().map(|n| n == 0).unwrap_or(true) {
                    return err(format!("invalid port \"{p}\""));
                }
            }
        }
        Ok(ci)
    }

    /// The value of a keyword (the last one wins, as in libpq).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Replace (or add) a keyword.
    pub fn set(&mut self, key: &str, value: &str) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_string(), value.to_string()));
    }

    pub fn remove(&mut self, key: &str) {
        self.pairs.retain(|(k, _)| k != key);
    }

    /// The server this conninfo points at, as "host:port", with libpq's defaults filled in
    /// (hostaddr wins over host for the address; no host means the local socket).
    pub fn target(&self) -> String {
        let host = self
            .get("hostaddr")
            .filter(|h| !h.is_empty())
            .or(self.get("host").filter(|h| !h.is_empty()))
            .unwrap_or("localhost");
        let host = if host == "127.0.0.1" || host == "::1" { "localhost" } else { host };
        let port = self.get("port").filter(|p| !p.is_empty()).unwrap_or("5432");
        format!("{}:{}", host.to_ascii_lowercase(), port)
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }
}

/// Serialise in key=value form, quoting values as libpq expects.
impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (k, v) in &self.pairs {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let plain = !v.is_empty() && v.chars().all(|c| !c.is_whitespace() && c != '\'' && c != '\\');
            if plain {
                write!(f, "{k}={v}")?;
            } else {
                write!(f, "{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))?;
            }
        }
        Ok(())
    }
}

fn parse_kv(s: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return err(format!("missing \"=\" after \"{key}\""));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return err("unterminated quoted string"),
                    Some('\\') => match chars.next() {
                        Some(c) => val.push(c),
                        None => return err("unterminated quoted string"),
                    },
                    Some('\'') => break,
                    Some(c) => val.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        val.push(n);
                    }
                } else {
                    val.push(c);
                }
            }
        }
        out.push((key, val));
    }
}

fn percent_decode(s: &str) -> Result<String, ConninfoError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) => out.push(v),
                None => return err(format!("invalid percent-encoding in \"{s}\"")),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).or_else(|_| err("percent-encoding is not UTF-8"))
}

fn parse_uri(s: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let rest = s.split_once("://").map(|x| x.1).unwrap_or("");
    let (rest, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, db) = match rest.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (rest, None),
    };
    let (userinfo, hostlist) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let mut out = Vec::new();
    if let Some(u) = userinfo {
        let (user, pw) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u, None),
        };
        if !user.is_empty() {
            out.push(("user".into(), percent_decode(user)?));
        }
        if let Some(pw) = pw {
            out.push(("password".into(), percent_decode(pw)?));
        }
    }
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for hp in hostlist.split(',') {
            let (h, p) = if let Some(r) = hp.strip_prefix('[') {
                match r.split_once(']') {
                    Some((h, p)) => (h, p.strip_prefix(':').unwrap_or("")),
                    None => return err("unterminated [ in URI host"),
                }
            } else {
                match hp.rsplit_once(':') {
                    Some((h, p)) => (h, p),
                    None => (hp, ""),
                }
            };
            hosts.push(percent_decode(h)?);
            ports.push(p.to_string());
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            out.push(("host".into(), hosts.join(",")));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            out.push(("port".into(), ports.join(",")));
        }
    }
    if let Some(d) = db.filter(|d| !d.is_empty()) {
        out.push(("dbname".into(), percent_decode(d)?));
    }
    if let Some(q) = query {
        for kv in q.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some((k, v)) => out.push((percent_decode(k)?, percent_decode(v)?)),
                None => return err(format!("missing \"=\" in URI parameter \"{kv}\"")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_value_with_quotes() {
        let c = ConnInfo::parse("host=10.0.0.1 port = 5433 password='a b\\'c' dbname=template1").unwrap();
        assert_eq!(c.get("host"), Some("10.0.0.1"));
        assert_eq!(c.get("port"), Some("5433"));
        assert_eq!(c.get("password"), Some("a b'c"));
        assert_eq!(c.target(), "10.0.0.1:5433");
    }

    #[test]
    fn uri_form() {
        let c = ConnInfo::parse("postgresql://u:p%40ss@host1:6000/db?application_name=x").unwrap();
        assert_eq!(c.get("user"), Some("u"));
        assert_eq!(c.get("password"), Some("p@ss"));
        assert_eq!(c.get("dbname"), Some("db"));
        assert_eq!(c.get("application_name"), Some("x"));
        assert_eq!(c.target(), "host1:6000");
    }

    #[test]
    fn same_server_spelled_differently() {
        let a = ConnInfo::parse("host=127.0.0.1 port=5432 dbname=a").unwrap();
        let b = ConnInfo::parse("postgresql://localhost/b").unwrap();
        assert_eq!(a.target(), b.target());
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "   ",
            "host",
            "host=a port=x",
            "hots=a",
            "host='a",
            "port=0",
            "port=70000",
            "postgresql://h/db?x",
            "postgresql://h:abc/",
        ] {
            assert!(ConnInfo::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn round_trip_display() {
        let mut c = ConnInfo::parse("host=h port=1 password='x y'").unwrap();
        c.set("application_name", "node2");
        c.remove("port");
        let s = c.to_string();
        assert_eq!(s, "host=h password='x y' application_name=node2");
        assert_eq!(ConnInfo::parse(&s).unwrap(), c);
    }
}
