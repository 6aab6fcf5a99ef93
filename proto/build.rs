//! Compiles `kubepulse/v1/ingest.proto` with protox, a pure-Rust protobuf compiler, so the
//! build needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["kubepulse/v1/ingest.proto"], ["."])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    println!("cargo::rerun-if-changed=kubepulse");
    Ok(())
}
