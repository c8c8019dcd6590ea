//! Bad input of every kind gets a CNI error object on stdout and a non-zero exit, never a panic.

mod common;

use common::{run_plexus, run_plexus_raw, Lab};
use plexus_tests::{root_or_skip, TestPod};
use serde_json::json;

const ADD_ENV: [(&str, &str); 5] = [
    ("CNI_COMMAND", "ADD"),
    ("CNI_CONTAINERID", "c-bad"),
    ("CNI_NETNS", "/run/netns/none"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/usr/lib/cni"),
];

fn valid_config() -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "cniDir": "/nonexistent/plexus-cache",
           "delegates": [{"cniVersion": "1.0.0", "name": "pods", "type": "bridge"}]})
}

#[test]
fn malformed_stdin_is_a_decode_or_config_error() {
    let cases: Vec<(Vec<u8>, u64)> = vec![
        (b"".to_vec(), 6),
        (b"not json".to_vec(), 6),
        (b"{\"cniVersion\":".to_vec(), 6),
        (vec![0xff, 0xfe, 0x00], 6),
        (b"[]".to_vec(), 6),
        (b"{\"cniVersion\":\"1.0.0\"}".to_vec(), 7),
        (b"{\"cniVersion\":\"9.9.9\",\"name\":\"p\"}".to_vec(), 1),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\"}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":{}}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":[17]}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":[{\"name\":\"x\"}]}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":[{\"type\":\"bridge\"}]}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":[{\"name\":\"x\",\"type\":\"bridge\",\"cniVersion\":\"0.0.1\"}]}".to_vec(), 1),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":[{\"name\":\"x\",\"plugins\":[]}]}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"delegates\":[{\"name\":\"x\",\"type\":\"b\"}],\"delegateTimeoutSeconds\":\"soon\"}".to_vec(), 7),
        (b"{\"cniVersion\":\"1.0.0\",\"name\":\"p\",\"clusterNetwork\":\"/nonexistent/dir/x.conf\"}".to_vec(), 5),
    ];
    for (stdin, want) in cases {
        let out = run_plexus_raw(&ADD_ENV, &stdin);
        assert_eq!(
            out.error_code(),
            want,
            "stdin {:?}",
            String::from_utf8_lossy(&stdin)
        );
    }
}

#[test]
fn bad_environment_is_error_4_and_names_the_variable() {
    let stdin = valid_config().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "CNI_COMMAND"),
        (vec![("CNI_COMMAND", "ADD")], "CNI_CONTAINERID"),
        (vec![("CNI_COMMAND", "FLY")], "FLY"),
        (
            vec![
                ("CNI_COMMAND", "ADD"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
            ],
            "CNI_NETNS",
        ),
        (
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "../etc"),
                ("CNI_IFNAME", "eth0"),
            ],
            "CNI_CONTAINERID",
        ),
        (
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0/1"),
            ],
            "CNI_IFNAME",
        ),
        (
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "0123456789abcdef"),
            ],
            "CNI_IFNAME",
        ),
        (
            vec![
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "K8S_POD_NAME"),
            ],
            "CNI_ARGS",
        ),
    ];
    for (env, named) in cases {
        let out = run_plexus_raw(&env, stdin.as_bytes());
        assert_eq!(out.error_code(), 4, "{env:?}");
        assert!(
            out.json["msg"].as_str().unwrap().contains(named),
            "{env:?}: {}",
            out.stdout
        );
    }
}

#[test]
fn version_is_answered_without_a_config() {
    let out = run_plexus_raw(&[("CNI_COMMAND", "VERSION")], b"{\"cniVersion\":\"0.4.0\"}");
    let v = out.ok();
    assert_eq!(v["cniVersion"], "0.4.0");
    assert!(v["supportedVersions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == "1.1.0"));
    let v = run_plexus_raw(&[("CNI_COMMAND", "VERSION")], b"").ok();
    assert_eq!(v["cniVersion"], "1.1.0");
}

#[test]
fn a_missing_network_namespace_on_add_is_an_error() {
    let out = run_plexus_raw(&ADD_ENV, valid_config().to_string().as_bytes());
    assert_eq!(out.error_code(), 4);
}

#[test]
fn corrupt_cache_files_give_an_error_and_no_panic() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let config = lab.three_networks("1.0.0");
    std::fs::create_dir_all(lab.cache_dir()).unwrap();
    let corrupt: [&[u8]; 6] = [
        b"",
        b"{\"kind\":\"plexusCacheV1\",\"containerID\":\"c-corrupt\",\"attach",
        b"\x00\x01\x02",
        b"{\"kind\":\"somethingElse\",\"containerID\":\"c-corrupt\",\"attachments\":[]}",
        b"{\"kind\":\"plexusCacheV1\",\"containerID\":\"c-corrupt\",\"attachments\":[{\"network\":\"n\",\"ifname\":\"eth0\",\"config\":\"{not json\"}]}",
        b"{\"kind\":\"plexusCacheV1\",\"containerID\":\"c-corrupt\",\"attachments\":[{\"network\":\"n\",\"ifname\":\"eth0\",\"config\":\"{\\\"name\\\":\\\"n\\\",\\\"cniVersion\\\":\\\"1.0.0\\\",\\\"type\\\":\\\"../../bin/sh\\\"}\"}]}",
    ];
    for bytes in corrupt {
        std::fs::write(lab.cache_dir().join("c-corrupt"), bytes).unwrap();
        for command in ["DEL", "CHECK", "ADD"] {
            let out = run_plexus(command, "c-corrupt", common::ns(&pod), &config);
            let code = out.error_code();
            assert!(
                [7, 104, 106].contains(&code),
                "{command} on {:?}: {}",
                String::from_utf8_lossy(bytes),
                out.stdout
            );
        }
    }
    // Nothing was attached behind the errors.
    assert!(pod.link("eth0").unwrap().is_none());
    assert!(lab.reservations().is_empty());
}

#[test]
fn check_without_an_add_is_an_error() {
    if !root_or_skip() {
        return;
    }
    let lab = Lab::new();
    let pod = TestPod::new("pxpod");
    let out = run_plexus(
        "CHECK",
        "c-never",
        common::ns(&pod),
        &lab.three_networks("1.0.0"),
    );
    assert_eq!(out.error_code(), 3);
}
