//! podman 4 with its CNI network backend: the runtime that calls `plexus` outside Kubernetes.
//!
//! [`Podman::new`] keeps everything of its own in a temporary directory: `containers.conf`
//! (CNI backend, the caller's plugin directories, cgroupfs, runc, file events, the ulimits this
//! machine allows), the network configuration directory, and the image store (`vfs` driver).
//! It imports a busybox root filesystem as the image. Spawned from a thread inside a
//! [`crate::TestHost`], podman and the plugins it runs work in that node namespace.
//!
//! `podman run --network NAME` calls the plugins of `NAME.conflist` with
//! `CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=<container>`; `--network NAME:ip=…,mac=…,
//! interface_name=…` adds `IP=`/`MAC=` to `CNI_ARGS` and sets `CNI_IFNAME`. With `--rm` the
//! DEL has run by the time `podman run` returns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The tag of the imported image.
const IMAGE: &str = "localhost/plexus-busybox:1";

/// A private podman configuration and image store.
pub struct Podman {
    dir: tempfile::TempDir,
}

impl Podman {
    /// Sets up the configuration (plugins looked up in `plugin_dirs`, in order) and imports the
    /// image.
    pub fn new(plugin_dirs: &[&Path]) -> Podman {
        let dir = tempfile::tempdir().expect("temp dir");
        let podman = Podman { dir };
        std::fs::create_dir_all(podman.network_dir()).expect("network dir");
        let dirs: Vec<String> = plugin_dirs
            .iter()
            .map(|d| format!("{:?}", d.display().to_string()))
            .collect();
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             runtime = \"runc\"\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [{}]\n\
             network_config_dir = {:?}\n",
            dirs.join(", "),
            podman.network_dir().display().to_string()
        );
        std::fs::write(podman.conf_path(), conf).expect("containers.conf");
        let rootfs = podman.dir.path().join("rootfs.tar");
        std::fs::write(
            &rootfs,
            crate::cri::pause_image::rootfs_archive().expect("rootfs"),
        )
        .expect("write rootfs");
        let out = podman
            .command()
            .arg("import")
            .arg(&rootfs)
            .arg(IMAGE)
            .output()
            .expect("run podman import");
        assert!(out.status.success(), "podman import: {}", text(&out));
        podman
    }

    /// Writes `conflist` as `<its name>.conflist` in the network configuration directory.
    pub fn add_network(&self, conflist: &Value) {
        let name = conflist["name"].as_str().expect("a conflist has a name");
        let path = self.network_dir().join(format!("{name}.conflist"));
        std::fs::write(path, serde_json::to_vec_pretty(conflist).unwrap()).expect("conflist");
    }

    /// `podman run --rm --network <network> <image> /bin/busybox <command…>`.
    pub fn run(&self, network: &str, command: &[&str]) -> Output {
        self.command()
            .args(["run", "--rm", "--network", network, IMAGE, "/bin/busybox"])
            .args(command)
            .output()
            .expect("run podman")
    }

    /// A `podman` command with this configuration and store.
    pub fn command(&self) -> Command {
        let mut command = Command::new("podman");
        let dir = self.dir.path();
        command
            .env("CONTAINERS_CONF", self.conf_path())
            .arg("--root")
            .arg(dir.join("storage"))
            .arg("--runroot")
            .arg(dir.join("run"))
            .arg("--tmpdir")
            .arg(dir.join("tmp"))
            .args(["--storage-driver", "vfs"]);
        command
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("containers.conf")
    }

    fn network_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }
}

/// stdout and stderr of `out`, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
