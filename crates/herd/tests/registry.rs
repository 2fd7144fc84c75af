//! `herd image pull` against a real registry (Debian's docker-registry) on loopback, with token
//! authentication: a token service run by the test signs ES256 JWTs with a key whose
//! certificate is the registry's root bundle, and the JWT carries it in its `x5c` header.
//! The test builds its images (busybox in a gzip layer), pushes them with the distribution
//! API's upload (POST then PUT), pulls them into a cluster and runs them; it checks that a
//! layer the cluster has is not transferred again (the registry's access log), and that bad
//! input gives a clear error and no image.

mod common;
#[path = "../../herd-image/tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use common::{Cluster, wait_for};
use herd_proto::pull::PullReport;
use herd_proto::state::ImageRecord;
use herd_registry::{Credentials, Reference, RegistryClient};
use serde_json::json;
use support::{gzip, json_bytes, sha256};

const T: Duration = Duration::from_secs(30);
const USER: &str = "herd-test";
const PASSWORD: &str = "s3cret-pw";
const SERVICE: &str = "herd-test-registry";
const ISSUER: &str = "herd-test-issuer";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

// --- the token service ----------------------------------------------------------------------

/// The token service's key (PKCS#8), certificate (DER) and the requests it saw.
type TokenState = (Arc<Vec<u8>>, Arc<Vec<u8>>, Arc<Mutex<Vec<(String, bool)>>>);

/// A token service on loopback: it checks Basic credentials and grants what is asked, in an
/// ES256 JWT whose `x5c` header carries the certificate the registry trusts.
struct TokenService {
    realm: String,
    /// Scopes asked for, with whether credentials came along.
    requests: Arc<Mutex<Vec<(String, bool)>>>,
    _runtime: tokio::runtime::Runtime,
}

impl TokenService {
    fn start(key_pkcs8: Vec<u8>, cert_der: Vec<u8>) -> TokenService {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let realm = format!("http://{}/token", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = (Arc::new(key_pkcs8), Arc::new(cert_der), requests.clone());
        runtime.spawn(async move {
            let app = axum::Router::new().route(
                "/token",
                axum::routing::get(
                    |axum::extract::State((key, cert, requests)): axum::extract::State<TokenState>,
                     axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
                     headers: axum::http::HeaderMap| async move {
                        let expected = format!(
                            "Basic {}",
                            base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
                        );
                        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
                        let scope = q.get("scope").cloned().unwrap_or_default();
                        requests.lock().unwrap().push((scope.clone(), given.is_some()));
                        if given != Some(expected.as_str()) {
                            return (
                                axum::http::StatusCode::UNAUTHORIZED,
                                "{\"details\":\"bad credentials\"}".to_string(),
                            );
                        }
                        (axum::http::StatusCode::OK, issue_token(&key, &cert, &scope))
                    },
                ),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app.with_state(state)).await.unwrap();
        });
        TokenService { realm, requests, _runtime: runtime }
    }
}

/// `{"token": JWT}` granting `scope` (`repository:NAME:ACTIONS`).
fn issue_token(key_pkcs8: &[u8], cert_der: &[u8], scope: &str) -> String {
    let mut access = Vec::new();
    let parts: Vec<&str> = scope.split(':').collect();
    if parts.len() == 3 {
        access.push(json!({"type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>()}));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let header = json!({
        "typ": "JWT",
        "alg": "ES256",
        "x5c": [base64::engine::general_purpose::STANDARD.encode(cert_der)],
    });
    let claims = json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let signing_input = format!("{}.{}", b64url(&json_bytes(&header)), b64url(&json_bytes(&claims)));
    let rng = ring::rand::SystemRandom::new();
    let key =
        ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, key_pkcs8, &rng)
            .unwrap();
    let signature = key.sign(&rng, signing_input.as_bytes()).unwrap();
    let jwt = format!("{signing_input}.{}", b64url(signature.as_ref()));
    json!({"token": jwt, "expires_in": 300}).to_string()
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

// --- the registry -----------------------------------------------------------------------------

/// A docker-registry process on a loopback port with its own config and storage; killed and
/// reaped on drop.
struct TestRegistry {
    host: String,
    storage: PathBuf,
    log: PathBuf,
    child: Child,
}

impl TestRegistry {
    fn start(dir: &Path, realm: &str, root_cert: &Path) -> TestRegistry {
        let docker_registry = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("docker-registry is missing: apt-get install docker-registry (scripts/setup.sh does)");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let storage = dir.join("registry-storage");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                storage.display(),
                root_cert.display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(docker_registry)
            .arg("serve")
            .arg(&config)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("starting docker-registry");
        let registry = TestRegistry { host: format!("127.0.0.1:{port}"), storage, log, child };
        wait_for("the registry to listen", T, || std::net::TcpStream::connect(("127.0.0.1", port)).ok());
        registry
    }

    /// How many times a blob was served (status 200), in any repository.
    fn blob_downloads(&self, digest: &str) -> usize {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let needle = format!("/blobs/{digest} HTTP/1.1\" 200");
        log.lines().filter(|l| l.contains("\"GET /v2/") && l.contains(&needle)).count()
    }

    /// The blob's data file in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.storage.join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- images and pushing -----------------------------------------------------------------------

/// An image as pushed: its blobs and manifest.
struct Image {
    config: Vec<u8>,
    /// Compressed layer blobs, bottom first.
    layers: Vec<Vec<u8>>,
    manifest: Vec<u8>,
}

impl Image {
    /// A Docker schema 2 image of gzip layers (`tars` uncompressed) for `arch`.
    fn new(arch: &str, tars: &[&[u8]], cmd: &[&str]) -> Image {
        let layers: Vec<Vec<u8>> = tars.iter().map(|t| gzip(t)).collect();
        let diff_ids: Vec<String> = tars.iter().map(|t| sha256(t)).collect();
        let config = json_bytes(&json!({
            "architecture": arch, "os": "linux",
            "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }));
        let descriptors: Vec<_> =
            layers.iter().map(|l| json!({"mediaType": DOCKER_LAYER, "digest": sha256(l), "size": l.len()})).collect();
        let manifest = json_bytes(&json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": sha256(&config), "size": config.len()},
            "layers": descriptors
        }));
        Image { config, layers, manifest }
    }

    fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

/// Pushes with the distribution API, authenticated like a pull (the client answers the
/// registry's challenge with a `pull,push` token).
struct Pusher {
    runtime: tokio::runtime::Runtime,
    host: String,
}

impl Pusher {
    fn client(&self, repo: &str) -> RegistryClient {
        let reference = Reference::parse(&format!("{}/{repo}:x", self.host)).unwrap();
        let credentials = Credentials { username: USER.into(), password: PASSWORD.into() };
        RegistryClient::new(&reference, Some(credentials), false).unwrap().with_actions("pull,push")
    }

    /// Monolithic upload: `POST /v2/REPO/blobs/uploads/`, then `PUT <location>&digest=D` with the bytes.
    fn blob(&self, repo: &str, data: &[u8]) {
        let client = self.client(repo);
        self.runtime.block_on(async {
            let resp = client
                .send(
                    reqwest::Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/"),
                    Default::default(),
                    Some(bytes::Bytes::new()),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 202, "starting an upload to {repo}: {:?}", resp.text().await);
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            let sep = if location.contains('?') { '&' } else { '?' };
            let url = format!("{location}{sep}digest={}", sha256(data));
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("content-type", "application/octet-stream".parse().unwrap());
            let resp = client
                .send(reqwest::Method::PUT, &url, headers, Some(bytes::Bytes::copy_from_slice(data)))
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "uploading a blob to {repo}: {:?}", resp.text().await);
        });
    }

    fn manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) {
        let client = self.client(repo);
        self.runtime.block_on(async {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert("content-type", media_type.parse().unwrap());
            let resp = client
                .send(
                    reqwest::Method::PUT,
                    &format!("/v2/{repo}/manifests/{reference}"),
                    headers,
                    Some(bytes::Bytes::copy_from_slice(data)),
                )
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201, "pushing manifest {repo}:{reference}: {:?}", resp.text().await);
        });
    }

    fn image(&self, repo: &str, tag: &str, image: &Image) {
        self.blob(repo, &image.config);
        for layer in &image.layers {
            self.blob(repo, layer);
        }
        self.manifest(repo, tag, DOCKER_MANIFEST, &image.manifest);
    }
}

// --- the test ---------------------------------------------------------------------------------

/// `herd image pull ARGS --user herd-test --password-stdin --json`, the password on stdin.
fn pull(cluster: &Cluster, args: &[&str], password: Option<&str>) -> std::process::Output {
    let mut a = vec!["image", "pull"];
    a.extend_from_slice(args);
    if password.is_some() {
        a.extend_from_slice(&["--user", USER, "--password-stdin"]);
    }
    a.push("--json");
    let mut cmd = cluster.command(&a);
    // No Docker config of the person running the tests.
    cmd.env("DOCKER_CONFIG", cluster.dir.path()).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running herd image pull");
    if let Some(p) = password {
        child.stdin.take().unwrap().write_all(format!("{p}\n").as_bytes()).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn pulled(cluster: &Cluster, args: &[&str]) -> PullReport {
    let out = pull(cluster, args, Some(PASSWORD));
    assert!(
        out.status.success(),
        "herd image pull {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON report ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn pull_fails(cluster: &Cluster, args: &[&str], password: Option<&str>) -> String {
    let out = pull(cluster, args, password);
    assert!(
        !out.status.success(),
        "herd image pull {} should have failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn image_names(cluster: &Cluster) -> Vec<String> {
    let images: Vec<ImageRecord> = cluster.json(&["image", "ls"]);
    images.into_iter().map(|i| i.name).collect()
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn pull_from_a_token_authenticated_registry_runs_and_fetches_each_layer_once() {
    let cluster = Cluster::up(27, 1);
    let dir = cluster.dir.path().to_path_buf();

    // The token service's key and certificate; the registry trusts the certificate.
    // The key comes from ring (which signs with it); OpenSSL makes the certificate.
    let key = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    std::fs::write(dir.join("token-key.der"), key.as_ref()).unwrap();
    openssl(&dir, &["pkey", "-inform", "DER", "-in", "token-key.der", "-out", "token-key.pem"]);
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "token-key.pem",
            "-subj",
            "/CN=herd-test-token",
            "-days",
            "1",
            "-out",
            "token-cert.pem",
        ],
    );
    openssl(&dir, &["x509", "-in", "token-cert.pem", "-outform", "DER", "-out", "token-cert.der"]);
    let tokens = TokenService::start(
        std::fs::read(dir.join("token-key.der")).unwrap(),
        std::fs::read(dir.join("token-cert.der")).unwrap(),
    );
    let registry = TestRegistry::start(&dir, &tokens.realm, &dir.join("token-cert.pem"));
    let host = registry.host.clone();
    let pusher = Pusher {
        runtime: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
        host: host.clone(),
    };

    // Images: busybox; busybox plus a layer with a greeting (sharing the base layer); an index
    // with only an arm64 image; an image whose layer is corrupted in the registry's storage.
    let rootfs = dir.join("busybox-rootfs");
    herd_up::busybox_rootfs(&rootfs).unwrap();
    let mut base_tar = Vec::new();
    herd_image::pack_dir(&rootfs, &mut base_tar).unwrap();
    let arch = herd_image::host_architecture();
    let busybox = Image::new(arch, &[&base_tar], &["sh", "-c", "echo hello from the registry"]);
    let greeting_tar =
        support::tar(&[support::Item::Dir("etc"), support::Item::File("etc/greeting", b"second layer here\n", 0o644)]);
    let greeter = Image::new(arch, &[&base_tar, &greeting_tar], &["cat", "/etc/greeting"]);
    let other_arch = support::foreign_arch(&[arch]);
    let foreign = Image::new(other_arch, &[&greeting_tar], &["true"]);
    let doomed_tar = support::tar(&[support::Item::Dir("etc"), support::Item::File("etc/doomed", &[7u8; 4096], 0o644)]);
    let doomed = Image::new(arch, &[&doomed_tar], &["true"]);

    pusher.image("herd/busybox", "v1", &busybox);
    pusher.image("herd/greeter", "v1", &greeter);
    pusher.image("herd/foreign", "arch-only", &foreign);
    pusher.manifest("herd/foreign", &foreign.digest(), DOCKER_MANIFEST, &foreign.manifest);
    let index = json_bytes(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": foreign.digest(), "size": foreign.manifest.len(),
                       "platform": {"architecture": other_arch, "os": "linux"}}]
    }));
    pusher.manifest("herd/foreign", "v1", OCI_INDEX, &index);
    pusher.image("herd/doomed", "v1", &doomed);
    let base_digest = sha256(&busybox.layers[0]);
    assert!(
        tokens
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|(scope, creds)| scope == "repository:herd/busybox:pull,push" && *creds)
    );

    // Pull, run.
    let reference = format!("{host}/herd/busybox:v1");
    let report = pulled(&cluster, &[&reference]);
    assert_eq!((report.layers_fetched, report.layers_present), (1, 0), "{report:?}");
    assert_eq!(report.bytes_fetched, busybox.layers[0].len() as u64);
    assert_eq!(report.image.name, format!("{host}/herd/busybox:v1"));
    assert_eq!(report.image.source, "registry");
    let origin = report.image.registry.clone().expect("the image's registry origin");
    assert_eq!(origin.reference, reference);
    assert_eq!(origin.manifest_digest, busybox.digest());
    assert_eq!(report.image.id, sha256(&busybox.config));
    assert!(image_names(&cluster).contains(&report.image.name));
    assert!(cluster.ok(&["image", "ls"]).contains("registry"));
    assert_eq!(registry.blob_downloads(&base_digest), 1);
    assert!(
        tokens.requests.lock().unwrap().iter().any(|(scope, creds)| scope == "repository:herd/busybox:pull" && *creds),
        "the pull asked the token service for a pull token with the credentials"
    );
    cluster.ok(&["run", "--name", "pulled", &report.image.name]);
    cluster.wait_log("pulled", "hello from the registry", T);

    // Again, and by digest: nothing transferred.
    let again = pulled(&cluster, &[&reference]);
    assert_eq!((again.layers_fetched, again.layers_present, again.bytes_fetched), (0, 1, 0), "{again:?}");
    let by_digest = format!("{host}/herd/busybox@{}", busybox.digest());
    let pinned = pulled(&cluster, &[&by_digest, "--name", "pinned-busybox"]);
    assert_eq!((pinned.layers_fetched, pinned.image.name.as_str()), (0, "pinned-busybox:latest"));
    assert_eq!(pinned.image.registry.unwrap().manifest_digest, busybox.digest());
    assert_eq!(registry.blob_downloads(&base_digest), 1, "a layer the cluster has was downloaded again");

    // An image sharing the base layer: only its own layer comes.
    let greeter_ref = format!("{host}/herd/greeter:v1");
    let report = pulled(&cluster, &[&greeter_ref, "--name", "greeter"]);
    assert_eq!((report.layers_fetched, report.layers_present), (1, 1), "{report:?}");
    assert_eq!(report.bytes_fetched, greeter.layers[1].len() as u64);
    assert_eq!(registry.blob_downloads(&base_digest), 1, "the shared base layer was downloaded again");
    assert_eq!(registry.blob_downloads(&sha256(&greeter.layers[1])), 1);
    cluster.ok(&["run", "--name", "greeted", "greeter"]);
    cluster.wait_log("greeted", "second layer here", T);

    // Bad input: a clear error each, and no image.
    let before = image_names(&cluster);
    let err = pull_fails(&cluster, &[&reference, "--name", "nocreds"], None);
    assert!(err.contains("refused access to herd/busybox") && err.contains("401"), "{err}");
    let err = pull_fails(&cluster, &["127.0.0.1:1/herd/busybox:v1"], Some(PASSWORD));
    assert!(err.contains("cannot reach registry 127.0.0.1:1"), "{err}");
    let err = pull_fails(&cluster, &[&format!("{host}/herd/busybox:nope")], Some(PASSWORD));
    assert!(err.contains("tag \"nope\" not found in herd/busybox"), "{err}");
    let err = pull_fails(&cluster, &[&format!("{host}/herd/foreign:v1")], Some(PASSWORD));
    assert!(err.contains(&format!("has no image for linux/{arch}; it has: linux/{other_arch}")), "{err}");
    let err = pull_fails(&cluster, &[&format!("{host}/herd/foreign:arch-only")], Some(PASSWORD));
    assert!(err.contains(&format!("has no image for linux/{arch}; it has: linux/{other_arch}")), "{err}");
    let err = pull_fails(&cluster, &["Not/A:Valid:Ref"], Some(PASSWORD));
    assert!(err.contains("invalid image reference"), "{err}");
    // Same length, other bytes: the registry serves them as the blob.
    let doomed_digest = sha256(&doomed.layers[0]);
    let blob = registry.blob_file(&doomed_digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    for b in bytes.iter_mut().skip(20) {
        *b ^= 0x5a;
    }
    std::fs::write(&blob, &bytes).unwrap();
    let err = pull_fails(&cluster, &[&format!("{host}/herd/doomed:v1")], Some(PASSWORD));
    assert!(err.contains(&format!("digest mismatch: expected {doomed_digest}")), "{err}");
    assert_eq!(image_names(&cluster), before, "a failed pull left an image behind");
}
