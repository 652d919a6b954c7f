//! The Debian image with systemd and Docker, for the nested tests, built without a
//! registry: `tests/images/bookworm-systemd-docker.sh` debootstraps it once and caches the
//! tarball under /var/cache/sysvisor-e2e (keyed by a hash of the script); each test process
//! `docker import`s it into the private engine once.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cmd;
use crate::engine::{Engine, DOCKER_TIMEOUT};

/// The image's name in the private engine.
pub const SYSTEMD_DOCKER_IMAGE: &str = "sysvisor-e2e/bookworm-systemd-docker";

/// The script that builds (or finds in its cache) the image's rootfs tarball.
pub const SYSTEMD_DOCKER_SCRIPT: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/images/bookworm-systemd-docker.sh");

/// A cold build (debootstrap of about 420 MB of packages) takes about a minute here; a slow
/// mirror may take several.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1200);

impl Engine {
    /// The bookworm image with systemd as `/sbin/init` (its command) and Docker, imported
    /// once per process. Panics (with the build's output) if it cannot be built.
    pub fn systemd_docker_image(&self) -> &str {
        match self.systemd_docker_image.get_or_init(|| import_systemd_docker(self)) {
            Ok(image) => image,
            Err(e) => panic!("cannot build the bookworm-systemd-docker image: {e}"),
        }
    }
}

/// The root tarball of the systemd + Docker image (built once, then cached).
pub(crate) fn systemd_docker_tarball() -> Result<String, String> {
    let build = cmd::run(Command::new("bash").arg(SYSTEMD_DOCKER_SCRIPT), None, BUILD_TIMEOUT);
    if !build.success() {
        return Err(format!("{build}"));
    }
    let tarball = build.stdout.lines().last().unwrap_or_default().trim().to_string();
    if !Path::new(&tarball).is_file() {
        return Err(format!("the script named no tarball: {build}"));
    }
    Ok(tarball)
}

fn import_systemd_docker(engine: &Engine) -> Result<String, String> {
    let t0 = Instant::now();
    let tarball = systemd_docker_tarball()?;
    let built = t0.elapsed();
    let out = cmd::run(
        &mut engine.docker_cmd(&[
            "import",
            "--change",
            "CMD [\"/sbin/init\"]",
            &tarball,
            SYSTEMD_DOCKER_IMAGE,
        ]),
        None,
        DOCKER_TIMEOUT,
    );
    if !out.success() {
        return Err(format!("docker import: {out}"));
    }
    eprintln!(
        "sysvisor-e2e: {SYSTEMD_DOCKER_IMAGE}: tarball ready in {:.1}s, imported in {:.1}s",
        built.as_secs_f64(),
        (t0.elapsed() - built).as_secs_f64()
    );
    Ok(SYSTEMD_DOCKER_IMAGE.to_string())
}
