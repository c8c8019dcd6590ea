//! Compiles the kubelet's PodResources API (client and server: the tests serve it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/podresources/v1/api.proto"], &["proto"])?;
    Ok(())
}
