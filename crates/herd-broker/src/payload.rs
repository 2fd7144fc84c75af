//! The broker's bound on one message (its `max_payload`), checked before anything is sent, so
//! a value too large is refused with its size and the bound, as a [`PayloadTooLarge`] callers
//! can tell from other broker errors (the Control node answers it with HTTP 413), instead of
//! the client's bare "max payload size exceeded".

use herd_proto::units::Bytes;

/// Room left in a message for its headers (a conditional key-value write carries one).
pub const HEADER_ROOM: usize = 1024;

/// A message that would be larger than the broker carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} is {}; the limit is {} (the broker's max_payload, the most it carries in one message): make it smaller, or raise max_payload in the broker's configuration",
    Bytes(*.size as u64),
    Bytes(*.limit as u64)
)]
pub struct PayloadTooLarge {
    pub what: String,
    pub size: usize,
    pub limit: usize,
}

/// Checks that a payload of `size` bytes (plus [`HEADER_ROOM`]) fits in `max_payload`;
/// `what` names it in the error.
pub fn check_fits(max_payload: usize, what: impl FnOnce() -> String, size: usize) -> Result<(), PayloadTooLarge> {
    if size.saturating_add(HEADER_ROOM) > max_payload {
        Err(PayloadTooLarge { what: what(), size, limit: max_payload })
    } else {
        Ok(())
    }
}

/// The [`PayloadTooLarge`] in an error's chain, if it has one.
pub fn payload_too_large(err: &anyhow::Error) -> Option<&PayloadTooLarge> {
    err.chain().find_map(|e| e.downcast_ref::<PayloadTooLarge>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_size_and_limit() {
        check_fits(1 << 20, || unreachable!(), 1000).unwrap();
        let err = check_fits(1 << 20, || "the record \"web\" of bucket herd-containers".into(), 10 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the record \"web\" of bucket herd-containers is 10MiB; the limit is 1MiB (the broker's max_payload, \
             the most it carries in one message): make it smaller, or raise max_payload in the broker's configuration"
        );
        let wrapped = anyhow::Error::new(err.clone()).context("writing \"web\"");
        assert_eq!(payload_too_large(&wrapped), Some(&err));
        assert_eq!(payload_too_large(&anyhow::anyhow!("other")), None);
    }
}
