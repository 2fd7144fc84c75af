//! `WWW-Authenticate` challenges (RFC 7235) as registries send them:
//! `Bearer realm="https://auth.example/token",service="registry.example",scope="repository:app:pull"`
//! or `Basic realm="registry"`.

use std::collections::BTreeMap;

/// One challenge: its scheme (lowercased) and parameters (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses one `WWW-Authenticate` header value, which may hold several challenges. Parts that
/// do not parse are skipped rather than failing the whole header.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim_start();
    while !rest.is_empty() {
        let (token, after) = take_token(rest);
        if token.is_empty() {
            // Not a token: skip one character (a stray comma or garbage) and go on.
            rest = skip_one(rest);
            continue;
        }
        let after_ws = after.trim_start();
        if let Some(value_part) = after_ws.strip_prefix('=').filter(|_| !out.is_empty()) {
            // `name=value` of the current challenge.
            let (value, remaining) = take_value(value_part.trim_start());
            out.last_mut().expect("a current challenge").params.insert(token.to_ascii_lowercase(), value);
            rest = remaining.trim_start().trim_start_matches(',').trim_start();
        } else {
            // A new scheme.
            out.push(Challenge { scheme: token.to_ascii_lowercase(), params: BTreeMap::new() });
            rest = after_ws.trim_start_matches(',').trim_start();
        }
    }
    out
}

fn skip_one(s: &str) -> &str {
    let mut chars = s.chars();
    chars.next();
    chars.as_str().trim_start()
}

fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn take_token(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !is_token_char(c)).unwrap_or(s.len());
    s.split_at(end)
}

/// A quoted string (with `\` escapes) or a token.
fn take_value(s: &str) -> (String, &str) {
    if let Some(body) = s.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => return (value, &body[i + 1..]),
                c => value.push(c),
            }
        }
        (value, "")
    } else {
        let end = s.find([',', ' ', '\t']).unwrap_or(s.len());
        (s[..end].to_string(), &s[end..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_bearer() {
        let c = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c[0].param("service"), Some("registry.docker.io"));
        assert_eq!(c[0].param("scope"), Some("repository:library/busybox:pull"));
    }

    #[test]
    fn basic_tokens_escapes_and_several_challenges() {
        let c = parse(r#"Basic realm="basic-realm""#);
        assert_eq!((c[0].scheme.as_str(), c[0].param("realm")), ("basic", Some("basic-realm")));

        let c = parse(r#"Bearer realm=http://127.0.0.1:1/t, service=svc , error="insufficient_scope""#);
        assert_eq!(c[0].param("realm"), Some("http://127.0.0.1:1/t"));
        assert_eq!(c[0].param("service"), Some("svc"));
        assert_eq!(c[0].param("error"), Some("insufficient_scope"));

        let c = parse(r#"Basic realm="a \"quoted\" realm", Bearer realm="https://x/token",scope="a:b:pull,push""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].param("realm"), Some(r#"a "quoted" realm"#));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("scope"), Some("a:b:pull,push"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for s in ["", ",,,", "=", "Bearer =x", "Bearer realm=\"unterminated", "\u{e9}t\u{e9}"] {
            let _ = parse(s);
        }
        assert_eq!(parse("Bearer")[0].scheme, "bearer");
    }
}
