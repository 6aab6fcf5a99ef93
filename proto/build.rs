//! Compiles `kubepulse/v1/ingest.proto` with protox, a pure-Rust protobuf compiler, so the
//! build needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["kubepulse/v1/ingest.proto"], ["."])?;
    // small per-stream buffers: see src/codec.rs
    tonic_prost_build::configure()
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(fds)?;
    println!("cargo::rerun-if-changed=kubepulse");
    Ok(())
}
