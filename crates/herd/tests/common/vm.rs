//! A virtual machine for tests that need a kernel feature this machine's kernel lacks (dirty
//! memory tracking, for pre-copy: see `../shared/PLATFORM.md`).
//!
//! QEMU boots the Debian kernel that `scripts/setup.sh` installs in [`KERNEL_DIR`], in
//! software emulation: this machine's KVM runs only guests built for it. The guest's root file
//! system is this machine's, shared read-only over virtio-9p under a tmpfs overlay, so the guest
//! runs the same binaries (the test itself, `herd`, runc, CRIU, nats-server) and nothing it
//! writes reaches the host. It runs one command and powers off; [`run`] returns the command's
//! exit code and everything the guest printed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where `scripts/setup.sh` puts the guest kernel: `vmlinuz`, `release` (its version) and
/// `lib/modules/RELEASE` with `modules.dep`.
pub const KERNEL_DIR: &str = "/usr/local/share/herd/vm-kernel";
/// The line the guest prints last, followed by the command's exit code.
const EXIT_MARK: &str = "herd-vm: exit ";
/// Modules the first stage loads (with what they need) to mount the shared root.
const EARLY_MODULES: [&str; 4] = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// What a guest's command left behind.
pub struct Outcome {
    pub exit_code: i32,
    /// The guest's console: the kernel's messages and the command's output.
    pub console: String,
}

/// Boots a guest, runs `command` there as root in directory `cwd` with `env`, and returns
/// when it powered off. Panics with a clear message when the machine lacks QEMU or the
/// kernel, and with the console when the guest does not finish within `timeout`.
pub fn run(command: &[String], cwd: &Path, env: &[(&str, &str)], timeout: Duration) -> Outcome {
    let kernel = Path::new(KERNEL_DIR);
    let release = std::fs::read_to_string(kernel.join("release"))
        .unwrap_or_else(|e| panic!("{KERNEL_DIR}/release: {e}: scripts/setup.sh installs the kernel this test boots"))
        .trim()
        .to_string();
    let qemu = "qemu-system-x86_64";
    assert!(
        Command::new(qemu).arg("--version").output().is_ok_and(|o| o.status.success()),
        "{qemu} is missing: apt-get install qemu-system-x86 (scripts/setup.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let initramfs = build_initramfs(dir.path(), kernel, &release, &stage_two(command, cwd, env));

    let mut qemu = Command::new(qemu)
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2", "-m", "4096"])
        .args(["-nodefaults", "-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .args(["-fsdev", "local,id=root,path=/,security_model=passthrough,readonly=on,multidevs=remap"])
        .args(["-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting qemu-system-x86_64");
    let guard = KillOnDrop(&mut qemu);
    let (tx, lines) = mpsc::channel();
    let stdout = guard.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut console = String::new();
    let mut exit_code = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                eprintln!("vm| {line}");
                if let Some(code) = line.strip_prefix(EXIT_MARK) {
                    exit_code = code.trim().parse().ok();
                }
                console.push_str(&line);
                console.push('\n');
            }
            // The guest powered off (its console closed).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the guest did not finish within {timeout:?}; its console:\n{console}")
            }
        }
    }
    drop(guard);
    let exit_code =
        exit_code.unwrap_or_else(|| panic!("the guest stopped before its command ended; its console:\n{console}"));
    Outcome { exit_code, console }
}

/// Kills QEMU if the test fails while the guest runs.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Directories the guest mounts a tmpfs on: where Herd keeps its state and the overlay roots
/// of containers, whose upper directories cannot be on the guest's own overlay root.
const TMPFS_DIRS: [&str; 4] = ["/run", "/tmp", "/var/lib/herd", "/var/lib/herd-test"];

/// The script the guest runs on its shared root: a root-like machine (proc, sysfs, devices,
/// cgroup v2, tmpfs where Herd keeps data), then the command, then its exit code and power off.
fn stage_two(command: &[String], cwd: &Path, env: &[(&str, &str)]) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let exports: String = env.iter().map(|(k, v)| format!("export {k}={}\n", quote(v))).collect();
    let argv: Vec<String> = command.iter().map(|a| quote(a)).collect();
    // A tmpfs must not hide the checkout the command runs from (it may be under /tmp).
    let hides = |dir: &str| cwd.starts_with(dir) || command.first().is_some_and(|exe| Path::new(exe).starts_with(dir));
    let tmpfs: Vec<&str> = TMPFS_DIRS.into_iter().filter(|d| !hides(d)).collect();
    format!(
        r#"export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
for d in {tmpfs}; do mkdir -p $d && mount -t tmpfs tmpfs $d; done
mkdir -p /run/criu
ip link set lo up
echo /usr/sbin/modprobe > /proc/sys/kernel/modprobe
sysctl -qw fs.pipe-max-size=4194304
{exports}cd {cwd}
{argv}
echo "{EXIT_MARK}$?"
poweroff -f
"#,
        cwd = quote(&cwd.display().to_string()),
        argv = argv.join(" "),
        tmpfs = tmpfs.join(" "),
    )
}

/// The guest's first stage: busybox, the modules that mount the shared root, and an init
/// that mounts it under a tmpfs overlay and hands over to `stage_two` there.
fn build_initramfs(dir: &Path, kernel: &Path, release: &str, stage_two: &str) -> PathBuf {
    let root = dir.join("initramfs");
    for d in ["bin", "modules", "proc", "sys", "dev", "lower", "rw", "newroot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("/bin/busybox (busybox-static)");
    // The early modules and what they need, in load order (kmod's modprobe resolves it).
    let mut order = Vec::new();
    for module in EARLY_MODULES {
        let out = Command::new("modprobe")
            .arg("-d")
            .arg(kernel)
            .args(["-S", release, "--show-depends", module])
            .output()
            .expect("modprobe (apt-get install kmod)");
        assert!(out.status.success(), "modprobe --show-depends {module}: {}", String::from_utf8_lossy(&out.stderr));
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(path) = line.strip_prefix("insmod ").and_then(|l| l.split_whitespace().next()) else {
                continue;
            };
            let name = Path::new(path).file_name().unwrap().to_string_lossy().to_string();
            if !order.contains(&name) {
                std::fs::copy(path, root.join("modules").join(&name)).unwrap();
                order.push(name);
            }
        }
    }
    let modules = kernel.join("lib/modules");
    let init = format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
for m in {order}; do insmod /modules/$m || echo "herd-vm: insmod $m failed"; done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=1048576,cache=loose hostroot /lower
mount -t tmpfs -o size=75% tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot
mkdir -p /newroot/usr/lib/modules
mount --bind /lower{modules} /newroot/usr/lib/modules
cat > /newroot/herd-vm-stage2.sh <<'HERD_VM_STAGE_TWO'
{stage_two}HERD_VM_STAGE_TWO
umount /proc
exec switch_root /newroot /bin/sh /herd-vm-stage2.sh
"#,
        order = order.join(" "),
        modules = modules.display(),
    );
    let init_path = root.join("init");
    std::fs::write(&init_path, init).unwrap();
    std::fs::set_permissions(&init_path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cpio = dir.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet > \"$0\"")
        .arg(&cpio)
        .current_dir(&root)
        .status()
        .expect("cpio (apt-get install cpio)");
    assert!(status.success(), "packing the initramfs with cpio");
    cpio
}
