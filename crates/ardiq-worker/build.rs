//! Links the binary to the Python it embeds so it runs without `LD_LIBRARY_PATH`.
//!
//! pyo3's build configuration names the interpreter it compiles against (`PYO3_PYTHON`,
//! else the active virtualenv's or `python3` on `PATH`). When that Python has a shared
//! libpython, its `LIBDIR` (`sysconfig.get_config_var('LIBDIR')`) goes into the binary's
//! rpath, so `.venv/bin/ardiq` starts from `env -i` as systemd runs it. When it has none,
//! the binary is built all the same but `ardiq run` explains that the native worker needs
//! a shared libpython (extension modules cannot load into a static one).

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
    if config.shared {
        if let Some(dir) = &config.lib_dir {
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{dir}");
        }
    } else {
        println!("cargo:rustc-cfg=ardiq_static_python");
        println!(
            "cargo:warning=the Python at {} has no shared libpython: `ardiq run` will refuse to \
             start (build against a Python configured with --enable-shared)",
            config.executable.as_deref().unwrap_or("?")
        );
    }
}
