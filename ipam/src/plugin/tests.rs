//! The verbs over the local store.

use super::*;
use crate::backends::local::LocalStore;
use crate::store::Store;
use plexus_cni::list::Attachment;
use serde_json::json;

fn config(ipam: Value, dir: &std::path::Path) -> IpamConfig {
    let mut ipam = ipam;
    ipam["backend"] = json!("local");
    ipam["local_path"] = json!(dir);
    let conf = json!({"cniVersion": "1.1.0", "name": "net", "ipam": ipam});
    IpamConfig::load_with(conf.as_object().unwrap(), &[], "node-a").unwrap()
}

fn owner(cid: &str, ifname: &str) -> Owner {
    Owner {
        pod_namespace: String::new(),
        pod_name: String::new(),
        pod_uid: String::new(),
        container_id: cid.into(),
        ifname: ifname.into(),
        node: "node-a".into(),
        claim: String::new(),
    }
}

#[test]
fn add_builds_an_ipam_result_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        json!({"type": "whereabouts", "range": "10.0.0.0/30", "gateway": "10.0.0.1",
               "ipRanges": [{"range": "fd00::/126"}],
               "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.0.0.53"]},
               "addresses": [{"address": "10.7.0.5/24"}]}),
        dir.path(),
    );
    let store = LocalStore::new(dir.path());
    block_on(async {
        let r = add(&store, &c, &owner("c1", "net1")).await.unwrap();
        let v = r.to_value(plexus_cni::SpecVersion::V1_1_0);
        assert_eq!(
            v,
            json!({"cniVersion": "1.1.0",
                   "ips": [{"address": "10.0.0.2/30", "gateway": "10.0.0.1"},
                           {"address": "fd00::1/126"},
                           {"address": "10.7.0.5/24"}],
                   "routes": [{"dst": "0.0.0.0/0"}],
                   "dns": {"nameservers": ["10.0.0.53"]}})
        );
        // The v4 range is full now (the gateway is excluded): the next ADD fails with 120
        // and gives back what it took in... nothing, since the first range failed; a
        // config with the full range last rolls back the first.
        let err = add(&store, &c, &owner("c2", "net1")).await.unwrap_err();
        assert_eq!(err.code, 120, "{err}");
        let swapped = config(
            json!({"type": "whereabouts", "range": "fd00::/126",
                   "ipRanges": [{"range": "10.0.0.0/30", "exclude": ["10.0.0.1"]}]}),
            dir.path(),
        );
        let err = add(&store, &swapped, &owner("c3", "net1"))
            .await
            .unwrap_err();
        assert_eq!(err.code, 120);
        let held: usize = store
            .usage()
            .await
            .unwrap()
            .iter()
            .map(|u| u.allocations.len())
            .sum();
        assert_eq!(held, 2, "the v6 address of the failed ADD was released");
        // CHECK, DEL, CHECK.
        check(&store, &c, "c1", "net1", Some(&r)).await.unwrap();
        assert_eq!(
            check(&store, &c, "c2", "net1", None)
                .await
                .unwrap_err()
                .code,
            3
        );
        del(&store, &c, "c1", "net1").await.unwrap();
        del(&store, &c, "c1", "net1").await.unwrap();
        assert_eq!(
            check(&store, &c, "c1", "net1", None)
                .await
                .unwrap_err()
                .code,
            3
        );
        assert!(store.usage().await.unwrap().is_empty());
        Ok(())
    })
    .unwrap();
}

#[test]
fn gc_releases_only_this_nodes_invalid_attachments() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        json!({"type": "plexus-ipam", "range": "10.0.0.0/24"}),
        dir.path(),
    );
    let other_range = config(
        json!({"type": "plexus-ipam", "range": "10.1.0.0/24"}),
        dir.path(),
    );
    let store = LocalStore::new(dir.path());
    block_on(async {
        add(&store, &c, &owner("keep", "net1")).await.unwrap();
        add(&store, &c, &owner("stale", "net1")).await.unwrap();
        add(&store, &c, &owner("keep", "net2")).await.unwrap();
        let mut remote = owner("remote", "net1");
        remote.node = "node-b".into();
        add(&store, &c, &remote).await.unwrap();
        add(&store, &other_range, &owner("elsewhere", "net1"))
            .await
            .unwrap();
        let valid = vec![Attachment {
            container_id: "keep".into(),
            ifname: "net1".into(),
        }];
        let released = gc(&store, &c, &valid, None).await.unwrap();
        let mut gone: Vec<String> = released
            .iter()
            .map(|a| format!("{}/{}", a.owner.container_id, a.owner.ifname))
            .collect();
        gone.sort();
        assert_eq!(gone, ["keep/net2", "stale/net1"]);
        let left: Vec<String> = store
            .usage()
            .await
            .unwrap()
            .iter()
            .flat_map(|u| u.allocations.iter().map(|a| a.owner.container_id.clone()))
            .collect();
        assert_eq!(left, ["keep", "remote", "elsewhere"]);
        Ok(())
    })
    .unwrap();
    let conf = json!({"cni.dev/attachments": [{"containerID": "a", "ifname": "b"}]});
    assert_eq!(
        valid_attachments(conf.as_object().unwrap()).unwrap().len(),
        1
    );
    let conf = json!({"cni.dev/valid-attachments": 5});
    assert_eq!(
        valid_attachments(conf.as_object().unwrap())
            .unwrap_err()
            .code,
        7
    );
}

#[test]
fn unwired_backends_are_a_clear_error() {
    let conf = json!({"cniVersion": "1.1.0", "name": "net",
                      "ipam": {"type": "whereabouts", "range": "10.0.0.0/24",
                               "kubernetes": {"kubeconfig": "/nonexistent"}}});
    let c = IpamConfig::load_with(conf.as_object().unwrap(), &[], "n").unwrap();
    let err = block_on(open_store(&c)).unwrap_err();
    assert_eq!(err.code, 121);
}
