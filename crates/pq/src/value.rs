//! Parameters and results in PostgreSQL's text form (the SQL casts each parameter, e.g.
//! `$1::bigint`, so the server never has to guess).

/// A value sent as a query parameter: its text form, or None for NULL.
pub trait ToParam {
    fn to_param(&self) -> Option<String>;
}

impl ToParam for str {
    fn to_param(&self) -> Option<String> {
        Some(self.to_string())
    }
}
impl ToParam for String {
    fn to_param(&self) -> Option<String> {
        Some(self.clone())
    }
}
impl ToParam for bool {
    fn to_param(&self) -> Option<String> {
        Some(if *self { "true" } else { "false" }.to_string())
    }
}
macro_rules! number_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
number_param!(i16, i32, i64, u32, f64);

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Option<String> {
        (**self).to_param()
    }
}
impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Option<String> {
        self.as_ref().and_then(ToParam::to_param)
    }
}
/// An array literal, every element quoted (`{"a","b \"c\""}`); elements are never NULL.
impl<T: ToParam> ToParam for [T] {
    fn to_param(&self) -> Option<String> {
        let items: Vec<String> = self
            .iter()
            .map(|v| {
                let s = v.to_param().unwrap_or_default();
                format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
            })
            .collect();
        Some(format!("{{{}}}", items.join(",")))
    }
}
impl<T: ToParam> ToParam for Vec<T> {
    fn to_param(&self) -> Option<String> {
        self.as_slice().to_param()
    }
}

/// A result column read from its text form (None: SQL NULL).
pub trait FromText: Sized {
    fn from_text(text: Option<&str>) -> Result<Self, String>;
}

fn not_null(t: Option<&str>) -> Result<&str, String> {
    t.ok_or_else(|| "unexpected NULL".to_string())
}

impl FromText for String {
    fn from_text(t: Option<&str>) -> Result<Self, String> {
        not_null(t).map(str::to_string)
    }
}
impl FromText for bool {
    fn from_text(t: Option<&str>) -> Result<Self, String> {
        match not_null(t)? {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(format!("not a boolean: {other:?}")),
        }
    }
}
macro_rules! number_result {
    ($($t:ty),*) => {$(
        impl FromText for $t {
            fn from_text(t: Option<&str>) -> Result<Self, String> {
                let s = not_null(t)?;
                s.parse().map_err(|_| format!("not a {}: {s:?}", stringify!($t)))
            }
        }
    )*};
}
number_result!(i16, i32, i64, u32, u64, f64);

impl<T: FromText> FromText for Option<T> {
    fn from_text(t: Option<&str>) -> Result<Self, String> {
        t.map(|s| T::from_text(Some(s))).transpose()
    }
}

/// One result row: its text values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub(crate) values: Vec<Option<String>>,
}


impl Row {
    /// Column `i` (by position) as `T`; panics, as the `postgres` crate does, on a type
    /// mismatch or a position past the end: a query and its reader disagreeing is a bug.
    pub fn get<T: FromText>(&self, i: usize) -> T {
        self.try_get(i).unwrap_or_else(|e| panic!("column {i}: {e}"))
    }

    pub fn try_get<T: FromText>(&self, i: usize) -> Result<T, String> {
        let v = self.values.get(i).ok_or_else(|| format!("no column {i} (the row has {})", self.values.len()))?;
        T::from_text(v.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literals_are_quoted() {
        let v = vec!["a".to_string(), "b \"c\" \\".to_string()];
        assert_eq!(v.to_param().unwrap(), r#"{"a","b \"c\" \\"}"#);
        assert_eq!(vec![true, false].to_param().unwrap(), r#"{"true","false"}"#);
        assert_eq!(Vec::<i32>::new().to_param().unwrap(), "{}");
        assert_eq!(None::<i64>.to_param(), None);
    }

    #[test]
    fn results() {
        assert!(bool::from_text(Some("t")).unwrap());
        assert_eq!(Option::<i64>::from_text(None).unwrap(), None);
        assert_eq!(i64::from_text(Some("42")).unwrap(), 42);
        assert!(i64::from_text(None).is_err());
    }
}
