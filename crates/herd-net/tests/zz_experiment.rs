mod common;
use common::*;
use herd_net::{Netlink, Netns, attach_container, detach_and_remove, detach_container};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const N: usize = 100;
fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 199, 240 + (i / 250) as u8, (i % 250 + 1) as u8)
}

async fn setup(cleanup: &Cleanup, node: &Netlink, tag: &str, n: usize) -> (Vec<Netns>, Duration) {
    let cs: Vec<Netns> = (0..n)
        .map(|i| cleanup.netns(&format!("{tag}{i}")))
        .collect();
    let t = Instant::now();
    let f = cs.iter().enumerate().map(|(i, ns)| {
        let node = node.clone();
        let ns = ns.clone();
        tokio::spawn(async move { attach_container(&node, &ns, &format!("hx{i}"), ip(i)).await })
    });
    for r in futures::future::join_all(f).await {
        r.unwrap().unwrap();
    }
    (cs, t.elapsed())
}

async fn wait_gone(node_ns: &Netns) -> Duration {
    let t = Instant::now();
    while links_in(node_ns).len() > 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn experiment() {
    require_root();
    let cleanup = Cleanup::new("exp");
    let node_ns = cleanup.netns("node");
    let node = Netlink::in_netns(&node_ns).unwrap();
    for pause in [0u64, 1, 5, 20, 50, 0, 50] {
        let (cs, _) = setup(&cleanup, &node, &format!("p{pause}_"), 1).await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let idx = node.link_index("hx0").await.unwrap().unwrap();
        let t = Instant::now();
        Netns::remove(cs[0].path()).unwrap();
        let mut polls = 0;
        while node.link_index("hx0").await.unwrap() == Some(idx) {
            polls += 1;
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        eprintln!(
            "pause {pause}ms before remove: gone after {:?} ({polls} polls)",
            t.elapsed()
        );
    }
    for n in [1usize, N] {
        // delete link, concurrent
        let (_cs, a) = setup(&cleanup, &node, &format!("a{n}_"), n).await;
        let t = Instant::now();
        let f = (0..n).map(|i| {
            let node = node.clone();
            tokio::spawn(async move { detach_container(&node, &format!("hx{i}")).await })
        });
        for r in futures::future::join_all(f).await {
            r.unwrap().unwrap();
        }
        eprintln!("n={n} attach {:?} ; delete_link {:?}", a, t.elapsed());

        // group delete (library)
        let (_cs, _) = setup(&cleanup, &node, &format!("g{n}_"), n).await;
        let names: Vec<String> = (0..n).map(|i| format!("hx{i}")).collect();
        let t = Instant::now();
        herd_net::detach_containers(&node, &names).await.unwrap();
        eprintln!("n={n} detach_containers total {:?}", t.elapsed());
        assert_eq!(links_in(&node_ns), ["lo"]);

        // netns remove (raw), then wait
        let (cs, _) = setup(&cleanup, &node, &format!("r{n}_"), n).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        for c in &cs {
            Netns::remove(c.path()).unwrap();
        }
        let t1 = t.elapsed();
        let g = wait_gone(&node_ns).await;
        eprintln!(
            "n={n} netns remove: sync part {t1:?}, all links gone after {:?}",
            t1 + g
        );

        for pause in [0u64, 100] {
        let (cs, _) = setup(&cleanup, &node, &format!("d{n}_{pause}_"), n).await;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let t = Instant::now();
        let f = cs.iter().enumerate().map(|(i, c)| {
            let node = node.clone();
            let p = c.path().to_path_buf();
            tokio::spawn(async move {
                let t = Instant::now();
                detach_and_remove(&node, &format!("hx{i}"), &p)
                    .await
                    .map(|_| t.elapsed())
            })
        });
        let mut max = Duration::ZERO;
        for r in futures::future::join_all(f).await {
            max = max.max(r.unwrap().unwrap());
        }
        eprintln!(
            "n={n} detach_and_remove {pause}ms after attach: total {:?} (slowest {max:?})",
            t.elapsed()
        );
        assert_eq!(links_in(&node_ns), ["lo"]);
        }
    }
    drop(node);
    let left = cleanup.teardown();
    assert!(left.is_empty(), "{left:?}");
}
