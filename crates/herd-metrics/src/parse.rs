//! Small helpers shared by the parsers: the parse error, single-value files and flat keyed
//! files (`key value` per line).

/// Why a file's contents could not be parsed. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The file was empty (or only whitespace).
    #[error("empty file")]
    Empty,
    /// A required key, field or line is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A line is not in the expected format.
    #[error("line {line}: {what}: {text:?}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What was expected.
        what: &'static str,
        /// The offending line, shortened to 80 characters.
        text: String,
    },
}

pub(crate) fn bad_line(index: usize, what: &'static str, text: &str) -> ParseError {
    let text: String = text.chars().take(80).collect();
    ParseError::BadLine { line: index + 1, what, text }
}

/// A file holding one unsigned integer (`memory.current`, `pids.current`, ...).
pub(crate) fn single_u64(s: &str) -> Result<u64, ParseError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(ParseError::Empty);
    }
    t.parse().map_err(|_| bad_line(0, "expected an unsigned integer", t))
}

/// A flat keyed file: `key value` lines. Values are parsed only when asked for, so a line the
/// caller does not need never makes the whole file fail.
pub(crate) struct Keyed<'a> {
    entries: Vec<(usize, &'a str, &'a str)>,
}

impl<'a> Keyed<'a> {
    pub(crate) fn new(s: &'a str) -> Result<Self, ParseError> {
        let entries: Vec<_> = s
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let t = line.trim();
                if t.is_empty() {
                    return None;
                }
                let key = t.split_whitespace().next().unwrap_or(t);
                Some((i, key, t))
            })
            .collect();
        if entries.is_empty() {
            return Err(ParseError::Empty);
        }
        Ok(Keyed { entries })
    }

    /// The value of `key`, `None` if the key is absent, an error if its line is malformed.
    pub(crate) fn get(&self, key: &str) -> Result<Option<u64>, ParseError> {
        let Some(&(i, _, line)) = self.entries.iter().find(|(_, k, _)| *k == key) else {
            return Ok(None);
        };
        let mut fields = line.split_whitespace().skip(1);
        match (fields.next(), fields.next()) {
            (Some(v), None) => v.parse().map(Some).map_err(|_| bad_line(i, "expected `key <unsigned integer>`", line)),
            _ => Err(bad_line(i, "expected `key <unsigned integer>`", line)),
        }
    }

    /// The value of `key`, which must be present.
    pub(crate) fn req(&self, key: &'static str) -> Result<u64, ParseError> {
        self.get(key)?.ok_or(ParseError::Missing(key))
    }

    /// The first present key of `keys` (e.g. `total_rss` before `rss`).
    pub(crate) fn first(&self, keys: &[&str]) -> Result<Option<u64>, ParseError> {
        for k in keys {
            if let Some(v) = self.get(k)? {
                return Ok(Some(v));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_values() {
        assert_eq!(single_u64("42\n"), Ok(42));
        assert_eq!(single_u64("  \n"), Err(ParseError::Empty));
        assert!(matches!(single_u64("max\n"), Err(ParseError::BadLine { line: 1, .. })));
        assert!(single_u64("-1").is_err());
    }

    #[test]
    fn keyed_lookups() {
        let k = Keyed::new("a 1\nb x\nc 3 4\n\nd 5\n").unwrap();
        assert_eq!(k.get("a"), Ok(Some(1)));
        assert_eq!(k.get("zz"), Ok(None));
        assert!(matches!(k.get("b"), Err(ParseError::BadLine { line: 2, .. })));
        assert!(matches!(k.get("c"), Err(ParseError::BadLine { line: 3, .. })));
        assert_eq!(k.first(&["zz", "d", "a"]), Ok(Some(5)));
        assert_eq!(k.req("zz"), Err(ParseError::Missing("zz")));
        assert!(matches!(Keyed::new("\n \n"), Err(ParseError::Empty)));
    }
}
