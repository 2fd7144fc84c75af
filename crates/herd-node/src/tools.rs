//! Finding the external programs Herd drives (runc, CRIU) and checking their versions,
//! with errors that say how to get them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

/// The oldest CRIU that works on current kernels (see ../shared/PLATFORM.md).
pub const MIN_CRIU: (u32, u32) = (4, 2);

/// Looks `name` up in `$PATH` and the sbin directories root's PATH may lack.
pub fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Parses `major.minor[.patch]` out of a version line such as `Version: 4.2.1`.
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let digits: String = text[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
    let mut parts = digits.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next().flatten().unwrap_or(0);
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The version a program prints with `--version` (first line mentioning a version).
pub fn program_version(path: &Path) -> Option<String> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().find(|l| l.chars().any(|c| c.is_ascii_digit())).map(|l| l.trim().to_string())
}

/// runc, or an error saying how to install it.
pub fn require_runc(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let path = match explicit {
        Some(p) if is_executable(p) => p.to_path_buf(),
        Some(p) => bail!("runc not found at {}: install it (apt-get install runc) or fix --runc", p.display()),
        None => match find_executable("runc") {
            Some(p) => p,
            None => bail!("runc not found: install it with apt-get install runc (scripts/setup.sh does)"),
        },
    };
    Ok(path)
}

/// A CRIU of at least [`MIN_CRIU`], or an error saying how to get one.
pub fn require_criu(explicit: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => find_executable("criu").ok_or_else(|| {
            anyhow::anyhow!(
                "CRIU not found: Herd needs CRIU >= 4.2; scripts/setup.sh builds CRIU 4.2.1 into /usr/local/sbin"
            )
        })?,
    };
    let line = program_version(&path).ok_or_else(|| {
        anyhow::anyhow!("{} does not run: Herd needs CRIU >= 4.2 (scripts/setup.sh builds it)", path.display())
    })?;
    let version = parse_version(&line).unwrap_or((0, 0, 0));
    if (version.0, version.1) < MIN_CRIU {
        bail!(
            "{} is CRIU {}.{}.{}, too old for this kernel: Herd needs CRIU >= 4.2 (scripts/setup.sh builds 4.2.1)",
            path.display(),
            version.0,
            version.1,
            version.2
        );
    }
    Ok((path, format!("{}.{}.{}", version.0, version.1, version.2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("Version: 4.2.1"), Some((4, 2, 1)));
        assert_eq!(parse_version("runc version 1.1.5+ds1"), Some((1, 1, 5)));
        assert_eq!(parse_version("nats-server: v2.10.27"), Some((2, 10, 27)));
        assert_eq!(parse_version("3.17"), Some((3, 17, 0)));
        assert_eq!(parse_version("none"), None);
    }

    #[test]
    fn missing_tools_say_what_to_do() {
        let err = require_runc(Some(Path::new("/nonexistent/runc"))).unwrap_err().to_string();
        assert!(err.contains("apt-get install runc"), "{err}");
        let err = require_criu(Some(Path::new("/nonexistent/criu"))).unwrap_err().to_string();
        assert!(err.contains("CRIU >= 4.2"), "{err}");
    }
}
