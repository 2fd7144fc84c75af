//! How a container's process starts where the image and `herd run` have a say besides its
//! command: the user it runs as (`--user USER[:GROUP]`, the image's `User`) and its working
//! directory (`--workdir`, the image's `WorkingDir`). Parsed and checked alike by the CLI, the
//! Control node and the node agents, which resolve names in the container's own files.

use crate::names::NameError;

/// The largest uid or gid a container may be given (Linux takes 32 bits, but runc and Docker
/// refuse what does not fit a signed 32-bit number).
pub const MAX_ID: u32 = i32::MAX as u32;

/// The longest user or group name taken.
const MAX_NAME: usize = 256;

/// `USER[:GROUP]`, each a name or a number, as Docker's `--user` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub user: String,
    pub group: Option<String>,
}

impl UserSpec {
    /// Parses `USER[:GROUP]`.
    ///
    /// ```
    /// use herd_proto::process::UserSpec;
    /// let s = UserSpec::parse("postgres:ssl-cert").unwrap();
    /// assert_eq!((s.user.as_str(), s.group.as_deref()), ("postgres", Some("ssl-cert")));
    /// assert_eq!(UserSpec::parse("1000").unwrap().uid(), Some(1000));
    /// assert!(UserSpec::parse("a:b:c").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<UserSpec, NameError> {
        let (user, group) = match text.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (text, None),
        };
        check_part(text, user, "user")?;
        if let Some(g) = group {
            check_part(text, g, "group")?;
        }
        Ok(UserSpec { user: user.to_string(), group: group.map(str::to_string) })
    }

    /// The uid, when the user is given as a number.
    pub fn uid(&self) -> Option<u32> {
        numeric_id(&self.user)
    }

    /// The gid, when the group is given as a number.
    pub fn gid(&self) -> Option<u32> {
        self.group.as_deref().and_then(numeric_id)
    }
}

/// The number `text` stands for, if it is all digits (a number out of range was refused by
/// [`UserSpec::parse`]).
pub fn numeric_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|n| *n <= MAX_ID)
}

fn check_part(whole: &str, part: &str, what: &str) -> Result<(), NameError> {
    let usage = |why: String| {
        NameError(format!("invalid user {whole:?}: {why}; expected USER[:GROUP], e.g. postgres or 1000:1000"))
    };
    if part.is_empty() {
        return Err(usage(format!("the {what} is empty")));
    }
    if part.len() > MAX_NAME {
        return Err(usage(format!("the {what} is longer than {MAX_NAME} bytes")));
    }
    if let Some(c) = part.chars().find(|c| c.is_control() || c.is_whitespace() || *c == ':' || *c == '/') {
        return Err(usage(format!("the {what} has the character {c:?}")));
    }
    if part.bytes().all(|b| b.is_ascii_digit()) && numeric_id(part).is_none() {
        return Err(usage(format!("{what} id {part} is out of range (0 to {MAX_ID})")));
    }
    Ok(())
}

/// The longest working directory taken (Linux's `PATH_MAX`).
const MAX_PATH: usize = 4096;

/// Checks a working directory and cleans it as Docker does (`filepath.Clean`): it must be
/// absolute; `.`, `..` and repeated slashes are resolved lexically (`..` stops at `/`).
///
/// ```
/// use herd_proto::process::clean_workdir;
/// assert_eq!(clean_workdir("/srv//app/./data/../logs/").unwrap(), "/srv/app/logs");
/// assert_eq!(clean_workdir("/../..").unwrap(), "/");
/// assert!(clean_workdir("srv").is_err());
/// ```
pub fn clean_workdir(text: &str) -> Result<String, NameError> {
    if !text.starts_with('/') {
        return Err(NameError(format!(
            "the working directory {text:?} is invalid: it needs to be an absolute path, e.g. /srv/app"
        )));
    }
    if text.len() > MAX_PATH {
        return Err(NameError(format!("the working directory is longer than {MAX_PATH} bytes")));
    }
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(NameError(format!("the working directory {text:?} has the character {c:?}")));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_like_docker() {
        let s = UserSpec::parse("redis").unwrap();
        assert_eq!((s.user.as_str(), s.group.as_deref(), s.uid(), s.gid()), ("redis", None, None, None));
        let s = UserSpec::parse("1000:50").unwrap();
        assert_eq!((s.uid(), s.gid()), (Some(1000), Some(50)));
        let s = UserSpec::parse("0:staff").unwrap();
        assert_eq!((s.uid(), s.gid(), s.group.as_deref()), (Some(0), None, Some("staff")));
        assert_eq!(UserSpec::parse("2147483647").unwrap().uid(), Some(MAX_ID));
    }

    #[test]
    fn bad_users_name_the_cause() {
        let err = |t: &str| UserSpec::parse(t).unwrap_err().0;
        assert!(err("").contains("the user is empty"), "{}", err(""));
        assert!(err(":staff").contains("the user is empty"));
        assert!(err("app:").contains("the group is empty"));
        assert!(err("a:b:c").contains("the group has the character ':'"), "{}", err("a:b:c"));
        assert!(err("a b").contains("' '"));
        assert!(err("a\nb").contains("'\\n'"));
        assert!(err("2147483648").contains("user id 2147483648 is out of range"), "{}", err("2147483648"));
        assert!(err("app:99999999999").contains("group id 99999999999 is out of range"));
        assert!(err(&"x".repeat(300)).contains("longer than"));
    }

    #[test]
    fn workdirs_are_absolute_and_clean() {
        assert_eq!(clean_workdir("/").unwrap(), "/");
        assert_eq!(clean_workdir("/var/lib/postgresql").unwrap(), "/var/lib/postgresql");
        assert_eq!(clean_workdir("/a/../../b").unwrap(), "/b");
        assert!(clean_workdir("").unwrap_err().0.contains("absolute path"));
        assert!(clean_workdir("./x").unwrap_err().0.contains("absolute path"));
        assert!(clean_workdir("/a\u{1b}b").unwrap_err().0.contains("character"));
    }
}
