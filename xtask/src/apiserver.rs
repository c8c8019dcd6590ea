//! `cargo xtask apiserver` (alias `kube-binaries`): a real kube-apiserver, kubelet,
//! kube-controller-manager and kube-scheduler for the Kubernetes-backed tests, built once from
//! Debian's sources and cached, and Debian's `kubectl`.
//!
//! Debian ships none of these four binaries, but its `kubernetes` source package (1.20.2, every
//! Go dependency vendored) builds them offline, in one `make WHAT="…"`, so the packages they
//! share compile once. It must be built with Go 1.15 (`golang-1.15-go`, from bullseye): with
//! Go ≥ 1.18 the vendored `reflect2` corrupts maps and the apiserver dies under load. The build
//! takes 20 to 30 minutes on 2 cores and lands in `~/.cache/plexus/<name>-1.20.2`; later runs
//! reuse them (a cache missing any of the four builds all of them again). The source tree and
//! Go's build cache are removed once the binaries are cached.
//!
//! `kubectl` is Debian's `kubernetes-client` (the same 1.20.2), unpacked into
//! `~/.cache/plexus/kubectl-1.20.2` rather than installed: on some machines `/usr/bin/kubectl`
//! already belongs to another package, and dpkg refuses to overwrite it.
//!
//! `plexus_tests::cluster::LocalCluster` runs the API server against a throwaway etcd; the
//! Kubernetes-backed tests use it, and `--check` here proves it works.
//! `plexus_tests::node::KubeNode` adds containerd and the kubelet, and for the DaemonSet
//! install the controller-manager and the scheduler.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use plexus_tests::cluster::{self, LocalCluster};
use plexus_tests::node;

use crate::cmd::{self, Result};
use crate::packages::{self, ensure_debian_packages};

/// The Kubernetes version Debian's source package builds.
pub const VERSION: &str = cluster::APISERVER_VERSION;
/// Where Debian's `golang-1.15-go` puts `go`.
const GO_BIN: &str = "/usr/lib/go-1.15/bin";

/// `~/.cache/plexus` (or `$XDG_CACHE_HOME/plexus`).
pub fn cache_dir() -> PathBuf {
    cluster::cache_dir()
}

/// Where the cached kube-apiserver lives (where the tests look for it).
pub fn cached_path() -> PathBuf {
    cluster::cached_apiserver_path()
}

/// The binaries the build makes: `make WHAT` target, and where the tests look for it.
fn built_binaries() -> [(&'static str, PathBuf); 4] {
    [
        ("cmd/kube-apiserver", cached_path()),
        ("cmd/kubelet", node::cached_path("kubelet")),
        (
            "cmd/kube-controller-manager",
            node::cached_path("kube-controller-manager"),
        ),
        ("cmd/kube-scheduler", node::cached_path("kube-scheduler")),
    ]
}

/// What a [`LocalCluster`] runs besides the kube-apiserver.
const CLUSTER_PACKAGES: &[(&str, &str)] = &[
    ("etcd-server", "/usr/bin/etcd"),
    ("openssl", "/usr/bin/openssl"),
];

/// Returns the cached kube-apiserver, building it, the kubelet, the controller-manager and the
/// scheduler first if any is missing, and installs what else a local cluster and node need
/// (etcd, openssl, kubectl).
pub fn ensure() -> Result<PathBuf> {
    ensure_debian_packages(CLUSTER_PACKAGES)?;
    ensure_kubectl()?;
    let binaries = built_binaries();
    if binaries.iter().all(|(_, path)| is_executable(path)) {
        for (what, path) in &binaries {
            eprintln!("{what} {VERSION}: cached at {}", path.display());
        }
        return Ok(cached_path());
    }
    let started = Instant::now();
    eprintln!(
        "Kubernetes {VERSION} binaries: not all cached, building the four of them (20 to 30 minutes)"
    );
    build(&binaries)?;
    eprintln!(
        "Kubernetes {VERSION} binaries: built in {:.0}s, cached in {}",
        started.elapsed().as_secs_f64(),
        cache_dir().display()
    );
    Ok(cached_path())
}

/// Unpacks Debian's `kubernetes-client` into the cache as [`node::cached_path`]`("kubectl")`, unless
/// it is there: `apt-get download` and `dpkg-deb -x`, so that no other package's
/// `/usr/bin/kubectl` is in the way.
pub fn ensure_kubectl() -> Result<PathBuf> {
    let dest = node::cached_path("kubectl");
    if is_executable(&dest) {
        return Ok(dest);
    }
    cmd::step("kubectl: Debian's kubernetes-client, unpacked into the cache");
    packages::apt_update()?;
    let dir = tempfile::Builder::new()
        .prefix("plexus-kubectl-")
        .tempdir()?;
    // `_apt` downloads into a directory it can write.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    cmd::run(
        Command::new("apt-get")
            .current_dir(dir.path())
            .args(["download", "kubernetes-client"]),
    )?;
    let deb = std::fs::read_dir(dir.path())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or("apt-get download kubernetes-client left no .deb")?;
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    if !name.contains(VERSION) {
        return Err(format!("expected kubectl {VERSION}, got {name}").into());
    }
    let unpacked = dir.path().join("root");
    cmd::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    install(&unpacked.join("usr/bin/kubectl"), &dest)?;
    eprintln!("kubectl {VERSION}: cached at {}", dest.display());
    Ok(dest)
}

/// Arguments of `cargo xtask apiserver`.
#[derive(clap::Args, Debug)]
pub struct ApiserverArgs {
    /// Also start it (with etcd) on loopback, check `/readyz` and `/version`, and stop it.
    #[arg(long)]
    pub check: bool,
    /// Start a local cluster (as the tests get it) and keep it running until stdin closes
    /// (Enter or Ctrl-D), for trying Plexus or `kubectl` against it.
    #[arg(long)]
    pub serve: bool,
}

/// `cargo xtask apiserver`: ensures the binary, prints its path, and with
/// `--check` proves it serves; `--serve` keeps a cluster running.
pub fn run(args: &ApiserverArgs) -> Result {
    let path = ensure()?;
    if args.check {
        check(&path)?;
    }
    if args.serve {
        return serve(&path);
    }
    println!("{}", path.display());
    Ok(())
}

/// Runs a [`LocalCluster`] until stdin closes.
fn serve(apiserver: &Path) -> Result {
    use std::io::Read;
    let cluster = LocalCluster::start_with(apiserver).map_err(|e| e as cmd::Error)?;
    println!("server:            {}", cluster.url);
    println!("admin kubeconfig:  {}", cluster.kubeconfig.display());
    println!("plexus kubeconfig: {}", cluster.sa_kubeconfig().display());
    println!(
        "audit log:         {}",
        cluster.dir().join("audit.log").display()
    );
    eprintln!("serving until stdin closes (Enter or Ctrl-D)");
    let mut byte = [0u8; 1];
    let _ = std::io::stdin().read(&mut byte);
    cluster.stop();
    Ok(())
}

/// Starts a [`LocalCluster`] on `apiserver`, asks it a few authenticated
/// questions, and stops it.
pub fn check(apiserver: &Path) -> Result {
    cmd::step("local cluster: etcd, kube-apiserver, Plexus's CRDs, RBAC and service account");
    let cluster = LocalCluster::start_with(apiserver).map_err(|e| e as cmd::Error)?;
    eprintln!(
        "started in {:.1}s: etcd {}, admin kubeconfig {}, Plexus kubeconfig {}, logs in {}",
        cluster.startup_time().as_secs_f64(),
        cluster.etcd_url,
        cluster.kubeconfig.display(),
        cluster.sa_kubeconfig().display(),
        cluster.dir().display()
    );
    for path in [
        "/readyz",
        "/version",
        "/api/v1/namespaces/default",
        "/apis/k8s.cni.cncf.io/v1",
    ] {
        let body = cluster
            .get(path)
            .map_err(|e| e as cmd::Error)?
            .ok_or_else(|| format!("GET {path} was refused"))?;
        eprintln!("GET {path}: {}", body.trim());
    }
    let requests = cluster.audit_events().len();
    cluster.stop();
    eprintln!("kube-apiserver {VERSION}: check passed ({requests} requests in the audit log)");
    Ok(())
}

/// Whether `path` is a regular file with an execute bit.
fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Builds the binaries from Debian's sources, in one `make`, and installs each at its path.
fn build(binaries: &[(&str, PathBuf)]) -> Result {
    cmd::step("apt sources: bookworm deb-src, bullseye (pinned) for Go 1.15");
    ensure_apt_sources()?;
    cmd::step("build tools: dpkg-dev, make, rsync, golang-1.15-go");
    ensure_debian_packages(&[
        ("dpkg-dev", "/usr/bin/dpkg-source"),
        ("make", "/usr/bin/make"),
        ("rsync", "/usr/bin/rsync"),
        ("golang-1.15-go", "/usr/lib/go-1.15/bin/go"),
    ])?;
    let tree = fetch_source()?;
    let targets: Vec<&str> = binaries.iter().map(|(target, _)| *target).collect();
    compile(&tree, &targets)?;
    for (target, dest) in binaries {
        let name = target.trim_start_matches("cmd/");
        let built = [
            "_output/bin",
            "_output/local/go/bin",
            "_output/local/bin/linux/amd64",
        ]
        .iter()
        .map(|dir| tree.join(dir).join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("the build finished, but no {name} binary is under _output/"))?;
        install(&built, dest)?;
    }
    remove_build_tree()
}

/// Removes the source tree, its GOPATH and Go's build cache (about 2 GiB) once
/// the binary is cached: on a machine with little free disk, they would crowd
/// out the Rust build that runs next.
fn remove_build_tree() -> Result {
    let src = cache_dir().join("src");
    cmd::step(&format!("removing the build tree {}", src.display()));
    std::fs::remove_dir_all(&src)?;
    Ok(())
}

/// Adds, when missing, a `deb-src` source for bookworm (for `apt-get source`)
/// and a `deb` source for bullseye pinned low, so that only what is asked for
/// by name (Go 1.15) comes from bullseye and nothing else is upgraded from it.
fn ensure_apt_sources() -> Result {
    let uri = packages::debian_archive_uri()?;
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let has_src = packages::apt_sources().iter().any(|s| {
        s.types.iter().any(|t| t == "deb-src") && s.suites.iter().any(|s| s == "bookworm")
    });
    if !has_src {
        packages::ensure_apt_file(
            "sources.list.d",
            "plexus-bookworm-src.sources",
            &format!(
                "Types: deb-src\nURIs: {uri}\nSuites: bookworm\nComponents: main\nSigned-By: {keyring}\n"
            ),
        )?;
    }
    let has_bullseye = packages::apt_sources()
        .iter()
        .any(|s| s.types.iter().any(|t| t == "deb") && s.suites.iter().any(|s| s == "bullseye"));
    if !has_bullseye {
        packages::ensure_apt_file(
            "sources.list.d",
            "plexus-bullseye.sources",
            &format!(
                "Types: deb\nURIs: {uri}\nSuites: bullseye\nComponents: main\nSigned-By: {keyring}\n"
            ),
        )?;
    }
    packages::ensure_apt_file(
        "preferences.d",
        "plexus-bullseye",
        "# Plexus takes only golang-1.15-go from bullseye: nothing is upgraded from it.\n\
         Package: *\nPin: release n=bullseye\nPin-Priority: 100\n",
    )
}

/// Unpacks Debian's `kubernetes` source package under `~/.cache/plexus/src`
/// (once) and returns the tree.
fn fetch_source() -> Result<PathBuf> {
    let src = cache_dir().join("src");
    let done = src.join(".unpacked");
    if let Ok(name) = std::fs::read_to_string(&done) {
        let tree = src.join(name.trim());
        if tree.join("Makefile").is_file() {
            eprintln!("source tree: {}", tree.display());
            return Ok(tree);
        }
    }
    cmd::step("apt-get source kubernetes");
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    std::fs::create_dir_all(&src)?;
    packages::apt_update()?;
    cmd::run(
        Command::new("apt-get")
            .current_dir(&src)
            .args(["source", "--yes", "kubernetes"]),
    )?;
    let tree = std::fs::read_dir(&src)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("kubernetes-"))
        })
        .ok_or("apt-get source unpacked no kubernetes-* directory")?;
    let name = tree.file_name().unwrap().to_string_lossy().into_owned();
    if !name.contains(VERSION) {
        return Err(format!("expected Kubernetes {VERSION} sources, got {name}").into());
    }
    std::fs::write(&done, &name)?;
    eprintln!("source tree: {}", tree.display());
    Ok(tree)
}

/// Runs `make WHAT="<targets>"` in `tree` with Go 1.15, offline, at low CPU priority.
fn compile(tree: &Path, targets: &[&str]) -> Result {
    let what = format!("WHAT={}", targets.join(" "));
    cmd::step(&format!("make {what} (Go 1.15, vendored, offline)"));
    // A GOPATH whose k8s.io/kubernetes is the tree, as the old build expects.
    let gopath = tree.with_file_name("gopath");
    let link = gopath.join("src/k8s.io/kubernetes");
    if std::fs::read_link(&link).ok().as_deref() != Some(tree) {
        std::fs::create_dir_all(link.parent().unwrap())?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(tree, &link)?;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(PathBuf::from(GO_BIN)).chain(std::env::split_paths(&path)),
    )?;
    cmd::run(
        Command::new("nice")
            .args(["-n", "10", "make", &what])
            .current_dir(&link)
            .env("PATH", path)
            .env("GOPATH", &gopath)
            .env("GOCACHE", gopath.join("go-build"))
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=vendor")
            .env("KUBE_GIT_VERSION", format!("v{VERSION}"))
            .env("KUBE_GIT_TREE_STATE", "clean"),
    )
}

/// Copies `built` to `dest` atomically: a temp file beside it, then a rename.
fn install(built: &Path, dest: &Path) -> Result {
    let dir = dest.parent().expect("the cache path has a parent");
    std::fs::create_dir_all(dir)?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::copy(built, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, dest)?;
    Ok(())
}
