//! The version: the binary's (`--version`, `disconnect_worker_build_info`),
//! the changelog's latest release and the Helm chart's `appVersion` are one
//! number (a test holds them together).

/// This build's version, from Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::VERSION;

    fn read(path: &str) -> String {
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap_or_else(|error| panic!("{path}: {error}"))
    }

    #[test]
    fn the_changelog_s_latest_release_and_the_chart_s_app_version_are_this_version() {
        let changelog = read("CHANGELOG.md");
        let latest = changelog
            .lines()
            .filter_map(|line| line.strip_prefix("## ["))
            .map(|rest| rest.split(']').next().unwrap_or_default())
            .find(|version| *version != "Unreleased")
            .expect("a released version in CHANGELOG.md");
        assert_eq!(latest, VERSION, "CHANGELOG.md's latest release");
        let chart = read("helm/disconnect-worker/Chart.yaml");
        assert!(
            chart.contains(&format!("appVersion: \"{VERSION}\"")),
            "helm/disconnect-worker/Chart.yaml's appVersion is not {VERSION}"
        );
    }
}
