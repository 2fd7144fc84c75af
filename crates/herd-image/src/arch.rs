//! The host's CPU architecture in the Go/OCI naming that image platforms use.

/// Host architecture in Go/OCI naming (`x86_64` -> `amd64`, `aarch64` -> `arm64`, ...).
pub fn host_architecture() -> &'static str {
    go_arch(std::env::consts::ARCH, cfg!(target_endian = "little"))
}

/// Maps a Rust `target_arch` name to the Go `GOARCH` name.
fn go_arch(rust_arch: &'static str, little_endian: bool) -> &'static str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if little_endian => "ppc64le",
        "powerpc64" => "ppc64",
        "powerpc" => "ppc",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        "mips" if little_endian => "mipsle",
        "mips64" if little_endian => "mips64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_rust_names_to_go_names() {
        assert_eq!(go_arch("x86_64", true), "amd64");
        assert_eq!(go_arch("aarch64", true), "arm64");
        assert_eq!(go_arch("powerpc64", true), "ppc64le");
        assert_eq!(go_arch("powerpc64", false), "ppc64");
        assert_eq!(go_arch("riscv64", true), "riscv64");
        assert_ne!(host_architecture(), "");
    }
}
