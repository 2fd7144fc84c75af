//! What confines a container's processes beyond their capabilities: a seccomp filter, the
//! `no_new_privs` bit, and a read-only root file system (`herd run --security-opt ...`,
//! `--read-only`), as Docker takes them.
//!
//! Herd confines by default: the node's default seccomp profile (an allow list in the spirit
//! of Docker's, `herd-node/src/seccomp.rs`) and `no_new_privs`. `--security-opt
//! seccomp=unconfined` and `--security-opt no-new-privileges=false` lift them. A profile of
//! one's own is the OCI runtime spec's `linux.seccomp` object, which is also the format of
//! Docker's profiles where they use no conditions: `herd` reads the file and sends its
//! content, as `docker` does, and it is checked here, so that a malformed profile is refused
//! before anything runs.

use serde::{Deserialize, Serialize};

use crate::names::NameError;

/// How a container's processes are confined. The default is Herd's: its seccomp profile and
/// `no_new_privs`, a writable root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confinement {
    #[serde(default, skip_serializing_if = "Seccomp::is_default")]
    pub seccomp: Seccomp,
    /// `--security-opt no-new-privileges=false`: its processes may gain privileges through
    /// set-user-ID programs and file capabilities (they may not by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_privileges: bool,
    /// `--read-only`: the root file system is mounted read-only (volumes stay as mounted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

impl Confinement {
    pub fn is_default(&self) -> bool {
        *self == Confinement::default()
    }

    /// The options as `docker inspect` lists `SecurityOpt`, plus `read-only` when set.
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![match &self.seccomp {
            Seccomp::Default => "seccomp=default".to_string(),
            Seccomp::Unconfined => "seccomp=unconfined".to_string(),
            Seccomp::Profile(p) => format!("seccomp=profile ({} rules)", p.syscalls.len()),
        }];
        out.push(format!("no-new-privileges={}", !self.new_privileges));
        if self.read_only {
            out.push("read-only".into());
        }
        out
    }
}

/// The seccomp filter of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// The node's default profile, for the capabilities the container holds.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile of the user's.
    Profile(SeccompProfile),
}

impl Seccomp {
    pub fn is_default(&self) -> bool {
        *self == Seccomp::Default
    }
}

/// A seccomp profile: the OCI runtime spec's `linux.seccomp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompProfile {
    pub default_action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    /// `SCMP_ARCH_X86_64`...; none: the node's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub architectures: Vec<String>,
    /// `SECCOMP_FILTER_FLAG_LOG`...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<SeccompRule>,
}

/// What a profile does with the syscalls it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompRule {
    pub names: Vec<String>,
    pub action: SeccompAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    /// Conditions on the arguments, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: SeccompOp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeccompAction {
    ScmpActKill,
    ScmpActKillThread,
    ScmpActKillProcess,
    ScmpActTrap,
    ScmpActErrno,
    ScmpActTrace,
    ScmpActLog,
    ScmpActAllow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeccompOp {
    ScmpCmpNe,
    ScmpCmpLt,
    ScmpCmpLe,
    ScmpCmpEq,
    ScmpCmpGe,
    ScmpCmpGt,
    ScmpCmpMaskedEq,
}

/// Docker's profile format beside the OCI one: `archMap` instead of `architectures`, and
/// rules that may hold only for some capabilities or kernels (`includes`, `excludes`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProfileFile {
    #[serde(flatten)]
    profile: SeccompProfile,
    #[serde(default)]
    arch_map: Vec<ArchMapEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMapEntry {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

/// The largest profile taken (Docker's own is some 20 KiB).
pub const MAX_PROFILE: usize = 1 << 20;

/// Parses a seccomp profile given as JSON (`--security-opt seccomp=FILE`, read by the CLI).
pub fn parse_seccomp_profile(json: &str) -> Result<SeccompProfile, NameError> {
    let bad = |why: String| NameError(format!("--security-opt seccomp: the profile {why}"));
    if json.len() > MAX_PROFILE {
        return Err(bad(format!("has {} bytes; at most {MAX_PROFILE} are taken", json.len())));
    }
    let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(format!("is not JSON: {e}")))?;
    // A rule with conditions that were dropped would hold for everyone: refuse them.
    for rule in value.get("syscalls").and_then(|s| s.as_array()).into_iter().flatten() {
        for key in ["includes", "excludes"] {
            if rule.get(key).is_some_and(|c| c.as_object().is_none_or(|o| !o.is_empty())) {
                let names = rule.get("names").map(|n| n.to_string()).unwrap_or_default();
                return Err(bad(format!(
                    "has a rule with {key:?} conditions ({names}), which Herd does not evaluate: \
                     write the rules this container needs without conditions"
                )));
            }
        }
        if rule.get("name").is_some() && rule.get("names").is_none() {
            return Err(bad("has a rule with \"name\": list the syscalls in \"names\"".into()));
        }
    }
    let file: ProfileFile = serde_json::from_value(value).map_err(|e| bad(format!("is not a seccomp profile: {e}")))?;
    let mut profile = file.profile;
    for entry in file.arch_map {
        profile.architectures.push(entry.architecture);
        profile.architectures.extend(entry.sub_architectures);
    }
    profile.architectures.dedup();
    for arch in &profile.architectures {
        if !arch.starts_with("SCMP_ARCH_") {
            return Err(bad(format!("names architecture {arch:?}; they are named SCMP_ARCH_X86_64 and the like")));
        }
    }
    for flag in &profile.flags {
        if !flag.starts_with("SECCOMP_FILTER_FLAG_") {
            return Err(bad(format!("has flag {flag:?}; they are named SECCOMP_FILTER_FLAG_LOG and the like")));
        }
    }
    for rule in &profile.syscalls {
        if rule.names.is_empty()
            || rule.names.iter().any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        {
            return Err(bad(format!("has a rule whose syscall names are empty or not names: {:?}", rule.names)));
        }
        if rule.args.iter().any(|a| a.index > 5) {
            return Err(bad(format!("has a condition on an argument past the sixth ({:?})", rule.names)));
        }
    }
    Ok(profile)
}

/// Parses `--security-opt` options and `--read-only` as Docker takes them:
/// `seccomp=unconfined`, `seccomp=default`, `seccomp=<profile JSON>` (what the CLI made of
/// `seccomp=FILE`), `no-new-privileges[=true|false]` (also with `:`).
pub fn parse_security_opts(opts: &[String], read_only: bool) -> Result<Confinement, NameError> {
    let mut c = Confinement { read_only, ..Default::default() };
    for opt in opts {
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => c.seccomp = Seccomp::Unconfined,
            ("seccomp", Some("default" | "builtin")) => c.seccomp = Seccomp::Default,
            ("seccomp", Some(json)) if json.trim_start().starts_with('{') => {
                c.seccomp = Seccomp::Profile(parse_seccomp_profile(json)?)
            }
            ("seccomp", _) => {
                return Err(NameError(format!(
                    "--security-opt {opt}: give seccomp=unconfined, seccomp=default or seccomp=FILE (a profile in JSON)"
                )));
            }
            ("no-new-privileges", None | Some("true")) => c.new_privileges = false,
            ("no-new-privileges", Some("false")) => c.new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                return Err(NameError(format!("--security-opt no-new-privileges={v}: give true or false")));
            }
            ("apparmor" | "label", _) => {
                return Err(NameError(format!(
                    "--security-opt {opt}: Herd's nodes confine with seccomp, capabilities and no_new_privs, not with {key}"
                )));
            }
            _ => {
                return Err(NameError(format!(
                    "--security-opt {opt}: unknown option (known: seccomp=unconfined|default|FILE, no-new-privileges[=true|false])"
                )));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> Result<Confinement, NameError> {
        parse_security_opts(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false)
    }

    #[test]
    fn the_default_confines() {
        let c = opts(&[]).unwrap();
        assert_eq!(c, Confinement::default());
        assert_eq!(c.describe(), ["seccomp=default", "no-new-privileges=true"]);
        // What older records hold (no field at all) is the default too.
        let old: Confinement = serde_json::from_str("{}").unwrap();
        assert!(old.is_default());
        assert_eq!(serde_json::to_string(&c).unwrap(), "{}");
    }

    #[test]
    fn options_parse_as_docker_takes_them() {
        let c = opts(&["seccomp=unconfined", "no-new-privileges=false"]).unwrap();
        assert_eq!(c.seccomp, Seccomp::Unconfined);
        assert!(c.new_privileges);
        assert!(!opts(&["no-new-privileges"]).unwrap().new_privileges);
        assert!(!opts(&["no-new-privileges:true"]).unwrap().new_privileges);
        assert!(parse_security_opts(&[], true).unwrap().read_only);
        let round: Confinement = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn bad_options_are_refused_with_what_is_known() {
        for (opt, want) in [
            ("seccomp=/no/such/file", "seccomp=FILE"),
            ("seccomp", "seccomp=FILE"),
            ("no-new-privileges=maybe", "give true or false"),
            ("apparmor=unconfined", "not with apparmor"),
            ("privileged", "unknown option"),
        ] {
            let err = opts(&[opt]).unwrap_err().0;
            assert!(err.contains(want), "{opt}: {err}");
        }
    }

    #[test]
    fn a_profile_in_oci_or_docker_format_is_taken() {
        let json = r#"{
            "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "ignored"},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "op": "SCMP_CMP_MASKED_EQ"}]},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "includes": {}}
            ]
        }"#;
        let opt = format!("seccomp={json}");
        let c = opts(&[&opt]).unwrap();
        let Seccomp::Profile(p) = &c.seccomp else { panic!("{c:?}") };
        assert_eq!(p.default_action, SeccompAction::ScmpActErrno);
        assert_eq!(p.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]);
        assert_eq!(p.syscalls.len(), 3);
        assert_eq!(p.syscalls[1].args[0].op, SeccompOp::ScmpCmpMaskedEq);
        assert_eq!(p.syscalls[2].errno_ret, Some(13));
        let round: Confinement = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(round, c);
    }

    #[test]
    fn malformed_profiles_are_refused_saying_why() {
        for (json, want) in [
            ("{", "is not JSON"),
            (r#"{"syscalls": []}"#, "is not a seccomp profile"),
            (r#"{"defaultAction": "SCMP_ACT_MAYBE"}"#, "is not a seccomp profile"),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
                "\"includes\" conditions",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read", "action": "SCMP_ACT_ALLOW"}]}"#,
                "\"names\"",
            ),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["re ad"], "action": "SCMP_ACT_ALLOW"}]}"#,
                "not names",
            ),
            (r#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x86_64"]}"#, "SCMP_ARCH_X86_64"),
            (
                r#"{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}"#,
                "past the sixth",
            ),
        ] {
            let err = parse_seccomp_profile(json).unwrap_err().0;
            assert!(err.contains(want), "{json}: {err}");
        }
        let big = format!("{{\"defaultAction\": \"SCMP_ACT_ERRNO\", \"x\": \"{}\"}}", "a".repeat(MAX_PROFILE));
        assert!(parse_seccomp_profile(&big).unwrap_err().0.contains("at most"));
    }
}
