//! The `plexus` CNI plugin binary.

fn main() {
    std::process::exit(plexus_cni::skel::run(&plexus::commands::Plexus));
}
