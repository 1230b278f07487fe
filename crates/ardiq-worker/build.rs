//! Records which Python the worker embeds.
//!
//! pyo3's build configuration names the interpreter it compiles against (`PYO3_PYTHON`,
//! else the active virtualenv's or `python3` on `PATH`); its `major.minor` is the only
//! version the worker runs under. The worker links `libpythonX.Y.so.1.0` by name, with
//! no rpath into the build's Python: the `ardiq` launcher finds the library of the
//! interpreter it runs in (src/launcher.rs), so the wheel works with any build of that
//! version at any prefix. When the build's Python has no shared libpython, the binary is
//! built all the same but `ardiq run` explains that the native worker needs one
//! (extension modules cannot load into a static one).

fn main() {
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo::rustc-check-cfg=cfg(ardiq_static_python)");
    let config = pyo3_build_config::get();
    let version = format!("{}.{}", config.version.major, config.version.minor);
    println!("cargo:rustc-env=ARDIQ_BUILD_PYTHON_VERSION={version}");
    println!(
        "cargo:rustc-env=ARDIQ_BUILD_PYTHON={}",
        config.executable.as_deref().unwrap_or("")
    );
    if !config.shared {
        println!("cargo:rustc-cfg=ardiq_static_python");
        println!(
            "cargo:warning=the Python at {} has no shared libpython: `ardiq run` will refuse to \
             start (build against a Python configured with --enable-shared)",
            config.executable.as_deref().unwrap_or("?")
        );
    }
}
