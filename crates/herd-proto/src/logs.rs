//! How much of a container's output its node keeps: the log is written in files of at most
//! `max_size` bytes and the newest `max_files` files are kept, as Docker's json-file driver
//! and the kubelet do. A node has limits of its own (`herd node --log-max-size
//! --log-max-files`, the kubelet's 10 MiB and 5 files by default); a container may ask for
//! others with Docker's options, `herd run --log-opt max-size=1m --log-opt max-file=3`.

use serde::{Deserialize, Serialize};

use crate::names::NameError;

/// The default size of one log file: the kubelet's `containerLogMaxSize`.
pub const DEFAULT_MAX_SIZE: u64 = 10 << 20;
/// The default number of log files kept: the kubelet's `containerLogMaxFiles`.
pub const DEFAULT_MAX_FILES: u32 = 5;
/// The smallest log file size allowed: a few lines of the longest kind fit.
pub const MIN_MAX_SIZE: u64 = 64 << 10;
/// The most log files a container may keep.
pub const MAX_MAX_FILES: u32 = 100;

/// A node's (or a container's effective) log limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Bytes one log file may hold before the next one is started.
    pub max_size: u64,
    /// Log files kept, the one being written included.
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_size: DEFAULT_MAX_SIZE, max_files: DEFAULT_MAX_FILES }
    }
}

impl LogLimits {
    /// Checked limits from a size (`10m`, `65536`, `1g`) and a file count.
    pub fn new(max_size: &str, max_files: u32) -> Result<LogLimits, NameError> {
        Ok(LogLimits { max_size: parse_max_size(max_size)?, max_files: check_max_files(max_files)? })
    }

    /// The most bytes of log a container keeps on its node.
    pub fn total(&self) -> u64 {
        self.max_size.saturating_mul(u64::from(self.max_files))
    }
}

/// What a container asked for with `--log-opt`; what it leaves out is its node's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_files: Option<u32>,
}

impl LogOptions {
    /// Parses `--log-opt` values, each `KEY=VALUE` or several of them separated by commas:
    /// `max-size` (bytes, or with a unit: `512k`, `10m`, `1g`) and `max-file` (a count).
    ///
    /// ```
    /// use herd_proto::logs::LogOptions;
    /// let o = LogOptions::parse(&["max-size=1m,max-file=3".to_string()]).unwrap();
    /// assert_eq!((o.max_size, o.max_files), (Some(1 << 20), Some(3)));
    /// assert!(LogOptions::parse(&["mode=non-blocking".to_string()]).is_err());
    /// ```
    pub fn parse(opts: &[String]) -> Result<LogOptions, NameError> {
        let mut out = LogOptions::default();
        for pair in opts.iter().flat_map(|o| o.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                NameError(format!("invalid --log-opt {pair:?}: expected KEY=VALUE, e.g. max-size=10m or max-file=3"))
            })?;
            match key.trim() {
                "max-size" => out.max_size = Some(parse_max_size(value)?),
                "max-file" => {
                    let n = value.trim().parse::<u32>().map_err(|_| {
                        NameError(format!("invalid --log-opt max-file={value}: expected a number of files, e.g. 3"))
                    })?;
                    out.max_files = Some(check_max_files(n)?);
                }
                other => {
                    return Err(NameError(format!(
                        "unknown --log-opt {other:?}: Herd's logs know max-size and max-file"
                    )));
                }
            }
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.max_size.is_none() && self.max_files.is_none()
    }

    /// Checks options that did not come through [`LogOptions::parse`] (an API request).
    pub fn validate(&self) -> Result<(), NameError> {
        if let Some(size) = self.max_size
            && size < MIN_MAX_SIZE
        {
            return Err(NameError(format!(
                "log size {size} is too small: a log file holds at least {} KiB",
                MIN_MAX_SIZE >> 10
            )));
        }
        self.max_files.map(check_max_files).transpose().map(drop)
    }

    /// These options over a node's limits.
    pub fn over(&self, node: LogLimits) -> LogLimits {
        LogLimits {
            max_size: self.max_size.unwrap_or(node.max_size),
            max_files: self.max_files.unwrap_or(node.max_files),
        }
    }
}

fn parse_max_size(text: &str) -> Result<u64, NameError> {
    let bytes = crate::units::parse_memory(text).map_err(|_| {
        NameError(format!("invalid log size {text:?}: expected bytes or a size such as 512k, 10m or 1g"))
    })?;
    if bytes < MIN_MAX_SIZE {
        return Err(NameError(format!(
            "log size {text} is too small: a log file holds at least {} KiB",
            MIN_MAX_SIZE >> 10
        )));
    }
    Ok(bytes)
}

fn check_max_files(n: u32) -> Result<u32, NameError> {
    if (1..=MAX_MAX_FILES).contains(&n) {
        Ok(n)
    } else {
        Err(NameError(format!("invalid number of log files {n}: from 1 to {MAX_MAX_FILES}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_as_docker_spells_them() {
        let o = LogOptions::parse(&["max-size=128k".into(), "max-file=2".into()]).unwrap();
        assert_eq!(o, LogOptions { max_size: Some(128 << 10), max_files: Some(2) });
        let limits = o.over(LogLimits::default());
        assert_eq!(limits, LogLimits { max_size: 128 << 10, max_files: 2 });
        assert_eq!(limits.total(), 256 << 10);
        let partial = LogOptions::parse(&["max-file=7".into()]).unwrap();
        assert_eq!(partial.over(LogLimits::default()), LogLimits { max_size: 10 << 20, max_files: 7 });
        assert!(LogOptions::parse(&[]).unwrap().is_empty());
        for bad in
            ["max-size", "max-size=10x", "max-size=1k", "max-file=0", "max-file=101", "max-file=two", "compress=true"]
        {
            let err = LogOptions::parse(&[bad.into()]).unwrap_err();
            assert!(!err.0.is_empty(), "{bad}");
        }
        assert_eq!(LogLimits::new("10m", 5).unwrap(), LogLimits::default());
        assert!(LogLimits::new("1k", 5).is_err());
    }

    #[test]
    fn options_travel_only_when_given() {
        assert_eq!(serde_json::to_string(&LogOptions::default()).unwrap(), "{}");
        let back: LogOptions = serde_json::from_str("{}").unwrap();
        assert!(back.is_empty());
    }
}
