//! Compiles the node agent's protocol (client and server).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/plexus/agent/v1/agent.proto"], &["proto"])?;
    Ok(())
}
