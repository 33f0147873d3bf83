//! Generates the gRPC code from `proto/` with protox (a protobuf compiler
//! in Rust, so no system `protoc` is needed) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("rookery/session/v1/session.proto"),
        root.join("rookery/cm/v1/cm.proto"),
        root.join("rookery/s2s/v1/s2s.proto"),
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
