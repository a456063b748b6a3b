//! Generates the tonic client and server for `proto/echo.proto`. `protoc` comes from the
//! `protoc-bin-vendored` crate, so building needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/echo.proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        // `bytes` fields as `bytes::Bytes`: the cheapest representation tonic offers, so the peer
        // is measured at its best.
        .bytes(".")
        .compile_with_config(config, &["proto/echo.proto"], &["proto"])?;
    Ok(())
}
