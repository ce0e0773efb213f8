//! Running an installed server's programs as the user it belongs to
//! (`rabbitmq`, `postgres`), for the servers a test makes of its own: as
//! root through `runuser`, as any other user directly.

use std::path::Path;
use std::process::Command;

use anyhow::bail;

/// `program` as `user` when we are root; otherwise as ourselves.
pub fn command_as(user: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", user, "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Give `dir` (and what is in it) to `user`, when we are root.
pub fn chown_to(user: &str, dir: &Path) -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let status = Command::new("chown")
        .args(["-R", &format!("{user}:{user}")])
        .arg(dir)
        .status()?;
    if !status.success() {
        bail!("chown of {} failed", dir.display());
    }
    Ok(())
}

pub fn is_root() -> bool {
    current_user().as_deref() == Some("root")
}

pub fn current_user() -> Option<String> {
    let output = Command::new("id").arg("-un").output().ok()?;
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
