//! Container addresses are reachable from the machine that runs the cluster and from
//! containers on other nodes.

mod common;

use std::time::Duration;

use common::{Cluster, tcp_exchange, wait_for};

const T: Duration = Duration::from_secs(30);

#[test]
fn containers_are_reachable_from_the_host_and_across_nodes() {
    let cluster = Cluster::up(4, 2);
    cluster.import_busybox();
    let serve = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www";
    cluster.ok(&["run", "--name", "web", "--node", "n1", "busybox", "--", "sh", "-c", serve]);
    let web = cluster.wait_state("web", "running", T);

    // From the host, over the route herd up keeps to n1.
    let reply = wait_for("the web server to answer the host", T, || {
        tcp_exchange(web.ip, 8080, "GET /index.html HTTP/1.0\r\n\r\n").ok()
    });
    assert!(reply.contains("hello-from-web"), "{reply}");

    // From a container on the other node.
    let fetch = format!("wget -q -O - http://{}:8080/index.html", web.ip);
    cluster.ok(&["run", "--name", "client", "--node", "n2", "busybox", "--", "sh", "-c", &fetch]);
    let client = cluster.wait_state("client", "exited", T);
    assert_eq!(client.exit_code, Some(0), "{}", cluster.ok(&["logs", "client"]));
    assert_eq!(cluster.ok(&["logs", "client"]).trim(), "hello-from-web");

    // And back: the container on n1 reaches one on n2.
    cluster.ok(&["run", "--name", "echo", "--node", "n2", "busybox", "--", "sh", "-c", serve]);
    let echo = cluster.wait_state("echo", "running", T);
    assert_ne!(echo.ip, web.ip);
    let fetch = format!("wget -q -O - http://{}:8080/index.html", echo.ip);
    cluster.ok(&["run", "--name", "client2", "--node", "n1", "busybox", "--", "sh", "-c", &fetch]);
    assert_eq!(cluster.wait_state("client2", "exited", T).exit_code, Some(0));
    assert_eq!(cluster.ok(&["logs", "client2"]).trim(), "hello-from-echo");

    // A container keeps its address across checkpoint and restore.
    cluster.ok(&["checkpoint", "web"]);
    cluster.ok(&["restore", "web"]);
    let again = cluster.container("web");
    assert_eq!(again.ip, web.ip);
    let reply = wait_for("the restored web server to answer", T, || {
        tcp_exchange(web.ip, 8080, "GET /index.html HTTP/1.0\r\n\r\n").ok()
    });
    assert!(reply.contains("hello-from-web"), "{reply}");

    // Removing a container removes its route from the host.
    cluster.ok(&["rm", "-f", "echo"]);
    wait_for("the route to the removed container to go", T, || {
        let routes =
            std::process::Command::new("ip").args(["route", "show", &format!("{}/32", echo.ip)]).output().unwrap();
        routes.stdout.is_empty().then_some(())
    });
}
