//! What a delegate receives: the user's configuration, every unknown key and number exactly as
//! written, plus what the runtime injects, and the runtime's capability arguments on the primary
//! network only. Also: the shipped example configurations load.

mod common;

use std::path::Path;

use common::{run_plexus_raw, script_plugin, Lab};
use plexus_tests::{root_or_skip, TestPod};
use serde_json::{json, Value};

/// A delegate that records its stdin and environment, then answers with a minimal result.
fn recorder(dir: &Path) {
    let body = format!(
        "name=\"$CNI_COMMAND-$CNI_IFNAME\"\ncat > {d}/$name.stdin\nenv | grep ^CNI_ | sort > {d}/$name.env\n\
         [ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"interfaces\":[{{\"name\":\"'$CNI_IFNAME'\",\"sandbox\":\"'$CNI_NETNS'\"}}],\"ips\":[{{\"address\":\"10.1.2.3/24\",\"interface\":0}}]}}'\nexit 0",
        d = dir.display()
    );
    script_plugin(dir, "recorder", &body);
}

#[test]
fn delegates_receive_exactly_what_the_user_wrote_plus_the_injected_keys() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let bin = lab.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    recorder(&bin);
    let primary = r#"{"cniVersion":"1.0.0","name":"primary","type":"recorder","zeta":1.50,"big":12345678901234567890,"alpha":{"nested":[true,null,"x"]},"capabilities":{"portMappings":true,"ips":true}}"#;
    let secondary = r#"{"cniVersion":"1.0.0","name":"second","plugins":[{"type":"recorder","capabilities":{"portMappings":true},"kubeconfig":"/etc/x"}]}"#;
    let config = format!(
        r#"{{"cniVersion":"1.0.0","name":"plexus","type":"plexus","binDir":"{bin}","cniDir":"{cache}",
            "runtimeConfig":{{"portMappings":[{{"hostPort":8080,"containerPort":80,"protocol":"tcp"}}]}},
            "delegates":[{primary},{secondary}]}}"#,
        bin = bin.display(),
        cache = lab.cache_dir().display()
    );
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c-exact"),
        ("CNI_NETNS", pod.path.to_str().unwrap()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
        ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web"),
    ];
    let result = run_plexus_raw(&env, config.as_bytes()).ok();
    assert_eq!(result["ips"][0]["address"], "10.1.2.3/24");

    let got = std::fs::read_to_string(bin.join("ADD-eth0.stdin")).unwrap();
    assert_eq!(
        got,
        r#"{"cniVersion":"1.0.0","name":"primary","type":"recorder","zeta":1.50,"big":12345678901234567890,"alpha":{"nested":[true,null,"x"]},"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}"#
    );
    let second: Value =
        serde_json::from_str(&std::fs::read_to_string(bin.join("ADD-net1.stdin")).unwrap())
            .unwrap();
    assert_eq!(
        second,
        json!({"type": "recorder", "kubeconfig": "/etc/x", "name": "second", "cniVersion": "1.0.0"})
    );
    let env_seen = std::fs::read_to_string(bin.join("ADD-net1.env")).unwrap();
    assert!(
        env_seen.contains("CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=web"),
        "{env_seen}"
    );
    assert!(
        env_seen.contains(&format!("CNI_PATH={}:/usr/lib/cni", bin.display())),
        "{env_seen}"
    );
    assert!(env_seen.contains("CNI_IFNAME=net1"));

    // DEL gives each delegate its ADD result as prevResult, in reverse order.
    let mut del_env = env;
    del_env[0] = ("CNI_COMMAND", "DEL");
    run_plexus_raw(&del_env, config.as_bytes()).ok();
    let del: Value =
        serde_json::from_str(&std::fs::read_to_string(bin.join("DEL-eth0.stdin")).unwrap())
            .unwrap();
    assert_eq!(del["prevResult"]["ips"][0]["address"], "10.1.2.3/24");
    assert_eq!(del["zeta"].to_string(), "1.50");
    let first_del = std::fs::metadata(bin.join("DEL-net1.stdin"))
        .unwrap()
        .modified()
        .unwrap();
    let last_del = std::fs::metadata(bin.join("DEL-eth0.stdin"))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        first_del <= last_del,
        "secondaries are deleted before the primary"
    );
}

#[test]
fn the_example_configurations_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for file in [
        "standalone/00-plexus.conflist",
        "k3s/00-plexus.conflist",
        "k3s/10-flannel.conflist",
    ] {
        let text = std::fs::read(root.join(file)).unwrap();
        let list = plexus_cni::config::NetworkConfigList::from_bytes(&text)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        if list.plugins[0].plugin_type == "plexus" {
            let request = list.plugin_request(0, &Default::default(), None);
            let config = plexus::config::PlexusConfig::from_map(&request)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            if config.cluster_network.is_none() {
                assert_eq!(plexus::resolve::static_delegates(&config).unwrap().len(), 2);
            }
        }
    }
}
