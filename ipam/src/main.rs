//! The `plexus-ipam` CNI IPAM plugin binary.

fn main() {
    std::process::exit(plexus_cni::skel::run(&plexus_ipam::plugin::PlexusIpam));
}
