//! The demo `herd up --demo` runs, and the busybox root filesystem it (and the tests) use.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use herd_cli::{CliConfig, Client};

use crate::layout::Layout;

/// Builds a minimal root filesystem around the host's static busybox (Debian's
/// `busybox-static`): `/bin/busybox` with a symlink per applet, and the usual empty dirs.
pub fn busybox_rootfs(dir: &Path) -> anyhow::Result<()> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("busybox not found: install busybox-static (scripts/setup.sh does)"))?;
    let out = Command::new(busybox).arg("--list").output().context("running busybox --list")?;
    if !out.status.success() {
        bail!("busybox --list failed");
    }
    for d in ["bin", "dev", "proc", "sys", "tmp", "etc", "root", "var", "run"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(busybox, dir.join("bin/busybox")).context("copying busybox")?;
    for applet in String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|a| !a.is_empty()) {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    Ok(())
}

fn herd(args: &[&str], config: &Path) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).args(args).env("HERD_CONFIG", config).output()?;
    if !out.status.success() {
        bail!("herd {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Imports a busybox image, runs a counter in it, and shows it.
pub async fn run(layout: &Layout) -> anyhow::Result<()> {
    let config = &layout.opts.config_path;
    let client = Client::new(&CliConfig::load(config)?)?;
    drop(client);
    let rootfs = layout.opts.run_dir.join("demo-rootfs");
    if !rootfs.exists() {
        busybox_rootfs(&rootfs)?;
    }
    let show = |cmd: &str, out: &str| {
        println!("\n$ herd {cmd}");
        print!("{out}");
    };
    let rootfs_str = rootfs.to_string_lossy().to_string();
    show(&format!("image import busybox {rootfs_str}"), &herd(&["image", "import", "busybox", &rootfs_str], config)?);
    // A counter left from an earlier run starts over if it has exited (a checkpointed one is
    // the user's to restore); a running one is left alone.
    let all: Vec<herd_proto::api::ContainerInfo> =
        serde_json::from_str(&herd(&["ps", "-a", "--json"], config)?).context("reading `herd ps -a --json`")?;
    let counter = all.iter().find(|c| c.name == "counter");
    let exited = counter.is_some_and(|c| c.state == herd_proto::state::ContainerState::Exited);
    if exited {
        herd(&["rm", "counter"], config)?;
    }
    if counter.is_none() || exited {
        let cmd = "i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done";
        show(
            &format!("run --name counter --memory 64m busybox -- sh -c '{cmd}'"),
            &herd(&["run", "--name", "counter", "--memory", "64m", "busybox", "--", "sh", "-c", cmd], config)?,
        );
    }
    show("nodes", &herd(&["nodes"], config)?);
    show("ps", &herd(&["ps"], config)?);
    let cfg = if layout.opts.config_path == herd_cli::config::default_path() {
        String::new()
    } else {
        format!("HERD_CONFIG={} ", layout.opts.config_path.display())
    };
    println!(
        "\nThe cluster is yours. In another shell, try:\n\
         \x20 {cfg}herd logs -f counter          # the counter's output\n\
         \x20 {cfg}herd inspect counter          # node, IP address, limits, times\n\
         \x20 {cfg}herd checkpoint counter       # save it with CRIU (it stops)\n\
         \x20 {cfg}herd restore counter          # ... and it counts on from where it was\n\
         \x20 {cfg}herd migrate counter          # live, to another node: it keeps counting\n\
         \x20 {cfg}herd stats                    # CPU, memory, network of each container\n\
         \x20 {cfg}herd run --name web busybox -- httpd -f -p 80\n\
         \x20 {cfg}herd ps -a --json             # for scripts\n\
         \x20 herd down                     # stop everything (herd down --purge also deletes the data)"
    );
    Ok(())
}
