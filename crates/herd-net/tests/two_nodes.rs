//! Two fake Compute nodes on a host bridge, containers in each, routes between
//! them, and real traffic: the whole network design, end to end. Needs root.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use herd_net::{CONTAINER_GATEWAY, Netlink, Netns, attach_container, attach_node, container_mac};

#[tokio::test]
async fn containers_on_two_nodes_reach_each_other_and_the_host() {
    require_root();
    let cleanup = Cleanup::new("two-nodes");
    let n = host_subnet_octet();
    let underlay = |i: u8| Ipv4Addr::new(10, 199, n, i);
    let container_ip = |i: u8| Ipv4Addr::new(10, 199, n + 1, i);

    let host = Netlink::new().unwrap();
    let bridge = unique_ifname("hnbr", "");
    let bridge_addr = net(&format!("10.199.{n}.1/24"));
    cleanup.host_link(&bridge);
    host.create_bridge(&bridge, bridge_addr).await.unwrap();
    host.create_bridge(&bridge, bridge_addr).await.unwrap(); // idempotent

    // Two nodes: netns + veth into the bridge.
    let mut nodes: Vec<(Netns, Netlink, Ipv4Addr)> = Vec::new();
    for i in 0..2u8 {
        let ns = cleanup.netns(&format!("node{i}"));
        let host_if = unique_ifname("hn", &format!("n{i}"));
        cleanup.host_link(&host_if);
        let addr = underlay(11 + i);
        attach_node(&host, &bridge, &host_if, &ns, ipnet::Ipv4Net::new(addr, 24).unwrap(), underlay(1)).await.unwrap();
        let netlink = Netlink::in_netns(&ns).unwrap();
        nodes.push((ns, netlink, addr));
    }

    // Containers: a and a2 on node 0, b on node 1.
    let (ip_a, ip_a2, ip_b) = (container_ip(10), container_ip(11), container_ip(20));
    let c_a = cleanup.netns("c-a");
    let c_a2 = cleanup.netns("c-a2");
    let c_b = cleanup.netns("c-b");
    attach_container(&nodes[0].1, &c_a, "hca", ip_a).await.unwrap();
    attach_container(&nodes[0].1, &c_a2, "hca2", ip_a2).await.unwrap();
    attach_container(&nodes[1].1, &c_b, "hcb", ip_b).await.unwrap();

    // Routes between nodes, and from the host to both nodes' containers.
    let (node0, node1) = (nodes[0].2, nodes[1].2);
    nodes[0].1.replace_route_via(ip_b.into(), node1).await.unwrap();
    nodes[1].1.replace_route_via(ip_a.into(), node0).await.unwrap();
    nodes[1].1.replace_route_via(ip_a2.into(), node0).await.unwrap();
    for (ip, via) in [(ip_a, node0), (ip_a2, node0), (ip_b, node1)] {
        cleanup.host_route(ip.into());
        host.replace_route_via(ip.into(), via).await.unwrap();
    }

    // Container state, as `ip` shows it.
    for (ns, ip) in [(&c_a, ip_a), (&c_a2, ip_a2), (&c_b, ip_b)] {
        let addrs = ip_in(ns, &["-4", "-o", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&format!("inet {ip}/32")), "{addrs}");
        let default = ip_in(ns, &["-4", "route", "show", "default"]);
        assert!(
            default.contains(&format!("default via {CONTAINER_GATEWAY} dev eth0")) && default.contains("onlink"),
            "{default}"
        );
        let eth0 = ip_in(ns, &["link", "show", "dev", "eth0"]);
        assert!(eth0.contains(",UP") || eth0.contains("<UP"), "{eth0}");
        let mac = container_mac(ip).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        assert!(eth0.contains(&mac), "{eth0} lacks {mac}");
        let lo = ip_in(ns, &["link", "show", "dev", "lo"]);
        assert!(lo.contains("UP"), "{lo}");
        assert_eq!(links_in(ns), ["lo", "eth0"]);
    }

    // Node state.
    let (node0_ns, node0_nl) = (&nodes[0].0, &nodes[0].1);
    let route_a = ip_in(node0_ns, &["-4", "route", "show", &format!("{ip_a}/32")]);
    assert!(route_a.contains("dev hca") && route_a.contains("scope link"), "{route_a}");
    assert_eq!(sysctl_in(node0_ns, "net/ipv4/conf/hca/proxy_arp"), "1");
    assert_eq!(sysctl_in(node0_ns, "net/ipv4/neigh/hca/proxy_delay"), "0");
    assert_eq!(sysctl_in(node0_ns, "net/ipv4/ip_forward"), "1");
    assert_eq!(sysctl_in(node0_ns, "net/ipv4/conf/all/rp_filter"), "0");
    assert_eq!(sysctl_in(node0_ns, "net/ipv4/conf/default/rp_filter"), "0");
    let hca = ip_in(node0_ns, &["link", "show", "dev", "hca"]);
    assert!(hca.contains("ee:ee:ee:ee:ee:ee"), "{hca}");
    let eth0 = ip_in(node0_ns, &["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(eth0.contains(&format!("inet {node0}/24")), "{eth0}");
    let default = ip_in(node0_ns, &["-4", "route", "show", "default"]);
    assert!(default.contains(&format!("via {}", underlay(1))), "{default}");
    assert_eq!(node0_nl.routes_via().await.unwrap(), [(ip_b, node1)]);
    assert_eq!(nodes[1].1.routes_via().await.unwrap(), [(ip_a, node0), (ip_a2, node0)]);
    let ports = String::from_utf8(ip_host(&["-o", "link", "show", "master", &bridge]).stdout).unwrap();
    for i in 0..2 {
        let port = unique_ifname("hn", &format!("n{i}"));
        assert!(ports.contains(&format!(": {port}@")), "{port} not in bridge: {ports}");
    }
    let host_routes = host.routes_via().await.unwrap();
    for entry in [(ip_a, node0), (ip_a2, node0), (ip_b, node1)] {
        assert!(host_routes.contains(&entry), "{entry:?} not in {host_routes:?}");
    }

    // Real traffic.
    ping(Some(&c_a), ip_b).unwrap();
    ping(Some(&c_b), ip_a).unwrap();
    ping(Some(&c_a), ip_a2).unwrap(); // same node
    ping(None, ip_a).unwrap();
    ping(None, ip_b).unwrap();
    ping(Some(&c_b), underlay(1)).unwrap(); // container to the host's bridge address

    // TCP from a to b: a listener opened in b's namespace, a client in a's.
    let listener = c_b.run(move || TcpListener::bind((ip_b, 0))).unwrap().unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(&buf).unwrap();
        peer
    });
    let echoed = c_a
        .run(move || {
            let mut s = TcpStream::connect_timeout(&(ip_b, port).into(), Duration::from_secs(5))?;
            s.write_all(b"herd!")?;
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf)?;
            std::io::Result::Ok(buf)
        })
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"herd!");
    assert_eq!(server.join().unwrap().ip(), ip_a, "the peer keeps its own IP (no NAT)");

    // Removing a remote route is seen by routes_via.
    node0_nl.delete_route(ip_b.into()).await.unwrap();
    node0_nl.delete_route(ip_b.into()).await.unwrap(); // Ok when missing
    assert!(node0_nl.routes_via().await.unwrap().is_empty());
    let gone = ip_in(node0_ns, &["-4", "route", "show", &format!("{ip_b}/32")]);
    assert!(gone.trim().is_empty(), "{gone}");

    drop(nodes);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!ip_host(&["link", "show", &bridge]).status.success());
}
