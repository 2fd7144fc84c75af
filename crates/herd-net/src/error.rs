//! The one error type of this crate, [`NetError`]: every variant says what was
//! being done, on which interface, in which namespace, with which address.

use std::io;
use std::path::PathBuf;

/// An error from a herd-net operation.
///
/// The `context` strings name the interface, the network namespace and the
/// address involved, so the message alone tells a user what failed where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The kernel refused a netlink request.
    #[error("{context}: {error}")]
    Netlink {
        /// What was being done, e.g. "adding 10.1.0.5/32 to eth0 in netns /run/herd/c1".
        context: String,
        /// The kernel's answer (an errno) or the netlink transport's failure.
        error: io::Error,
    },

    /// A system call or a file operation failed (mount, setns, /proc/sys, ...).
    #[error("{context}: {error}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying failure.
        error: io::Error,
    },

    /// An argument was rejected before anything was changed.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid, e.g. "interface name \"eth0/1\"".
        what: String,
        /// Why.
        reason: String,
    },

    /// Something that must not exist yet already does.
    #[error("{0} already exists")]
    AlreadyExists(String),

    /// Something that must exist does not.
    #[error("{0} not found")]
    NotFound(String),

    /// A path expected to pin a network namespace holds something else.
    #[error("{}: not a network namespace ({reason})", path.display())]
    NotANetns {
        /// The path that was checked.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// A [`crate::Netlink`] was created outside a tokio runtime.
    #[error(
        "{0}: no tokio runtime on this thread (netlink handles spawn their connection task on the \
         current tokio runtime, which must have IO enabled)"
    )]
    NoRuntime(String),

    /// A helper thread (the one that enters a namespace) could not be started.
    #[error("{context}: cannot spawn a thread: {error}")]
    Thread {
        /// What the thread was for.
        context: String,
        /// The spawn failure.
        error: io::Error,
    },
}

impl NetError {
    /// The errno behind this error, if it came from the kernel.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { error, .. } | NetError::Io { error, .. } | NetError::Thread { error, .. } => {
                error.raw_os_error()
            }
            _ => None,
        }
    }

    /// Prefixes the context of this error with `prefix` (what the caller was
    /// doing), for the variants that carry one.
    pub(crate) fn context(self, prefix: &str) -> NetError {
        let wrap = |inner: String| format!("{prefix}: {inner}");
        match self {
            NetError::Netlink { context, error } => NetError::Netlink { context: wrap(context), error },
            NetError::Io { context, error } => NetError::Io { context: wrap(context), error },
            NetError::Thread { context, error } => NetError::Thread { context: wrap(context), error },
            NetError::AlreadyExists(what) => NetError::AlreadyExists(wrap(what)),
            NetError::NotFound(what) => NetError::NotFound(wrap(what)),
            NetError::NoRuntime(what) => NetError::NoRuntime(wrap(what)),
            other => other,
        }
    }

    pub(crate) fn io(context: impl Into<String>, error: impl Into<io::Error>) -> NetError {
        NetError::Io { context: context.into(), error: error.into() }
    }

    pub(crate) fn netlink(context: impl Into<String>, error: rtnetlink::Error) -> NetError {
        NetError::Netlink { context: context.into(), error: netlink_to_io(error) }
    }

    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> NetError {
        NetError::Invalid { what: what.into(), reason: reason.into() }
    }
}

/// The errno of a netlink error message, as a positive number.
pub(crate) fn netlink_errno(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

fn netlink_to_io(error: rtnetlink::Error) -> io::Error {
    match &error {
        rtnetlink::Error::NetlinkError(msg) if msg.code.is_some() => msg.to_io(),
        rtnetlink::Error::RequestFailed => io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the netlink connection is closed (was its tokio runtime shut down?)",
        ),
        _ => io::Error::other(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_exposed_and_displayed() {
        let e = NetError::io("mounting x", io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.errno(), Some(libc::EPERM));
        assert!(e.to_string().starts_with("mounting x: "), "{e}");
        assert_eq!(NetError::NotFound("link a".into()).errno(), None);
    }
}
