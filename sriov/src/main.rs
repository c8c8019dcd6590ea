//! The `plexus-sriov` CNI plugin binary.

fn main() {
    std::process::exit(plexus_sriov::plugin::run());
}
