//! Attaching and detaching containers inside a throw-away node namespace (the
//! host's own network is not touched): idempotency, clean failures, many at
//! once; plus the namespace and netlink primitives. Needs root.

mod common;

use std::net::Ipv4Addr;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::*;
use herd_net::{
    NETNS_TEARDOWN_GRACE, NetError, Netlink, Netns, attach_container, attach_node, detach_and_remove, detach_container,
    detach_containers, read_sysctl, write_sysctl,
};

/// Interfaces whose name shows a temporary veth end was left behind.
fn temporaries(ns: &Netns) -> Vec<String> {
    links_in(ns).into_iter().filter(|l| l.starts_with("ht") && l.len() == 15).collect()
}

fn route_to(ns: &Netns, ip: Ipv4Addr) -> String {
    ip_in(ns, &["-4", "route", "show", &format!("{ip}/32")])
}

#[tokio::test]
async fn detach_and_remove_leave_nothing_behind_and_are_idempotent() {
    require_root();
    let cleanup = Cleanup::new("detach");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    let c = cleanup.netns("c");
    let ip = Ipv4Addr::new(10, 199, 250, 2);

    attach_container(&node, &c, "hcd0", ip).await.unwrap();
    assert_eq!(links_in(&node_ns), ["lo", "hcd0"]);
    assert!(route_to(&node_ns, ip).contains("dev hcd0"));
    assert_eq!(links_in(&c), ["lo", "eth0"]);

    detach_container(&node, "hcd0").await.unwrap();
    assert_eq!(links_in(&node_ns), ["lo"]);
    assert!(route_to(&node_ns, ip).trim().is_empty());
    assert_eq!(links_in(&c), ["lo"], "the container's eth0 goes with the veth");
    detach_container(&node, "hcd0").await.unwrap(); // already gone: Ok

    // The namespace can be attached again after a detach.
    attach_container(&node, &c, "hcd0", ip).await.unwrap();
    detach_container(&node, "hcd0").await.unwrap();

    let path = c.path().to_path_buf();
    Netns::remove(&path).unwrap();
    assert!(!path.exists());
    Netns::remove(&path).unwrap(); // already gone: Ok
    assert_not_found(Netns::open(&path));
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(path.to_str().unwrap()), "{mounts}");

    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn detach_and_remove_tears_down_veth_route_and_namespace() {
    require_root();
    let cleanup = Cleanup::new("detach-remove");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    let ip = Ipv4Addr::new(10, 199, 249, 2);

    // Nothing else holds the namespace: the kernel destroys it, veth included.
    let c = cleanup.netns("c");
    attach_container(&node, &c, "hcr0", ip).await.unwrap();
    assert!(route_to(&node_ns, ip).contains("dev hcr0"));
    let started = Instant::now();
    detach_and_remove(&node, "hcr0", c.path()).await.unwrap();
    let took = started.elapsed();
    assert!(took < NETNS_TEARDOWN_GRACE, "took {took:?}: fell back?");
    assert_eq!(links_in(&node_ns), ["lo"]);
    assert!(route_to(&node_ns, ip).trim().is_empty());
    assert!(!c.path().exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(c.path().to_str().unwrap()), "{mounts}");
    detach_and_remove(&node, "hcr0", c.path()).await.unwrap(); // all gone: Ok

    // Something still holds the namespace (here an open fd): it outlives its
    // removal, so after the grace period the veth is deleted explicitly.
    let held = cleanup.netns("held");
    attach_container(&node, &held, "hcr1", ip).await.unwrap();
    let pin = std::fs::File::open(held.path()).unwrap();
    detach_and_remove(&node, "hcr1", held.path()).await.unwrap();
    assert_eq!(links_in(&node_ns), ["lo"]);
    assert!(route_to(&node_ns, ip).trim().is_empty());
    assert!(!held.path().exists());
    // The namespace itself lives on, without the container's eth0.
    let still = pin.try_clone().unwrap();
    let inside = std::thread::spawn(move || {
        nix::sched::setns(&still, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap()
    })
    .join()
    .unwrap();
    let inside = String::from_utf8_lossy(&inside.stdout).to_string();
    assert!(!inside.contains("eth0"), "{inside}");
    drop(pin);

    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn detach_containers_deletes_a_batch() {
    require_root();
    let cleanup = Cleanup::new("detach-batch");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    let ip = |i: u8| Ipv4Addr::new(10, 199, 248, i + 1);
    let containers: Vec<Netns> = (0..3).map(|i| cleanup.netns(&format!("c{i}"))).collect();
    for (i, c) in containers.iter().enumerate() {
        attach_container(&node, c, &format!("hcb{i}"), ip(i as u8)).await.unwrap();
    }
    // A bystander, not in the batch, must survive it.
    let bystander = cleanup.netns("bystander");
    attach_container(&node, &bystander, "hcbx", ip(9)).await.unwrap();

    // Names already gone are fine.
    detach_containers(&node, &["hcb0", "hcb1", "hcb2", "hcbgone"]).await.unwrap();
    assert_eq!(links_in(&node_ns), ["lo", "hcbx"]);
    for (i, c) in containers.iter().enumerate() {
        assert!(route_to(&node_ns, ip(i as u8)).trim().is_empty());
        assert_eq!(links_in(c), ["lo"]);
    }
    assert!(route_to(&node_ns, ip(9)).contains("dev hcbx"));
    detach_containers(&node, &["hcb0", "hcb1"]).await.unwrap();
    detach_containers::<&str>(&node, &[]).await.unwrap();
    detach_containers(&node, &["hcbx"]).await.unwrap();
    assert_eq!(links_in(&node_ns), ["lo"]);
    let err = detach_containers(&node, &["hcb0", "much-too-long-name"]).await.unwrap_err();
    assert!(matches!(err, NetError::Invalid { .. }), "{err}");

    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Waits (up to 10 s) until `node_ns` and `container` hold only `lo` and the
/// node has no route to `ip`: the undo of a cancelled attach is spawned.
async fn wait_until_clean(node_ns: &Netns, container: &Netns, ip: Ipv4Addr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (node_links, container_links) = (links_in(node_ns), links_in(container));
        let route = route_to(node_ns, ip);
        if node_links == ["lo"] && container_links == ["lo"] && route.trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: node {node_links:?} {route}, container {container_links:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn cancelled_attachments_leave_nothing_behind() {
    require_root();
    let cleanup = Cleanup::new("cancel");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    let c = cleanup.netns("c");
    let ip = Ipv4Addr::new(10, 199, 247, 1);

    // Drop the attach after 0, 1, 2, ... polls, until it completes. Between
    // polls, the helper threads (entering namespaces) get a little real time
    // and the netlink connection tasks a turn, so the cancellation points
    // move through the whole attach, including while the pair is being made.
    let mut polls = 0usize;
    let mut cancelled = 0;
    loop {
        let completed = {
            let mut attach = pin!(attach_container(&node, &c, "hcc0", ip));
            let mut result = None;
            for _ in 0..polls {
                if let Poll::Ready(r) = futures::poll!(attach.as_mut()) {
                    result = Some(r);
                    break;
                }
                std::thread::sleep(Duration::from_micros(20));
                tokio::task::yield_now().await;
            }
            result
        };
        match completed {
            Some(result) => {
                result.unwrap();
                assert_eq!(links_in(&c), ["lo", "eth0"]);
                detach_container(&node, "hcc0").await.unwrap();
                wait_until_clean(&node_ns, &c, ip).await;
                break;
            }
            None => {
                cancelled += 1;
                wait_until_clean(&node_ns, &c, ip).await;
            }
        }
        polls += 1 + polls / 16;
        assert!(polls < 1_000_000, "the attach never completes");
    }
    eprintln!("cancelled {cancelled} attaches at increasing depths before one completed");
    assert!(cancelled > 5, "{cancelled}");

    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn attach_node_fails_cleanly_when_the_node_has_an_eth0() {
    require_root();
    // A throw-away namespace stands in for the host: its bridge, its veths.
    let cleanup = Cleanup::new("node-eth0");
    let host_ns = cleanup.netns("host");
    let host = Netlink::in_netns(&host_ns).unwrap();
    host.create_bridge("hnbr", net("10.199.246.1/24")).await.unwrap();
    let node_ns = cleanup.netns("node");
    Netlink::in_netns(&node_ns).unwrap().create_bridge("eth0", net("192.0.2.1/24")).await.unwrap();
    let gateway = Ipv4Addr::new(10, 199, 246, 1);

    let err = attach_node(&host, "hnbr", "hnn0", &node_ns, net("10.199.246.11/24"), gateway).await.unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("interface eth0 in netns") && msg.contains(node_ns.path().to_str().unwrap()), "{msg}");
    assert_eq!(links_in(&host_ns), ["lo", "hnbr"]);
    assert_eq!(links_in(&node_ns), ["lo", "eth0"]);

    // A fresh node namespace attaches, its eth0 made there directly.
    let fresh = cleanup.netns("fresh");
    attach_node(&host, "hnbr", "hnn1", &fresh, net("10.199.246.12/24"), gateway).await.unwrap();
    assert_eq!(links_in(&fresh), ["lo", "eth0"]);
    let eth0 = ip_in(&fresh, &["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains("inet 10.199.246.12/24"), "{eth0}");
    assert_eq!(links_in(&host_ns), ["lo", "hnbr", "hnn1"]);
    let ports = ip_in(&host_ns, &["-o", "link", "show", "master", "hnbr"]);
    assert!(ports.contains(": hnn1@"), "{ports}");
    // attach_node's sysctls landed in the node namespace.
    assert_eq!(sysctl_in(&fresh, "net/ipv4/ip_forward"), "1");
    ping(Some(&fresh), gateway).unwrap();
    // host_if taken: refused before anything is made.
    let err = attach_node(&host, "hnbr", "hnn1", &node_ns, net("10.199.246.13/24"), gateway).await.unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
    assert!(err.to_string().contains("hnn1"), "{err}");
    assert_eq!(links_in(&node_ns), ["lo", "eth0"]);
    assert_eq!(links_in(&host_ns), ["lo", "hnbr", "hnn1"]);

    drop(host);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn failed_attachments_undo_what_they_did() {
    require_root();
    let cleanup = Cleanup::new("conflict");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    let (ip1, ip2, ip3) =
        (Ipv4Addr::new(10, 199, 251, 1), Ipv4Addr::new(10, 199, 251, 2), Ipv4Addr::new(10, 199, 251, 3));
    let c1 = cleanup.netns("c1");
    let c2 = cleanup.netns("c2");
    attach_container(&node, &c1, "hct0", ip1).await.unwrap();

    // host_if already taken: fails, and the existing interface is untouched.
    let err = attach_container(&node, &c2, "hct0", ip2).await.unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("hct0") && msg.contains(&ip2.to_string()), "{msg}");
    assert_eq!(links_in(&node_ns), ["lo", "hct0"]);
    assert!(route_to(&node_ns, ip1).contains("dev hct0"));
    assert!(route_to(&node_ns, ip2).trim().is_empty());
    assert_eq!(links_in(&c2), ["lo"]);
    assert_eq!(links_in(&c1), ["lo", "eth0"]);

    // The container already has an eth0: the kernel refuses to make the pair
    // (its container end is created there as eth0), and nothing is left in
    // either namespace.
    let c3 = cleanup.netns("c3");
    Netlink::in_netns(&c3).unwrap().create_bridge("eth0", net("192.0.2.1/24")).await.unwrap();
    let err = attach_container(&node, &c3, "hct3", ip3).await.unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("interface eth0 in netns") && msg.contains(c3.path().to_str().unwrap()), "{msg}");
    assert_eq!(links_in(&node_ns), ["lo", "hct0"]);
    assert!(temporaries(&node_ns).is_empty());
    assert!(route_to(&node_ns, ip3).trim().is_empty());
    assert_eq!(links_in(&c3), ["lo", "eth0"]);
    assert!(temporaries(&c3).is_empty());

    // Bad arguments change nothing.
    let err = attach_container(&node, &c2, "name-far-too-long", ip2).await.unwrap_err();
    assert!(matches!(err, NetError::Invalid { .. }), "{err}");
    // A namespace removed under a caller still holding its Netns.
    let stale = cleanup.netns("stale");
    Netns::remove(stale.path()).unwrap();
    let err = attach_container(&node, &stale, "hct4", ip2).await.unwrap_err();
    assert!(matches!(err, NetError::NotFound(_)), "{err}");
    assert_eq!(links_in(&node_ns), ["lo", "hct0"]);

    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Attaches `containers` concurrently (container i through `hm<i>`, with
/// address `ip(i)`); returns how long it took.
async fn attach_all(node: &Netlink, containers: &[Netns], ip: impl Fn(usize) -> Ipv4Addr) -> Duration {
    let started = Instant::now();
    let attaches = containers.iter().enumerate().map(|(i, ns)| {
        let (node, ns, ip) = (node.clone(), ns.clone(), ip(i));
        tokio::spawn(async move { attach_container(&node, &ns, &format!("hm{i}"), ip).await })
    });
    for result in futures::future::join_all(attaches).await {
        result.unwrap().unwrap();
    }
    started.elapsed()
}

/// Runs one detach per container concurrently; returns how long it took.
async fn detach_all<F>(count: usize, detach: impl Fn(usize) -> F) -> Duration
where
    F: Future<Output = Result<(), NetError>> + Send + 'static,
{
    let started = Instant::now();
    let detaches = (0..count).map(|i| tokio::spawn(detach(i)));
    for result in futures::future::join_all(detaches).await {
        result.unwrap().unwrap();
    }
    started.elapsed()
}

/// Prints (informative, not asserted: other tests run at the same time) the
/// cost of attaching and of each way of detaching, for 1 and for 100
/// containers at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_containers_attach_concurrently() {
    require_root();
    const COUNT: usize = 100;
    let cleanup = Cleanup::new("many");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    let ip = |i: usize| Ipv4Addr::new(10, 199, 252 + (i / 250) as u8, (i % 250 + 1) as u8);
    let per = |took: Duration, n: usize| took / n as u32;

    let started = Instant::now();
    let containers: Vec<Netns> = (0..COUNT).map(|i| cleanup.netns(&format!("c{i}"))).collect();
    eprintln!("{COUNT} netns created in {:?}", started.elapsed());

    for n in [1, COUNT] {
        let batch = &containers[..n];
        let names: Vec<String> = (0..n).map(|i| format!("hm{i}")).collect();

        // detach_container: one veth deletion each.
        let attached = attach_all(&node, batch, ip).await;
        let routes = ip_in(&node_ns, &["-4", "route", "show"]);
        for i in 0..n {
            assert!(routes.contains(&format!("{} dev hm{i} ", ip(i))), "no route for container {i}: {routes}");
        }
        assert!(temporaries(&node_ns).is_empty());
        for (i, ns) in batch.iter().enumerate().step_by(17) {
            let addrs = ip_in(ns, &["-4", "-o", "addr", "show", "dev", "eth0"]);
            assert!(addrs.contains(&format!("inet {}/32", ip(i))), "{addrs}");
        }
        let detached = detach_all(n, |i| {
            let node = node.clone();
            async move { detach_container(&node, &format!("hm{i}")).await }
        })
        .await;
        assert_eq!(links_in(&node_ns), ["lo"]);
        eprintln!(
            "{n} concurrent: attach {attached:?} ({:?} each), detach_container {detached:?} ({:?} each)",
            per(attached, n),
            per(detached, n)
        );

        // detach_containers: one batch.
        let attached = attach_all(&node, batch, ip).await;
        let started = Instant::now();
        detach_containers(&node, &names).await.unwrap();
        let detached = started.elapsed();
        assert_eq!(links_in(&node_ns), ["lo"]);
        eprintln!(
            "{n} concurrent: attach {attached:?} ({:?} each), detach_containers (one batch) \
             {detached:?} ({:?} each)",
            per(attached, n),
            per(detached, n)
        );

        // detach_and_remove: the kernel destroys the namespaces. Attaching
        // holds each namespace for an RCU grace period after it returns (its
        // netlink socket there is freed after one), which a container that
        // ran for a while does not: let that pass, as it would.
        let attached = attach_all(&node, batch, ip).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let detached = detach_all(n, |i| {
            let node = node.clone();
            let path = batch[i].path().to_path_buf();
            async move { detach_and_remove(&node, &format!("hm{i}"), &path).await }
        })
        .await;
        assert_eq!(links_in(&node_ns), ["lo"]);
        assert!(batch.iter().all(|ns| !ns.path().exists()));
        eprintln!(
            "{n} concurrent: attach {attached:?} ({:?} each), detach_and_remove {detached:?} \
             ({:?} each)",
            per(attached, n),
            per(detached, n)
        );
        assert!(detached < NETNS_TEARDOWN_GRACE, "detach_and_remove fell back to deleting the veths");
        for ns in batch {
            Netns::create(ns.path()).unwrap();
        }
    }
    let routes = ip_in(&node_ns, &["-4", "route", "show"]);
    assert!(routes.trim().is_empty(), "{routes}");

    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn links_addresses_and_routes_are_idempotent() {
    require_root();
    let cleanup = Cleanup::new("netlink");
    let ns = cleanup.netns("n");
    let nl = Netlink::in_netns(&ns).unwrap();

    assert_eq!(nl.link_index("nothere").await.unwrap(), None);
    nl.delete_link("nothere").await.unwrap();
    assert_not_found(nl.set_up("nothere").await);
    assert_not_found(nl.add_address("nothere", net("10.199.253.1/24")).await);
    let bad = nl.set_up("much-too-long-name").await.unwrap_err();
    assert!(matches!(bad, NetError::Invalid { .. }), "{bad}");

    let addr = net("10.199.253.1/24");
    nl.create_bridge("hbr0", addr).await.unwrap();
    nl.create_bridge("hbr0", addr).await.unwrap();
    nl.add_address("hbr0", addr).await.unwrap();
    let index = nl.link_index("hbr0").await.unwrap().expect("hbr0 exists");
    assert!(index > 1);
    let shown = ip_in(&ns, &["-4", "-o", "addr", "show", "dev", "hbr0"]);
    assert_eq!(shown.matches("inet ").count(), 1, "{shown}");
    assert!(shown.contains("inet 10.199.253.1/24 brd 10.199.253.255"), "{shown}");
    // lo is not a bridge: create_bridge must refuse to adopt it.
    let err = nl.create_bridge("lo", addr).await.unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");

    // Replace semantics: one route per destination, the latest gateway wins.
    let dest = net("10.199.254.7/32");
    nl.replace_route_via(dest, Ipv4Addr::new(10, 199, 253, 2)).await.unwrap();
    nl.replace_route_via(dest, Ipv4Addr::new(10, 199, 253, 3)).await.unwrap();
    assert_eq!(nl.routes_via().await.unwrap(), [(dest.addr(), Ipv4Addr::new(10, 199, 253, 3))]);
    let shown = ip_in(&ns, &["-4", "route", "show", "10.199.254.7/32"]);
    assert!(shown.contains("via 10.199.253.3 dev hbr0 proto 72"), "{shown}");
    // A dev route replaces the via route (what a migration's destination does).
    nl.replace_route_dev(dest, "hbr0").await.unwrap();
    assert!(nl.routes_via().await.unwrap().is_empty());
    let shown = ip_in(&ns, &["-4", "route", "show", "10.199.254.7/32"]);
    assert!(shown.contains("dev hbr0 proto 72 scope link"), "{shown}");
    // Deleting the via route it replaced leaves the dev route alone.
    nl.delete_route_via(dest, Ipv4Addr::new(10, 199, 253, 3)).await.unwrap();
    let shown = ip_in(&ns, &["-4", "route", "show", "10.199.254.7/32"]);
    assert!(shown.contains("dev hbr0 proto 72 scope link"), "{shown}");
    let other = net("10.199.254.9/32");
    nl.replace_route_via(other, Ipv4Addr::new(10, 199, 253, 2)).await.unwrap();
    nl.delete_route_via(other, Ipv4Addr::new(10, 199, 253, 4)).await.unwrap();
    assert_eq!(nl.routes_via().await.unwrap(), [(other.addr(), Ipv4Addr::new(10, 199, 253, 2))]);
    nl.delete_route_via(other, Ipv4Addr::new(10, 199, 253, 2)).await.unwrap();
    assert!(nl.routes_via().await.unwrap().is_empty());
    nl.delete_route(dest).await.unwrap();
    nl.delete_route(dest).await.unwrap();
    assert!(ip_in(&ns, &["-4", "route", "show", "10.199.254.7/32"]).trim().is_empty());
    let err = nl.replace_route_via(net("10.199.254.8/32"), Ipv4Addr::new(172, 31, 9, 9)).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("172.31.9.9") && msg.contains(&ns.path().display().to_string()), "{msg}");

    nl.delete_link("hbr0").await.unwrap();
    nl.delete_link("hbr0").await.unwrap();
    assert_eq!(links_in(&ns), ["lo"]);

    // sysctls: the writes land in the namespace, not in the host.
    nl.write_sysctl("net/ipv4/ip_forward", "1").await.unwrap();
    assert_eq!(sysctl_in(&ns, "net/ipv4/ip_forward"), "1");
    ns.run(|| write_sysctl("net/ipv4/ip_forward", "0")).unwrap().unwrap();
    assert_eq!(sysctl_in(&ns, "net/ipv4/ip_forward"), "0");
    let missing = ns.run(|| write_sysctl("net/ipv4/conf/nothere/proxy_arp", "1")).unwrap().unwrap_err();
    assert!(missing.to_string().contains("net/ipv4/conf/nothere/proxy_arp"), "{missing}");

    drop(nl);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn namespaces_are_created_opened_and_entered() {
    require_root();
    let cleanup = Cleanup::new("netns");
    let ns = cleanup.netns("nested/dirs/a");
    assert!(ns.path().ends_with("nested/dirs/a"));

    let err = Netns::create(ns.path()).unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
    assert_eq!(Netns::open(ns.path()).unwrap(), ns);

    // A different namespace from the test's, with only a down lo in it.
    let here = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
    let inside = ns.run(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap()).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(here.ino(), inside.ino());
    let again = ns.run_async(|| std::fs::metadata("/proc/thread-self/ns/net").unwrap()).await.unwrap();
    assert_eq!(inside.ino(), again.ino());
    assert_eq!(links_in(&ns), ["lo"]);
    // The calling thread is left where it was.
    assert_eq!(std::fs::metadata("/proc/thread-self/ns/net").unwrap().ino(), here.ino());
    assert!(read_sysctl("net/ipv4/conf/all/forwarding").is_ok(), "the host's sysctls stay readable");

    // A network sysctl is the namespace's own.
    let host_range = read_sysctl("net/ipv4/ping_group_range").unwrap();
    ns.set_sysctl("ipv4/ping_group_range", "0 2147483647").unwrap();
    let inside = ns.run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range").unwrap()).unwrap();
    assert_eq!(inside.split_whitespace().collect::<Vec<_>>(), ["0", "2147483647"]);
    assert_eq!(read_sysctl("net/ipv4/ping_group_range").unwrap(), host_range);
    assert!(ns.set_sysctl("ipv4/no_such_sysctl", "1").is_err());

    // Not namespaces.
    let plain = cleanup.dir.join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let err = Netns::open(&plain).unwrap_err();
    assert!(matches!(err, NetError::NotANetns { .. }), "{err}");
    let err = Netns::create(&plain).unwrap_err();
    assert!(matches!(err, NetError::AlreadyExists(_)), "{err}");
    std::fs::remove_file(&plain).unwrap();
    let err = Netns::open(std::path::Path::new("/proc/self/ns/mnt")).unwrap_err();
    assert!(matches!(&err, NetError::NotANetns { reason, .. } if reason.contains("another kind")), "{err}");
    assert_not_found(Netns::open(&cleanup.dir.join("none")));

    // An empty file left by a crash before the mount is reused.
    let empty = cleanup.netns_path("empty");
    std::fs::write(&empty, b"").unwrap();
    let reused = cleanup.netns("empty");
    assert_eq!(links_in(&reused), ["lo"]);

    // Netns::run propagates a panic.
    let panicked = std::thread::spawn({
        let ns = ns.clone();
        move || ns.run(|| panic!("inside"))
    })
    .join();
    assert!(panicked.is_err());

    // Created on a separate directory level: removal leaves the directories.
    let dir = ns.path().parent().unwrap().to_path_buf();
    Netns::remove(ns.path()).unwrap();
    assert!(dir.exists() && !ns.path().exists());
    std::fs::remove_dir_all(cleanup.dir.join("nested")).unwrap();

    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
}
