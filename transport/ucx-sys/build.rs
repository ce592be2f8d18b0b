//! Generates bindings to the UCX the system has (Debian `libucx-dev`), found
//! through pkg-config, so what we link is exactly what we bound against.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let ucx = match pkg_config::Config::new()
        .atleast_version("1.12")
        .probe("ucx")
    {
        Ok(lib) => lib,
        Err(e) => panic!(
            "tandem-ucx-sys needs the UCX development files (pkg-config `ucx` >= 1.12): \
             run `apt-get install -y libucx-dev libclang-dev pkg-config` \
             (scripts/bootstrap.sh does this). pkg-config said: {e}"
        ),
    };
    // pkg-config's `ucx` names ucp, uct, ucs, ucm; make sure ucp is linked
    // even if a distribution trims the list.
    if !ucx.libs.iter().any(|l| l == "ucp") {
        println!("cargo:rustc-link-lib=ucp");
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("ucp_.*")
        .allowlist_function("ucs_status_string")
        .allowlist_type("ucp_.*")
        .allowlist_type("ucs_status_t")
        .allowlist_type("ucs_memory_type.*")
        .allowlist_var("UCP_.*")
        .allowlist_var("UCS_.*")
        // C enums become plain integer constants: flags are OR-ed together
        // and statuses compared, which Rust enums would make unsound.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false);
    for dir in &ucx.include_paths {
        builder = builder.clang_arg(format!("-I{}", dir.display()));
    }
    let bindings = builder
        .generate()
        .expect("bindgen could not parse <ucp/api/ucp.h>; is libclang-dev installed?");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");
}
