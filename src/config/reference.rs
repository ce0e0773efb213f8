//! docs/configuration.md's settings table, checked against the settings the
//! program reads: every variable of `disconnect-worker run` has a row with
//! its default, and every row is a setting. The table's prose is written by
//! hand (it says more than `--help` can); its names and defaults cannot
//! drift from the code.

#[cfg(test)]
mod config_reference {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use clap::CommandFactory;

    use crate::cli::Cli;

    /// Variables read outside the command-line definitions: tracing's log
    /// filter, with the default `telemetry` gives it.
    const OTHER_VARIABLES: [(&str, &str); 1] = [("RUST_LOG", "info")];

    /// Each setting of `run`: its variable and default (`None`: no default).
    fn settings() -> BTreeMap<String, Option<String>> {
        settings_of("run")
    }

    /// Each setting of `subcommand` (and the global ones).
    fn settings_of(subcommand: &str) -> BTreeMap<String, Option<String>> {
        let command = Cli::command();
        let run = command
            .get_subcommands()
            .find(|each| each.get_name() == subcommand)
            .expect("the subcommand");
        let mut settings = BTreeMap::new();
        for arg in command.get_arguments().chain(run.get_arguments()) {
            let Some(variable) = arg.get_env() else {
                continue;
            };
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            // An empty default is none: the setting is unset.
            let default = defaults.join(",");
            settings.insert(
                variable.to_string_lossy().into_owned(),
                (!default.is_empty()).then_some(default),
            );
        }
        for (variable, default) in OTHER_VARIABLES {
            settings.insert(variable.to_string(), Some(default.to_string()));
        }
        settings
    }

    /// The table's rows between the markers: variable and default cell.
    fn documented() -> BTreeMap<String, String> {
        documented_in("docs/configuration.md")
    }

    fn documented_in(file: &str) -> BTreeMap<String, String> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path).expect("the documentation file");
        let start = text
            .find("<!-- settings-table:start")
            .expect("the start marker");
        let end = text
            .find("<!-- settings-table:end")
            .expect("the end marker");
        text[start..end]
            .lines()
            .filter(|line| line.starts_with("| `"))
            .map(|line| {
                let cells: Vec<&str> = line.split(" | ").collect();
                let variable = cells[0]
                    .trim_start_matches("| `")
                    .split('`')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                (
                    variable,
                    cells.get(1).copied().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn every_setting_has_a_row_with_its_default_and_every_row_is_a_setting() {
        check(&settings(), &documented(), "docs/configuration.md");
    }

    /// The dispatcher's own settings (those it shares with `run` are in
    /// docs/configuration.md) in docs/webhooks.md's table.
    #[test]
    fn every_webhook_setting_has_a_row_in_the_webhooks_guide() {
        let own: BTreeMap<String, Option<String>> = settings_of("deliver")
            .into_iter()
            .filter(|(variable, _)| variable.starts_with("WEBHOOK_") || variable == "HTTP_PORT")
            .collect();
        check(&own, &documented_in("docs/webhooks.md"), "docs/webhooks.md");
    }

    fn check(
        settings: &BTreeMap<String, Option<String>>,
        documented: &BTreeMap<String, String>,
        file: &str,
    ) {
        let missing: Vec<&String> = settings
            .keys()
            .filter(|variable| !documented.contains_key(*variable))
            .collect();
        let unknown: Vec<&String> = documented
            .keys()
            .filter(|variable| !settings.contains_key(*variable))
            .collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{file}: settings without a row {missing:?}, rows of no setting {unknown:?}"
        );
        for (variable, default) in settings {
            let cell = &documented[variable];
            match default {
                Some(default) => assert_eq!(
                    cell,
                    &format!("`{default}`"),
                    "the documented default of {variable}"
                ),
                None => assert_eq!(cell, "(none)", "{variable} has no default"),
            }
        }
    }
}
