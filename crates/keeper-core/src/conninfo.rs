//! A node's conninfo as keeper-core sees it: the keyword/value pairs libpq parsed from it
//! (the adapter and the CLI parse with libpq's own `PQconninfoParse`, through `keeper_pq`:
//! one grammar, libpq's), so that pg_keeper can recognise two entries that name the same
//! server and derive `primary_conninfo` for a standby from a node's conninfo.

use std::fmt;

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
    /// The pairs a parser gave (in its order; a keyword given twice: the last one wins).
    /// Refuses an empty conninfo: a node needs at least an address.
    pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<ConnInfo, ConninfoError> {
        if pairs.iter().all(|(_, v)| v.trim().is_empty()) {
            return err("empty conninfo (give at least host and port, e.g. 'host=10.0.0.1 port=5432')");
        }
        Ok(ConnInfo { pairs })
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

/// A conninfo parser: libpq's in the adapter and the CLI (`keeper_pq::conninfo::parse`).
pub type Parse<'a> = &'a dyn Fn(&str) -> Result<ConnInfo, ConninfoError>;

/// For keeper-core's own tests and the simulation only, which run without libpq: `key=value`
/// words separated by spaces, no quoting, no URIs.
pub mod testing {
    use super::*;

    pub fn words(s: &str) -> Result<ConnInfo, ConninfoError> {
        let mut pairs = Vec::new();
        for w in s.split_whitespace() {
            let (k, v) = w.split_once('=').ok_or_else(|| ConninfoError(format!("missing \"=\" after \"{w}\"")))?;
            pairs.push((k.to_string(), v.to_string()));
        }
        ConnInfo::from_pairs(pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::words;

    #[test]
    fn same_server_spelled_differently() {
        let a = words("host=127.0.0.1 port=5432 dbname=a").unwrap();
        let b = words("host=localhost dbname=b").unwrap();
        assert_eq!(a.target(), b.target());
        let c = words("host=h hostaddr=10.0.0.1 port=5433").unwrap();
        assert_eq!(c.target(), "10.0.0.1:5433");
        assert!(words("").is_err());
        assert!(words("host").is_err());
    }

    #[test]
    fn display_quotes_as_libpq_reads() {
        let mut c = super::ConnInfo::from_pairs(vec![
            ("host".into(), "h".into()),
            ("port".into(), "1".into()),
            ("password".into(), "x y'\\z".into()),
        ])
        .unwrap();
        c.set("application_name", "node2");
        c.remove("port");
        assert_eq!(c.to_string(), "host=h password='x y\\'\\\\z' application_name=node2");
    }
}
