//! What container and node attachment share: creating a veth whose far end is
//! made directly in the far namespace under its final name, and undoing a
//! half-made attachment when a later step fails or the caller gives up.

use crate::{NetError, Netlink};

/// Creates the veth `name` (in `near`'s namespace) <-> `peer` (made directly
/// in `far`'s namespace), and returns the guard that deletes it again unless
/// the attachment completes.
///
/// An interface already called `name` in `near` is an
/// [`NetError::AlreadyExists`] error and is never touched; so is a `peer`
/// already in `far` (the kernel then makes neither end). The guard is armed
/// before the request is sent, so a caller cancelled while the kernel is
/// creating the pair does not leak it.
pub(crate) async fn create_veth(
    near: &Netlink,
    name: &str,
    mac: Option<[u8; 6]>,
    far: &Netlink,
    peer: &str,
    peer_mac: Option<[u8; 6]>,
) -> Result<UndoVeth, NetError> {
    // Checked first so that the guard below only ever deletes what this call
    // made: from here on, an interface called `name` is ours (names are
    // unique per node by contract).
    if near.link_index(name).await?.is_some() {
        return Err(NetError::AlreadyExists(format!("interface {name} in {}", near.netns_label())));
    }
    let undo = UndoVeth::new(near, name);
    match near.add_veth(name, mac, far, peer, peer_mac).await {
        Ok(()) => Ok(undo),
        Err(e) => {
            // The kernel made neither end (or, on EEXIST for `name`, someone
            // else made `name` meanwhile): nothing of ours to delete.
            undo.disarm();
            Err(e)
        }
    }
}

/// Deletes veth `host_if` (and so its peer, wherever it went, and the routes
/// through it) unless the attachment that created it completes. If the
/// attaching future is dropped half-way, the deletion is spawned on the
/// current runtime.
pub(crate) struct UndoVeth {
    netlink: Option<Netlink>,
    host_if: String,
}

impl UndoVeth {
    fn new(netlink: &Netlink, host_if: &str) -> UndoVeth {
        UndoVeth { netlink: Some(netlink.clone()), host_if: host_if.to_string() }
    }

    /// Forgets the veth: nothing is deleted.
    fn disarm(mut self) {
        self.netlink = None;
    }

    /// Keeps the veth if `result` is Ok, deletes it otherwise; returns `result`.
    pub(crate) async fn finish(mut self, result: Result<(), NetError>) -> Result<(), NetError> {
        let netlink = self.netlink.take();
        if let (Err(error), Some(netlink)) = (&result, netlink)
            && let Err(undo) = netlink.delete_link(&self.host_if).await
        {
            tracing::warn!(
                host_if = %self.host_if,
                %error,
                %undo,
                "could not delete the veth of a failed attachment"
            );
        }
        result
    }
}

impl Drop for UndoVeth {
    fn drop(&mut self) {
        // `netlink` is still set only if neither `finish` nor `disarm` ran:
        // the future was cancelled.
        let Some(netlink) = self.netlink.take() else {
            return;
        };
        let host_if = std::mem::take(&mut self.host_if);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(e) = netlink.delete_link(&host_if).await {
                        tracing::warn!(%host_if, error = %e, "could not delete the veth of a cancelled attachment");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(%host_if, "attachment cancelled outside a runtime: its veth is left behind");
            }
        }
    }
}
