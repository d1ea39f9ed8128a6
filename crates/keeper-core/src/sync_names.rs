//! Parser for `synchronous_standby_names`, following PostgreSQL's own grammar
//! (src/backend/replication/syncrep_gram.y):
//!
//! ```text
//!   ''                      -> no synchronous replication
//!   a, b, c                 -> FIRST 1 (a, b, c)
//!   2 (a, b, c)             -> FIRST 2 (a, b, c)
//!   FIRST 2 (a, b, c)       -> priority: the first 2 connected in list order
//!   ANY 2 (a, b, c)         -> quorum: any 2 of them
//! ```
//! Names may be double-quoted (`"my node"`, `""` for a quote). PostgreSQL compares names with
//! application_name case-insensitively, and so do we.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMethod {
    /// FIRST n (...) and the plain list: the first n connected standbys in list order.
    First,
    /// ANY n (...): any n standbys of the list.
    Any,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub method: SyncMethod,
    /// How many synchronous standbys a commit waits for.
    pub num_sync: usize,
    /// Standby names in the order written.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncNamesError {
    Syntax(String),
    /// `*` matches any standby; pg_keeper cannot know which nodes are synchronous then.
    Wildcard,
    /// num_sync larger than the list, or zero.
    BadCount(usize, usize),
}

impl fmt::Display for SyncNamesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncNamesError::Syntax(m) => write!(f, "invalid synchronous_standby_names: {m}"),
            SyncNamesError::Wildcard => write!(
                f,
                "synchronous_standby_names must not contain \"*\" when pg_keeper is used: list the standby names"
            ),
            SyncNamesError::BadCount(n, len) => {
                write!(f, "synchronous_standby_names asks for {n} synchronous standbys out of a list of {len}")
            }
        }
    }
}

impl std::error::Error for SyncNamesError {}

impl SyncConfig {
    /// Parse a value. `Ok(None)` means synchronous replication is off (empty value).
    pub fn parse(value: &str) -> Result<Option<SyncConfig>, SyncNamesError> {
        let tokens = tokenize(value)?;
        if tokens.is_empty() {
            return Ok(None);
        }
        let mut p = Parser { tokens, pos: 0 };
        let cfg = p.config()?;
        if p.pos != p.tokens.len() {
            return Err(SyncNamesError::Syntax(format!("unexpected {:?}", p.tokens[p.pos])));
        }
        if cfg.names.iter().any(|n| n == "*") {
            return Err(SyncNamesError::Wildcard);
        }
        if cfg.num_sync == 0 || cfg.num_sync > cfg.names.len() {
            // PostgreSQL accepts num_sync > list length (commits then hang forever); we refuse
            // it because no degrade or restore decision can be right for such a value.
            return Err(SyncNamesError::BadCount(cfg.num_sync, cfg.names.len()));
        }
        Ok(Some(cfg))
    }

    /// True when `name` appears in the list (case-insensitive, as PostgreSQL compares).
    pub fn lists(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// Position of `name` in the list (its priority, 0 = highest).
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether the standbys in `streaming` (names) are enough for a commit to complete.
    pub fn satisfied_by<'a>(&self, streaming: impl IntoIterator<Item = &'a str>) -> bool {
        let mut count = 0;
        let mut seen: Vec<usize> = Vec::new();
        for s in streaming {
            if let Some(i) = self.position(s) {
                if !seen.contains(&i) {
                    seen.push(i);
                    count += 1;
                }
            }
        }
        count >= self.num_sync
    }
}

fn quote_name(n: &str) -> String {
    if !n.is_empty()
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.chars().all(|c| c.is_ascii_digit())
    {
        n.to_string()
    } else {
        format!("\"{}\"", n.replace('"', "\"\""))
    }
}

/// Renders the value to put back in `synchronous_standby_names`.
impl fmt::Display for SyncConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.names.iter().map(|n| quote_name(n)).collect();
        let kw = match self.method {
            SyncMethod::First => "FIRST",
            SyncMethod::Any => "ANY",
        };
        write!(f, "{kw} {} ({})", self.num_sync, names.join(", "))
    }
}

impl SyncConfig {
    /// The configuration without `name` (a node that became the master cannot be its own
    /// synchronous standby). `num_sync` shrinks with the list; None when nothing is left.
    pub fn without(&self, name: &str) -> Option<SyncConfig> {
        let names: Vec<String> = self.names.iter().filter(|n| !n.eq_ignore_ascii_case(name)).cloned().collect();
        if names.is_empty() {
            return None;
        }
        Some(SyncConfig { method: self.method, num_sync: self.num_sync.min(names.len()), names })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Word(String),
    Quoted(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, SyncNamesError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Tok::LParen)
            }
            ')' => {
                chars.next();
                out.push(Tok::RParen)
            }
            ',' => {
                chars.next();
                out.push(Tok::Comma)
            }
            '"' => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        None => return Err(SyncNamesError::Syntax("unterminated quoted name".into())),
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            v.push('"');
                        }
                        Some('"') => break,
                        Some(ch) => v.push(ch),
                    }
                }
                out.push(Tok::Quoted(v));
            }
            _ => {
                let mut v = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_alphanumeric() || ch == '_' || ch == '$' || ch == '*' || ch == '-' || ch == '.' {
                        v.push(ch);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if v.is_empty() {
                    return Err(SyncNamesError::Syntax(format!("unexpected character {c:?}")));
                }
                out.push(Tok::Word(v));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self, k: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + k)
    }

    fn config(&mut self) -> Result<SyncConfig, SyncNamesError> {
        let word = |t: Option<&Tok>| match t {
            Some(Tok::Word(w)) => Some(w.clone()),
            _ => None,
        };
        let num = |t: Option<&Tok>| word(t).and_then(|w| w.parse::<usize>().ok());
        // ANY n ( ... ) / FIRST n ( ... )
        if let (Some(kw), Some(n), Some(Tok::LParen)) = (word(self.peek(0)), num(self.peek(1)), self.peek(2)) {
            let method = if kw.eq_ignore_ascii_case("any") {
                Some(SyncMethod::Any)
            } else if kw.eq_ignore_ascii_case("first") {
                Some(SyncMethod::First)
            } else {
                None
            };
            if let Some(method) = method {
                self.pos += 3;
                let names = self.list_in_parens()?;
                return Ok(SyncConfig { method, num_sync: n, names });
            }
        }
        // n ( ... )
        if let (Some(n), Some(Tok::LParen)) = (num(self.peek(0)), self.peek(1)) {
            self.pos += 2;
            let names = self.list_in_parens()?;
            return Ok(SyncConfig { method: SyncMethod::First, num_sync: n, names });
        }
        let names = self.list()?;
        Ok(SyncConfig { method: SyncMethod::First, num_sync: 1, names })
    }

    fn list_in_parens(&mut self) -> Result<Vec<String>, SyncNamesError> {
        let names = self.list()?;
        match self.peek(0) {
            Some(Tok::RParen) => {
                self.pos += 1;
                Ok(names)
            }
            _ => Err(SyncNamesError::Syntax("missing \")\"".into())),
        }
    }

    fn list(&mut self) -> Result<Vec<String>, SyncNamesError> {
        let mut names = Vec::new();
        loop {
            match self.peek(0).cloned() {
                Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                    self.pos += 1;
                    names.push(w);
                }
                other => return Err(SyncNamesError::Syntax(format!("expected a standby name, found {other:?}"))),
            }
            if self.peek(0) == Some(&Tok::Comma) {
                self.pos += 1;
            } else {
                return Ok(names);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SyncConfig {
        SyncConfig::parse(s).unwrap().unwrap()
    }

    #[test]
    fn empty_means_off() {
        assert_eq!(SyncConfig::parse("").unwrap(), None);
        assert_eq!(SyncConfig::parse("   ").unwrap(), None);
    }

    #[test]
    fn plain_list_is_first_one() {
        let c = p("pgserver2, pgserver3");
        assert_eq!(c.method, SyncMethod::First);
        assert_eq!(c.num_sync, 1);
        assert_eq!(c.names, vec!["pgserver2", "pgserver3"]);
    }

    #[test]
    fn first_any_and_bare_number() {
        let c = p("FIRST 2 (a, b, c)");
        assert_eq!((c.method, c.num_sync, c.names.len()), (SyncMethod::First, 2, 3));
        let c = p("any 1 (s1,s2)");
        assert_eq!((c.method, c.num_sync), (SyncMethod::Any, 1));
        let c = p("2 (a, b)");
        assert_eq!((c.method, c.num_sync), (SyncMethod::First, 2));
    }

    #[test]
    fn quoted_names() {
        let c = p(r#""My Node", "a""b""#);
        assert_eq!(c.names, vec!["My Node", "a\"b"]);
        assert!(c.lists("my node"));
    }

    #[test]
    fn names_that_look_like_keywords_or_numbers() {
        // A single name "first" or a numeric name are plain lists.
        assert_eq!(p("first").names, vec!["first"]);
        assert_eq!(p("1, 2").names, vec!["1", "2"]);
    }

    #[test]
    fn refusals() {
        assert_eq!(SyncConfig::parse("*"), Err(SyncNamesError::Wildcard));
        assert_eq!(SyncConfig::parse("FIRST 1 (a, *)"), Err(SyncNamesError::Wildcard));
        assert!(matches!(SyncConfig::parse("ANY 3 (a, b)"), Err(SyncNamesError::BadCount(3, 2))));
        assert!(matches!(SyncConfig::parse("FIRST 1 (a, b"), Err(SyncNamesError::Syntax(_))));
        assert!(matches!(SyncConfig::parse("a,,b"), Err(SyncNamesError::Syntax(_))));
        assert!(matches!(SyncConfig::parse("a b"), Err(SyncNamesError::Syntax(_))));
        assert!(matches!(SyncConfig::parse("\"open"), Err(SyncNamesError::Syntax(_))));
    }

    #[test]
    fn without_and_display_round_trip() {
        let c = p("FIRST 2 (node2, \"Odd name\", node3)");
        let w = c.without("NODE2").unwrap();
        assert_eq!(w.to_string(), "FIRST 2 (\"Odd name\", node3)");
        assert_eq!(SyncConfig::parse(&w.to_string()).unwrap().unwrap(), w);
        assert_eq!(p("node2").without("node2"), None);
        assert_eq!(p("ANY 2 (a, b)").without("a").unwrap().to_string(), "ANY 1 (b)");
        assert_eq!(p("1, 2").to_string(), "FIRST 1 (\"1\", \"2\")");
    }

    #[test]
    fn satisfied_counts_distinct_listed_names() {
        let c = p("ANY 2 (s1, s2, s3)");
        assert!(!c.satisfied_by(["s1"]));
        assert!(!c.satisfied_by(["s1", "S1", "other"]));
        assert!(c.satisfied_by(["s1", "s3"]));
    }
}
